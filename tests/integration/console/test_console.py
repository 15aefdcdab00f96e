"""The web console in a real browser (Debian's chromium, Playwright) on the two-site stack: the
overview lists a group the CLI created, its RPO updates while fio writes through the tapper, a
failover test started from the page serves an export nbdinfo reads and is stopped from the page, and
a move started from the page completes. Each page is saved as a PNG on the way (`make screenshots`
keeps them in bench/results/console/)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer
from playwright.sync_api import Page

from tapstream.core.codec import make_codec
from tapstream.core.kafka import TopicSpec, client_config, ensure_topics

from ..services_harness import groups_env, start_service, stop, wait_until
from ..site_manager_harness import cli_env, site_converged, start_site_manager, tapstream
from .browser import chromium

pytestmark = pytest.mark.integration
MIB = 1024 * 1024
SIZE = 16 * MIB


def nbdinfo(uri: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nbdinfo", "--json", uri], capture_output=True, text=True, timeout=30)


def raise_alert(stack, group: str, clean: str) -> None:
    """An encryption alert as the analyzer publishes it (protected cluster), naming `clean`."""
    settings, topic = stack.settings, stack.settings.topic("alerts")
    asyncio.run(ensure_topics(client_config(settings), [TopicSpec(topic, partitions=1)]))
    now = time.time_ns() // 1000
    alert = {"id": str(uuid.uuid4()), "kind": "encryption", "group": group, "volume": "disk0",
             "onset_ts": now - 20_000_000, "detected_ts": now, "severity": "CRITICAL",
             "score": 0.97, "encrypted_share": 0.83, "last_clean_checkpoint": clean,
             "message": "83 % of disk0's writes in the last 20 s look encrypted", "details": {}}  # fmt: skip
    p = Producer({"bootstrap.servers": stack.protected_bootstrap})
    p.produce(topic, make_codec(settings).encode("Alert", alert), key=b"disk0")
    assert p.flush(30) == 0


def op_ends(page: Page, timeout: float) -> str:
    """The operation page's status once it is no longer running (the page refreshes itself)."""
    page.wait_for_url("**/console/operations/*")
    page.wait_for_load_state()
    if not page.locator("#op-status").count():  # an error page: say what it says
        raise AssertionError(f"{page.url}: {page.inner_text('body')[:2000]}")
    return str(
        wait_until(
            "the operation to end on its page",
            lambda: (s := page.locator("#op-status").inner_text()) != "running" and s,
            timeout=timeout,
            interval=0.5,
        )
    )


def test_console_overview_rpo_failover_test_and_move(
    stack, tmp_path: Path, unique_name: str
) -> None:
    shots = Path(os.environ.get("TAPSTREAM_CONSOLE_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    group = unique_name
    disks = {"disk0": tmp_path / "disk0.img", "disk1": tmp_path / "disk1.img"}
    for p in disks.values():
        with open(p, "wb") as f:
            f.truncate(SIZE)
    pm = start_site_manager(stack, tmp_path, "protected", [group])
    rm = start_site_manager(stack, tmp_path, "recovery", [group])
    env = cli_env(stack, pm, rm, tmp_path)
    writer: subprocess.Popen[bytes] | None = None
    # The RPO is the replicator's measure (the age of the oldest write not yet mirrored).
    replicator = start_service(
        stack, "tapstream.replicator", tmp_path,
        {**groups_env("REPLICATOR", group), "TAPSTREAM_REPLICATOR_INTERVAL_S": "1"}, "replicator",
    )  # fmt: skip
    try:
        tapstream(env, "group", "create", group, "--rpo-target", "10",
                  "--journal-history", "120", "--checkpoint-interval", "2")  # fmt: skip
        for i, (vol, path) in enumerate(disks.items()):
            tapstream(env, "group", "add-vm", group, f"vm{i}", "--target", f"vm{i}-dr")
            tapstream(env, "group", "add-volume", group, f"vm{i}", vol, str(path),
                      "--size", str(SIZE))  # fmt: skip
        prot = wait_until(
            "the protected site serving", lambda: site_converged(env, group, "protected")
        )
        wait_until(
            "the recovery site running the group", lambda: site_converged(env, group, "recovery")
        )
        uri = prot["exports"]["disk0"]  # type: ignore[index]

        # An analyzer's alert names a tagged checkpoint as the last clean one (before the browser:
        # Playwright's sync API runs an event loop in this thread).
        clean = tapstream(env, "group", "checkpoint", group, "--tag", "before-attack")
        raise_alert(stack, group, clean.stdout.strip())

        with chromium(tmp_path / "chromium-profile") as browser:
            page = browser.new_page()
            console = rm.url + "/console"
            # --- sign in with the API's token; the overview lists the group ----------------------
            page.goto(console + "/")
            assert "/console/login" in page.url
            page.fill("#token", rm.token)
            page.click("button[type=submit]")
            row = page.locator(f"tr[data-group='{group}']")
            row.wait_for()
            assert "protecting" in row.inner_text().lower()
            # Both sites' Kafka, Postgres and MirrorMaker 2 inflow, each probed by its manager.
            for site in ("protected", "recovery"):
                site_card = page.locator(f"article.site-card[data-site='{site}']")
                for fact in ("kafka", "postgres", "mirror"):
                    site_card.locator(f"[data-infra='{fact}'].ok").wait_for(timeout=60_000)

            # --- its RPO updates, without a reload, while fio writes through the tapper ---------
            writer = subprocess.Popen(
                ["fio", "--name=w", "--ioengine=nbd", f"--uri={uri}", "--rw=randwrite",
                 "--bs=64k", "--size=8M", "--time_based", "--runtime=120", "--rate=1m",
                 "--refill_buffers", "--verify_state_save=0"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            rpo = row.locator(".rpo")
            seen: set[str] = set()

            def rpo_reports() -> bool:
                as_of, value = rpo.get_attribute("data-as-of"), rpo.get_attribute("data-rpo")
                if as_of and as_of != "0" and value:
                    float(value)  # a number of seconds, not a placeholder
                    seen.add(as_of)
                return len(seen) >= 3

            wait_until("three RPO reports on the overview", rpo_reports, timeout=90, interval=0.5)
            assert page.locator("body").get_attribute("data-refreshed"), "the page never refreshed"
            page.fill("input[name=q]", group)
            page.press("input[name=q]", "Enter")
            page.wait_for_url("**/console/?q=*")
            page.screenshot(path=str(shots / "overview.png"), full_page=True)
            page.click(f"tr[data-group='{group}'] a")
            page.click("a[href='?window=10m']")
            page.locator("svg.chart polyline").wait_for()
            page.screenshot(path=str(shots / "group.png"), full_page=True)
            page.goto(f"{console}/groups/{group}/confirm/failover")
            assert "Writes after it are not in the result" in page.inner_text("main")
            page.screenshot(path=str(shots / "failover-confirm.png"), full_page=True)
            writer.terminate()
            writer.wait(30)

            # --- a failover test from the page: its export answers nbdinfo; stopped from the page
            page.goto(f"{console}/operations?q={group}")
            card = page.locator(f"tr.op-group[data-group='{group}']")
            card.locator("[data-action=failover-test]").click()
            page.locator("button[data-action=failover-test]").click()
            assert op_ends(page, 120) == "succeeded", page.locator("#advice").inner_text()
            exports = {
                e.get_attribute("data-volume"): e.inner_text()
                for e in page.locator("code.nbd").all()
            }
            assert set(exports) == set(disks), exports
            page.screenshot(path=str(shots / "failover-test.png"), full_page=True)
            info = nbdinfo(exports["disk0"])
            assert info.returncode == 0, info.stderr
            assert json.loads(info.stdout)["exports"][0]["export-size"] == SIZE
            page.goto(f"{console}/operations?q={group}")
            page.screenshot(path=str(shots / "operations.png"), full_page=True)
            card.locator("button[data-action=failover-test-stop]").click()
            assert op_ends(page, 120) == "succeeded", page.locator("#advice").inner_text()
            assert nbdinfo(exports["disk0"]).returncode != 0, "the test export still answers"

            # --- the alert, with its one-click failover test at the last clean checkpoint --------
            page.goto(f"{console}/alerts?q={group}")
            alert = page.locator(f"article[data-group='{group}']")
            alert.wait_for()
            assert alert.locator("input[name=checkpoint]").input_value() == clean.stdout.strip()
            assert alert.locator("button[data-action=test-last-clean]").is_enabled()
            page.screenshot(path=str(shots / "alerts.png"), full_page=True)

            # --- a move from the page completes --------------------------------------------------
            page.goto(f"{console}/operations?q={group}")
            card.locator("button[data-action=move]").click()
            assert op_ends(page, 300) == "succeeded", page.locator("#advice").inner_text()
            moved = page.locator("code.nbd").first.inner_text()
            assert nbdinfo(moved).returncode == 0
            page.screenshot(path=str(shots / "move.png"), full_page=True)
            page.goto(f"{console}/?q={group}")
            assert "failed over" in page.locator(f"tr[data-group='{group}']").inner_text().lower()

            # --- a phone's width --------------------------------------------------------------
            page.set_viewport_size({"width": 390, "height": 844})
            page.reload()
            page.screenshot(path=str(shots / "overview-phone.png"), full_page=True)
        shown = json.loads(tapstream(env, "group", "show", group, "--json").stdout)
        assert (shown["status"], shown["active_site"]) == ("failed_over", "recovery")
    finally:
        if writer is not None and writer.poll() is None:
            writer.kill()
            writer.wait()
        codes = (pm.stop(), rm.stop())
        stop(replicator)
    assert codes == (0, 0), "a site manager did not stop cleanly on SIGTERM"
