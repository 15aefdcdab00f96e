"""A tapper given TAPSTREAM_TAPPER_VOLUME_ROOTS refuses to start on a volume outside them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tapstream.tapper.settings import TapperSettings


def settings(path: Path | str, roots: list[Path] | None) -> TapperSettings:
    return TapperSettings(
        tapper_volumes=[{"name": "d0", "path": str(path), "group": "g1"}],
        tapper_volume_roots=roots,
    )


def test_volumes_under_the_roots_are_served_by_their_real_path(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (tmp_path / "link").symlink_to(images)
    s = settings(tmp_path / "link" / "d0.img", [images])
    assert s.tapper_volumes[0].path == images / "d0.img"


@pytest.mark.parametrize("where", ["/etc/shadow", "{images}/../secret.img", "{images}/evil.img"])
def test_a_volume_outside_the_roots_fails_the_start(tmp_path: Path, where: str) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "evil.img").symlink_to(tmp_path / "secret.img")
    with pytest.raises(ValidationError, match="TAPSTREAM_TAPPER_VOLUME_ROOTS") as exc:
        settings(where.format(images=images), [images])
    assert str(images) in str(exc.value) and "volume 'd0'" in str(exc.value)


def test_unset_roots_leave_the_operators_paths_alone(tmp_path: Path) -> None:
    assert settings("relative/d0.img", None).tapper_volumes[0].path == Path("relative/d0.img")
