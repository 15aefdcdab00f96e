"""No path outside the volume roots, through a real site manager: the REST API answers 422 naming
the roots and the setting for a volume path or target path outside them (symlinks followed, '..'
refused) and for names that could become paths; and a site re-checks a path with its own roots
right before it acts, so a volume accepted earlier (or decided elsewhere) whose path now leads
outside is never served."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .services_harness import wait_until
from .site_manager_harness import start_site_manager

pytestmark = pytest.mark.integration
NO_SERVICES = {"TAPSTREAM_SITE_MANAGER_RUN_SERVICES": "false"}


def roots(images: Path, targets: Path) -> dict[str, str]:
    return {
        "TAPSTREAM_SITE_MANAGER_VOLUME_ROOTS": json.dumps([str(images)]),
        "TAPSTREAM_SITE_MANAGER_TARGET_ROOTS": json.dumps([str(targets)]),
    }


def test_paths_outside_the_roots_and_path_like_names_are_refused(
    stack, tmp_path: Path, unique_name: str
) -> None:
    group = unique_name
    images, targets = tmp_path / "images", tmp_path / "targets"
    images.mkdir()
    targets.mkdir()
    secret = tmp_path / "secret.img"
    secret.write_bytes(b"not yours")
    (images / "evil.img").symlink_to(secret)
    (targets / "evil.img").symlink_to(secret)
    pm = start_site_manager(
        stack, tmp_path, "protected", [group], {**NO_SERVICES, **roots(images, targets)}
    )
    try:
        api = pm.client()
        assert api.post("/groups", json={"name": group}).status_code == 201
        assert api.post(f"/groups/{group}/vms", json={"vm": "vm1"}).status_code == 201
        url = f"/groups/{group}/vms/vm1/volumes"

        def refused(body: dict[str, str], *words: str) -> str:
            r = api.post(url, json={"volume": "d0", **body})
            assert r.status_code == 422, (body, r.status_code, r.text)
            detail = r.json()["detail"]
            assert all(w in detail for w in words), (body, detail)
            return detail

        volume_roots = (str(images), "TAPSTREAM_SITE_MANAGER_VOLUME_ROOTS")
        refused({"path": "/etc/passwd"}, *volume_roots, "outside")
        refused({"path": str(images / "evil.img")}, *volume_roots, f"resolves to {secret}")
        refused({"path": f"{images}/../secret.img"}, *volume_roots, "'..'")
        refused({"path": "images/d0.img"}, *volume_roots, "relative")
        target_roots = (str(targets), "TAPSTREAM_SITE_MANAGER_TARGET_ROOTS")
        ok_path = str(images / "d0.img")
        refused({"path": ok_path, "target_path": "/etc/cron.d/x"}, *target_roots)
        refused({"path": ok_path, "target_path": str(targets / "evil.img")}, *target_roots)
        refused({"path": ok_path, "target_path": str(images / "d0-dr.img")}, *target_roots)
        # Names that could become paths (replicas, promoted volumes, tapper state).
        for bad in ("../../etc/x", "a..b", ".hidden"):
            r = api.post(url, json={"volume": bad, "path": ok_path})
            assert r.status_code == 422 and "volume name" in r.json()["detail"], r.text
        for bad in ("..x", "a..b"):
            r = api.post("/groups", json={"name": bad})
            assert r.status_code == 422 and "group name" in r.json()["detail"], r.text
        r = api.post(f"/groups/{group}/vms", json={"vm": "vm2", "target_vm": "x..y"})
        assert r.status_code == 422 and "target VM name" in r.json()["detail"], r.text
        # Nothing refused left a trace; inside the roots is accepted.
        assert api.get(f"/groups/{group}").json()["version"] == 2
        r = api.post(
            url, json={"volume": "d0", "path": ok_path, "target_path": str(targets / "d0.img")}
        )
        assert r.status_code == 201, r.text
    finally:
        pm.stop()


def test_a_site_checks_the_path_again_before_it_serves_it(
    stack, tmp_path: Path, unique_name: str
) -> None:
    group = unique_name
    images = tmp_path / "images"
    images.mkdir()
    disk = images / "d0.img"
    with open(disk, "wb") as f:
        f.truncate(1 << 20)
    env = {**NO_SERVICES, **roots(images, images)}
    pm = start_site_manager(stack, tmp_path, "protected", [group], env)
    try:
        api = pm.client()
        assert api.post("/groups", json={"name": group}).status_code == 201
        assert api.post(f"/groups/{group}/vms", json={"vm": "vm1"}).status_code == 201
        r = api.post(f"/groups/{group}/vms/vm1/volumes", json={"volume": "d0", "path": str(disk)})
        assert r.status_code == 201, r.text
    finally:
        assert pm.stop() == 0
    # Between the decision and the action the image became a link to a file outside the roots.
    secret = tmp_path / "secret.img"
    disk.rename(secret)
    disk.symlink_to(secret)
    pm = start_site_manager(
        stack,
        tmp_path,
        "protected",
        [group],
        {**env, "TAPSTREAM_SITE_MANAGER_RUN_SERVICES": "true"},
    )
    try:
        wait_until(
            "the site manager refusing to serve the volume",
            lambda: "outside the allowed roots" in pm.log.read_text(),
            timeout=60,
        )
        status = pm.get(f"/groups/{group}/status")
        assert status["services"] == {}, status  # no tapper serves it
        log = pm.log.read_text()
        assert f"resolves to {secret}" in log and "TAPSTREAM_SITE_MANAGER_VOLUME_ROOTS" in log
    finally:
        pm.stop()
