"""The local two-site stack: two single-node KRaft Kafka clusters, a dedicated MirrorMaker 2 and one
PostgreSQL per site, all real processes started from Apache Kafka's own jars and the pgserver package.

`python -m tapstream.localstack up|down|status|tool` (the Makefile's `make up` & co. call it).
"""

from tapstream.localstack.settings import LocalStackSettings
from tapstream.localstack.stack import Stack

__all__ = ["LocalStackSettings", "Stack"]
