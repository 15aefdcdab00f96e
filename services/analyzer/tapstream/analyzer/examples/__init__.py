"""Example analyzers written with the SDK."""
