"""tapstream analyzer service."""
