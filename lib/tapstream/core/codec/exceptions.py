"""Errors of the codec.

`DecodeError` means the bytes themselves are bad: a consumer may log and skip the record.
`RegistryError` / `RegistryUnavailable` mean the registry could not be asked: the bytes may be
fine, so a consumer MUST NOT skip the record (retry or stop instead).
"""


class DecodeError(ValueError):
    """The bytes are not a tapstream record: truncated, wrong magic, unknown schema, bad body."""


class EncodeError(ValueError):
    """A record does not fit its schema (a bug in the caller: nothing was written)."""


class RegistryError(RuntimeError):
    """The schema registry refused a request (e.g. 409: incompatible schema); the message says why."""


class RegistryUnavailable(RegistryError):
    """The schema registry did not answer in time, or answered 5xx; the message names the URL."""
