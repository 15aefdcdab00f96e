"""tapstream journal service."""
