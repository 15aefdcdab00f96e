"""`python -m tapstream.tapper`: serve the configured volumes over NBD until SIGTERM."""

from tapstream.core.runner import run
from tapstream.tapper.service import Tapper
from tapstream.tapper.settings import TapperSettings


def main() -> None:
    run(Tapper, TapperSettings, "tapper")


if __name__ == "__main__":
    main()
