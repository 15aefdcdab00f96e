"""Reverse protection's applier lives with the VDSA's (tapstream.vdsa.reverse); the site manager,
which runs it at the original site, takes it from there through this name."""

from tapstream.vdsa.reverse import ReverseApplier

__all__ = ["ReverseApplier"]
