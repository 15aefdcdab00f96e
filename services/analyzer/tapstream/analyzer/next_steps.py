"""The commands an alert names for its operator (no faust here: the CLI imports it)."""

from __future__ import annotations


def next_steps(group: str, volume: str, clean: str) -> dict[str, str]:
    """What an operator runs after an alert with a last clean checkpoint, carried in its details
    (readable with kcat as well as `tapstream analyze alerts`): the files changed since, and the
    volume as it was."""
    return {
        "changed_files_command": (
            f"tapstream files {group} {volume} --checkpoint {clean} diff --to latest"
        ),
        "restore_command": (
            f"tapstream restore {group} {volume} --checkpoint {clean} --out {volume}-clean.img"
        ),
    }
