"""Shared code of every tapstream service: settings, logging, metrics, Kafka clients, codec, runner.

Nothing here knows a particular service; services import from here, never from each other.
"""
