"""Errors of the codec: one type for bytes that cannot be decoded, one for an unreachable registry."""


class DecodeError(ValueError):
    """The bytes are not a tapstream record: truncated, wrong magic, unknown schema, bad body."""


class RegistryUnavailable(RuntimeError):
    """The schema registry did not answer in time or refused; the message says which URL."""


class EncodeError(ValueError):
    """A record does not fit its schema (a bug in the caller: nothing was written)."""
