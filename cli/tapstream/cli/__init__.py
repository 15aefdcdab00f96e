"""The `tapstream` command line."""
