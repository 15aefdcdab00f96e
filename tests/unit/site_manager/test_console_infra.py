"""The overview's infrastructure facts: Kafka's brokers, Postgres and the mirror into the site, each
with a state a person reads at a glance, and what failed said in words; the page shows them."""

from __future__ import annotations

from tapstream.site_manager.console.infra import FRESH_S, STALE_S, mirror_state, summarize
from tapstream.site_manager.domain import commands as c

from .test_console_pages import Console, console  # noqa: F401 - the fixture


def test_the_mirror_is_flowing_behind_or_stopped_by_its_newest_heartbeat() -> None:
    assert mirror_state(0.5) == "ok" and mirror_state(FRESH_S) == "ok"
    assert mirror_state(FRESH_S + 1) == "warn"
    assert mirror_state(STALE_S + 1) == "bad" and mirror_state(None) == "bad"


def test_summary_of_a_healthy_and_a_broken_site() -> None:
    now = 1_000_000
    good = summarize(3, "", "", now - 1200, now, "protected")
    assert {k: v["state"] for k, v in good.items()} == {
        "kafka": "ok", "postgres": "ok", "mirror": "ok",
    }  # fmt: skip
    assert good["kafka"]["brokers"] == 3 and good["mirror"]["age_s"] == 1.2
    bad = summarize(0, "timed out", "connection refused", None, now, "recovery")
    assert {k: v["state"] for k, v in bad.items()} == {
        "kafka": "bad", "postgres": "bad", "mirror": "bad",
    }  # fmt: skip
    assert bad["mirror"]["error"] == "no heartbeat mirrored from the recovery site"
    assert bad["postgres"]["error"] == "connection refused"


def test_the_overview_shows_each_fact_of_its_own_site(console: Console) -> None:  # noqa: F811
    console.client.portal.call(
        console.sm.execute,
        "site",
        "recovery",
        c.RegisterSite("recovery", "http://127.0.0.1:1", "127.0.0.1:9092"),
    )
    console.telemetry.infra.latest = summarize(1, "", "connection refused", 0, 90_000, "protected")
    console.sign_in("viewer")
    html = console.client.get("/console/").text
    assert 'class="pill ok" data-infra="kafka"' in html and "1 broker<" in html
    assert 'class="pill bad" data-infra="postgres"' in html and "connection refused" in html
    assert 'class="pill bad" data-infra="mirror"' in html and "heartbeat 90.0 s ago" in html
