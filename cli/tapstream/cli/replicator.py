"""`tapstream replicator mm2-config|strimzi`: the MirrorMaker 2 configuration, generated from settings."""

from __future__ import annotations

from typing import Annotated

import typer
import yaml

from tapstream.core.settings import TapstreamSettings, load

app = typer.Typer(
    no_args_is_help=True, help="MirrorMaker 2 configuration and replication monitoring."
)


@app.command("mm2-config")
def mm2_config(
    rf: Annotated[int, typer.Option(help="Replication factor of MM2's internal topics.")] = 1,
) -> None:
    """Print mm2.properties for a dedicated MirrorMaker 2 between the two sites."""
    from tapstream.localstack.properties import render
    from tapstream.replicator.mirrormaker import MirrorTuning, mirrormaker_properties

    typer.echo(
        render(
            mirrormaker_properties(
                load(TapstreamSettings), MirrorTuning(internal_replication_factor=rf)
            )
        ),
        nl=False,
    )


@app.command()
def strimzi(
    rf: Annotated[int, typer.Option(help="Replication factor of MM2's internal topics.")] = 3,
    namespace: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Print the Strimzi KafkaMirrorMaker2 resources (one per direction) as YAML."""
    from tapstream.replicator.mirrormaker import MirrorTuning
    from tapstream.replicator.strimzi import kafka_mirror_maker2

    docs = kafka_mirror_maker2(
        load(TapstreamSettings), MirrorTuning(internal_replication_factor=rf), namespace=namespace
    )
    typer.echo(yaml.safe_dump_all(docs, sort_keys=False), nl=False)
