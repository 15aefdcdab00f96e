"""Errors raised by tapstream's Kafka client layer."""


class KafkaUnavailable(RuntimeError):
    """The cluster did not answer in time; the message says which bootstrap and what to check."""


class PublishError(RuntimeError):
    """Kafka refused or timed out a record; nothing may be acknowledged on its behalf."""
