"""What the site manager's own steps raise (apart from the domain's refusals)."""

from __future__ import annotations


class OperationFailed(RuntimeError):
    """A step of an operation failed; the message says which and what to do."""
