"""`python -m tapstream.replicator`: lag and RPO across MirrorMaker 2, and (locally) MM2 supervision."""

from tapstream.core.runner import run
from tapstream.replicator.service import Replicator
from tapstream.replicator.settings import ReplicatorSettings


def main() -> None:
    run(Replicator, ReplicatorSettings, "replicator")


if __name__ == "__main__":
    main()
