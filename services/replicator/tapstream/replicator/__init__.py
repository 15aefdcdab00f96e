"""tapstream replicator service."""
