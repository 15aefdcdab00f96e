"""`tapstream`: one command for operators; each area adds its sub-app here."""

from __future__ import annotations

import typer

from tapstream.cli import analyze, files, groups, recovery, replicator, tail, tapper, token, volume

app = typer.Typer(no_args_is_help=True, help="tapstream: continuous data protection on Kafka.")
app.add_typer(tapper.app, name="tapper")
app.command("tail")(tail.tail)
app.add_typer(recovery.checkpoint_app, name="checkpoint")
app.command("restore")(recovery.restore)
app.add_typer(files.app, name="files")
app.command("status")(recovery.status)
app.add_typer(replicator.app, name="replicator")
app.add_typer(analyze.app, name="analyze")
app.add_typer(groups.group_app, name="group")
app.add_typer(groups.test_app, name="failover-test")
app.command("failover")(groups.failover)
app.command("move")(groups.move)
app.command("reverse")(groups.reverse)
app.command("failback")(groups.failback)
app.add_typer(groups.operation_app, name="operation")
app.add_typer(volume.app, name="volume")
app.add_typer(token.app, name="token")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
