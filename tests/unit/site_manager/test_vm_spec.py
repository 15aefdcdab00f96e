"""VM definitions in the group (VmSpec, DefineVm/VmDefined) and the per-site VM log, without I/O;
and the old event log still replays unchanged beside them."""

from __future__ import annotations

import json

import pytest

from tapstream.site_manager.domain import (
    DomainError,
    Invalid,
    Ledger,
    ProtectionGroup,
    Recorded,
    VmLog,
    VmSpec,
)
from tapstream.site_manager.domain import commands as c
from tapstream.site_manager.domain import events as e


def run(agg, *cmds):
    out = []
    for cmd in cmds:
        for ev in agg.decide(cmd):
            agg.apply(ev)
            out.append(ev)
    return out


def group() -> ProtectionGroup:
    g = ProtectionGroup("g1")
    run(
        g,
        c.CreateGroup(),
        c.AddVm("web", "web-dr"),
        c.AddVolume("web", "root", "/v/root.img"),
        c.AddVolume("web", "data", "/v/data.img"),
        c.AddVm("db"),
    )
    return g


def test_define_vm_records_the_spec_once_and_shows_it() -> None:
    g = group()
    spec = {"vcpus": 2, "memory_mib": 256, "disks": ["root", "data"], "boot_order": 1}
    (ev,) = run(g, c.DefineVm("web", spec))
    assert isinstance(ev, e.VmDefined) and ev.spec["disks"] == ["root", "data"]
    assert run(g, c.DefineVm("web", spec)) == []  # the same definition again: nothing to record
    vms = {vm["name"]: vm for vm in g.state()["vms"]}
    assert vms["web"]["spec"] == {**VmSpec().to_dict(), **spec}
    assert vms["db"]["spec"] is None
    assert g.vms["web"].spec is not None and g.vms["web"].spec.disk_volumes([]) == ["root", "data"]
    (gone,) = run(g, c.UndefineVm("web"))
    assert isinstance(gone, e.VmUndefined) and g.vms["web"].spec is None
    assert run(g, c.UndefineVm("web")) == []


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ({"vcpus": 0}, "vcpus"),
        ({"vcpus": True}, "vcpus"),
        ({"memory_mib": 8}, "memory_mib"),
        ({"disks": ["root", "root"]}, "twice"),
        ({"disks": ["../etc"]}, "volume name"),
        ({"network": "a b"}, "network"),
        ({"initrd": "/boot/initrd"}, "needs a kernel"),
        ({"kernel": "vmlinuz"}, "absolute"),
        ({"cmdline": "x\0y", "kernel": "/k"}, "NUL"),
        ({"gpu": 1}, "unknown VM spec fields"),
    ],
)
def test_a_bad_spec_is_refused_with_its_reason(spec: dict, why: str) -> None:
    with pytest.raises(Invalid, match=why):
        group().decide(c.DefineVm("web", spec))


def test_a_spec_names_only_its_own_vms_volumes() -> None:
    g = group()
    with pytest.raises(DomainError, match=r"no volumes \['other'\]"):
        g.decide(c.DefineVm("web", {"disks": ["root", "other"]}))
    with pytest.raises(DomainError, match="no VM 'nope'"):
        g.decide(c.DefineVm("nope", {}))
    # Removing the VM takes its definition with it.
    run(g, c.DefineVm("web", {}), c.RemoveVm("web"))
    assert "web" not in g.vms


def test_a_newer_spec_field_is_dropped_when_stored() -> None:
    g = group()
    g.apply(e.VmDefined("web", {"vcpus": 3, "tpm": True}))
    assert g.vms["web"].spec == VmSpec(vcpus=3)
    # One that breaks the rules (another site's decision) is applied as no definition, never a crash.
    for bad in ({"disks": 5}, {"vcpus": "many"}, {"kernel": "relative"}, []):
        g.apply(e.VmDefined("web", bad))  # type: ignore[arg-type]
        assert g.vms["web"].spec is None


# What a site manager of the previous version wrote (payload_json as it was): the log must replay.
OLD_LOG = [
    ("GroupCreated", '{"checkpoint_interval_s":2.0,"journal_history_s":60.0,"mode":"sync",'
     '"name":"g1","rpo_target_s":30.0,"source_site":"protected","target_site":"recovery"}'),
    ("VmAdded", '{"target_vm":"web-dr","vm":"web"}'),
    ("VolumeAdded", '{"path":"/v/root.img","size":0,"target_path":"","vm":"web","volume":"root"}'),
    ("FailoverStarted", '{"kind":"move","operation":"op1"}'),
    ("FailedOver", '{"checkpoint_id":"cp1","exports":{"root":"nbd://h:1/root"},"kind":"move",'
     '"operation":"op1"}'),
]  # fmt: skip


def test_the_old_event_log_replays_and_new_events_follow_it() -> None:
    ledger = Ledger()
    for v, (kind, payload) in enumerate(OLD_LOG, 1):
        rec = {"id": f"id{v}", "aggregate_type": "group", "aggregate_id": "g1", "version": v,
               "type": kind, "ts": v, "site": "protected", "payload_json": payload,
               "meta": {"prev": f"id{v - 1}"} if v > 1 else {}, "actor": None}  # fmt: skip
        ledger.accept(Recorded.from_record(rec))
    g = ledger.get("group", "g1")
    assert isinstance(g, ProtectionGroup) and g.version == len(OLD_LOG)
    state = g.state()
    assert (state["status"], state["active_site"]) == ("failed_over", "recovery")
    assert state["vms"] == [
        {
            "name": "web",
            "target_vm": "web-dr",
            "volumes": [{"name": "root", "path": "/v/root.img", "size": 0, "target_path": ""}],
            "spec": None,
        }
    ]
    # A definition recorded now goes through the same envelope and lands on top of the old log.
    (ev,) = g.decide(c.DefineVm("web", {"memory_mib": 128}))
    rec = Recorded("id9", "group", "g1", g.version + 1, 9, "protected", ev, "id5")
    ledger.accept(Recorded.from_record(json.loads(json.dumps(rec.to_record()))))
    assert ledger.get("group", "g1").state()["vms"][0]["spec"]["memory_mib"] == 128


def test_the_vm_log_keeps_each_domains_last_state() -> None:
    log = VmLog(VmLog.id_of("g1", "recovery"))
    web = {"vm": "web", "purpose": "failover", "state": "running"}
    run(log, c.ReportVms("recovery", {"web-dr": web}, "op1"))
    assert log.running() == ["web-dr"] and log.running("test") == []
    assert run(log, c.ReportVms("recovery", {"web-dr": web})) == []  # nothing changed
    run(log, c.ReportVms("recovery", {"web-dr": {**web, "state": "shutoff"}}))
    assert log.running() == [] and log.state()["vms"]["web-dr"]["state"] == "shutoff"
    run(log, c.ReportVms("recovery", {"web-dr": {**web, "state": "gone"}}))
    assert log.state()["vms"] == {} and log.state()["site"] == "recovery"
    # A domain never seen that is already gone records nothing.
    assert run(log, c.ReportVms("recovery", {"x": {**web, "state": "gone"}})) == []
