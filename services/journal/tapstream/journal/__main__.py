"""`python -m tapstream.journal`: index the mirrored write stream in the recovery site's Postgres."""

from tapstream.core.runner import run
from tapstream.journal.indexer import Journal
from tapstream.journal.settings import JournalSettings


def main() -> None:
    run(Journal, JournalSettings, "journal")


if __name__ == "__main__":
    main()
