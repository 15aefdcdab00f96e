"""Volume paths must resolve under the configured roots: symlinks, `..`, relative paths refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapstream.site_manager.domain import Invalid
from tapstream.site_manager.paths import default_roots, under_roots

SETTING = "SITE_MANAGER_VOLUME_ROOTS"


def check(path: str | Path, *roots: Path) -> Path:
    return under_roots(str(path), list(roots), "volume path", SETTING)


def refused(path: str | Path, *roots: Path) -> str:
    with pytest.raises(Invalid) as exc:
        check(path, *roots)
    return str(exc.value)


def test_inside_a_root_is_accepted_even_before_it_exists(tmp_path: Path) -> None:
    root = tmp_path / "images"
    root.mkdir()
    assert check(root / "vm1.img", root) == root / "vm1.img"
    assert check(root / "sub" / "later.img", tmp_path / "other", root) == root / "sub" / "later.img"


def test_outside_is_refused_naming_the_roots_and_the_setting(tmp_path: Path) -> None:
    root = tmp_path / "images"
    root.mkdir()
    msg = refused("/etc/passwd", root)
    assert str(root) in msg and "TAPSTREAM_SITE_MANAGER_VOLUME_ROOTS" in msg and "outside" in msg
    assert "(none)" in refused(root / "x.img")  # no roots: nothing is accepted


def test_the_root_itself_and_a_sibling_with_its_prefix_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "images"
    root.mkdir()
    refused(root, root)
    refused(tmp_path / "images-evil" / "x.img", root)


def test_dot_dot_is_refused_even_when_it_lands_inside(tmp_path: Path) -> None:
    root = tmp_path / "images"
    (root / "a").mkdir(parents=True)
    assert "'..'" in refused(f"{root}/../../etc/passwd", root)
    assert "'..'" in refused(f"{root}/a/../x.img", root)


def test_relative_empty_and_nul_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "images"
    root.mkdir()
    monkeypatch.chdir(root)
    assert "relative" in refused("x.img", root)
    assert "relative" in refused("./x.img", root)
    refused("", root)
    refused(f"{root}/x\0.img", root)
    refused(f"{root}/x\ud800.img", root)  # not encodable: refused, not a crash


def test_a_symlink_inside_pointing_outside_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "images"
    root.mkdir()
    secret = tmp_path / "secret"
    secret.write_bytes(b"x")
    (root / "vm1.img").symlink_to(secret)
    (root / "dir").symlink_to(tmp_path)
    msg = refused(root / "vm1.img", root)
    assert f"resolves to {secret}" in msg
    refused(root / "dir" / "secret", root)


def test_a_dangling_symlink_is_judged_by_where_it_points(tmp_path: Path) -> None:
    root = tmp_path / "images"
    root.mkdir()
    (root / "later.img").symlink_to(tmp_path / "not-yet")  # creating it would write outside
    refused(root / "later.img", root)
    (root / "inside.img").symlink_to(root / "real.img")
    assert check(root / "inside.img", root) == root / "real.img"


def test_a_root_that_is_a_symlink_is_followed(tmp_path: Path) -> None:
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real_dir)
    # Given by the link or by the real path, the volume is inside; the answer is the real path.
    assert check(link / "vm1.img", link) == real_dir / "vm1.img"
    assert check(real_dir / "vm1.img", link) == real_dir / "vm1.img"
    refused(tmp_path / "vm1.img", link)


def test_defaults_are_the_image_dirs_and_the_state_dirs_volumes(tmp_path: Path) -> None:
    roots = default_roots(tmp_path / "sm")
    assert Path("/var/lib/libvirt/images") in roots and tmp_path / "sm" / "volumes" in roots
    assert Path("/") not in roots and tmp_path / "sm" not in roots
