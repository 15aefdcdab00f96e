"""`python -m tapstream.vdsa`: checkpoints (TAPSTREAM_SITE=protected) or replica apply (recovery)."""

from tapstream.core.runner import run
from tapstream.vdsa.service import Vdsa
from tapstream.vdsa.settings import VdsaSettings


def main() -> None:
    run(Vdsa, VdsaSettings, "vdsa")


if __name__ == "__main__":
    main()
