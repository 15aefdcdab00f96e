"""tapstream vdsa service."""
