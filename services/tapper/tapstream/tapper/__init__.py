"""tapstream tapper service."""
