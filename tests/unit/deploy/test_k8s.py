"""deploy/k8s rendered offline and every object checked: schemas, settings, references, metrics."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tests.unit.deploy import checks

render = checks.load_renderer()
RENDERED = {site: render.render(path) for site, path in checks.OVERLAYS.items()}


# Our topics, their mirrored copies, and the analyzers' faust topics (named after the app id).
OWN_TOPICS = ("tapstream.", "protected.tapstream.", "recovery.tapstream.", "tapstream-analyzer")


def of_kind(site: str, kind: str) -> list[dict[str, Any]]:
    return [o for o in RENDERED[site] if o["kind"] == kind]


def named(site: str, kind: str, name: str) -> dict[str, Any]:
    (obj,) = [o for o in of_kind(site, kind) if o["metadata"]["name"] == name]
    return obj


@pytest.mark.parametrize("site", sorted(RENDERED))
def test_every_object_matches_its_schema(site: str) -> None:
    problems = [p for obj in RENDERED[site] for p in checks.check_schema(obj)]
    assert problems == []
    kinds = {o["kind"] for o in RENDERED[site]}
    assert {
        "Kafka",
        "KafkaNodePool",
        "KafkaTopic",
        "KafkaUser",
        "KafkaMirrorMaker2",
        "StatefulSet",
        "Deployment",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
    } <= kinds


def test_schema_checks_catch_mistakes() -> None:
    kafka = copy.deepcopy(named("protected", "Kafka", "tapstream"))
    kafka["spec"]["kafka"]["listeners"][0]["type"] = "nodeport-ish"
    assert any("listeners" in p for p in checks.check_schema(kafka))
    deploy = copy.deepcopy(named("recovery", "Deployment", "tapstream-journal"))
    deploy["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] = [9400]
    assert checks.check_schema(deploy)
    deploy = copy.deepcopy(named("recovery", "Deployment", "tapstream-journal"))
    deploy["spec"]["replicass"] = 1  # strict: unknown fields are errors
    assert any("replicass" in p for p in checks.check_schema(deploy))


@pytest.mark.parametrize("site", sorted(RENDERED))
def test_settings_named_in_manifests_exist_and_load(site: str) -> None:
    assert checks.check_k8s_settings(RENDERED[site]) == []


def test_a_setting_no_service_has_fails() -> None:
    objects = copy.deepcopy(RENDERED["recovery"])
    journal = next(
        o
        for o in objects
        if o["metadata"]["name"] == "tapstream-journal" and o["kind"] == "Deployment"
    )
    env = journal["spec"]["template"]["spec"]["containers"][0]["env"]
    env.append({"name": "TAPSTREAM_JOURNAL_BATCH_MAXX", "value": "10"})
    env.append({"name": "TAPSTREAM_VDSA_GROUPS", "value": '["g1"]'})  # another service's setting
    problems = checks.check_k8s_settings(objects)
    assert any("TAPSTREAM_JOURNAL_BATCH_MAXX" in p for p in problems)
    assert any("TAPSTREAM_VDSA_GROUPS" in p for p in problems)


def test_a_bad_setting_value_fails() -> None:
    objects = copy.deepcopy(RENDERED["protected"])
    cm = next(o for o in objects if o["metadata"]["name"] == "tapstream-tapper-volumes")
    cm["data"]["TAPSTREAM_TAPPER_VOLUMES"] = "vm1=/v/vm1.img"  # no group
    assert any("TapperSettings rejects" in p for p in checks.check_k8s_settings(objects))


def test_every_service_is_deployed_somewhere() -> None:
    commands = {
        checks.service_module(c.get("command", []))
        for objs in RENDERED.values()
        for o in objs
        if (spec := checks.pod_spec(o))
        for c in spec["containers"]
    }
    deployed = {m.removeprefix("tapstream.") for m in commands if m}
    missing = checks.services_with_main() - deployed
    assert not missing, (
        f"services with a __main__ but no deployment in deploy/k8s: {sorted(missing)}"
    )
    assert {"tapper", "vdsa", "journal", "replicator"} <= deployed


def test_sites_run_what_the_design_says() -> None:
    assert of_kind("protected", "DaemonSet") and not of_kind("recovery", "DaemonSet")
    assert [o["metadata"]["name"] for o in of_kind("recovery", "KafkaMirrorMaker2")] == [
        "tapstream-protected-to-recovery"
    ]
    assert [o["metadata"]["name"] for o in of_kind("protected", "KafkaMirrorMaker2")] == [
        "tapstream-recovery-to-protected"
    ]
    tapper = named("protected", "DaemonSet", "tapstream-tapper")["spec"]["template"]["spec"]
    assert (
        tapper["hostNetwork"] is True
        and tapper["containers"][0]["securityContext"]["privileged"] is True
    )
    assert any("hostPath" in v for v in tapper["volumes"])
    for site in RENDERED:
        assert {o["metadata"]["namespace"] for o in RENDERED[site]} == {f"tapstream-{site}"}


@pytest.mark.parametrize("site", sorted(RENDERED))
def test_deployments_have_probes_resources_budgets_and_policies(site: str) -> None:
    budgets = {
        tuple(sorted(o["spec"]["selector"]["matchLabels"].items()))
        for o in of_kind(site, "PodDisruptionBudget")
    }
    policies = {
        tuple(sorted(o["spec"]["podSelector"]["matchLabels"].items()))
        for o in of_kind(site, "NetworkPolicy")
    }
    for dep in (
        of_kind(site, "Deployment") + of_kind(site, "DaemonSet") + of_kind(site, "StatefulSet")
    ):
        spec = dep["spec"]["template"]["spec"]
        for c in spec["containers"]:
            assert c.get("readinessProbe") and c.get("livenessProbe"), dep["metadata"]["name"]
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], dep[
                "metadata"
            ]["name"]
        selector = tuple(sorted(dep["spec"]["selector"]["matchLabels"].items()))
        if dep["kind"] == "Deployment":
            assert selector in budgets, f"{dep['metadata']['name']} has no PodDisruptionBudget"
        if not spec.get("hostNetwork"):  # policies do not apply to host-network pods
            assert selector in policies, f"{dep['metadata']['name']} has no NetworkPolicy"


@pytest.mark.parametrize("site", sorted(RENDERED))
def test_strimzi_objects_belong_to_the_sites_cluster_and_users_exist(site: str) -> None:
    (kafka,) = of_kind(site, "Kafka")
    for obj in (
        of_kind(site, "KafkaNodePool") + of_kind(site, "KafkaTopic") + of_kind(site, "KafkaUser")
    ):
        assert obj["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    users = {u["metadata"]["name"] for u in of_kind(site, "KafkaUser")}
    for obj in RENDERED[site]:
        if spec := checks.pod_spec(obj):
            for c in spec["containers"]:
                env = {e["name"]: e.get("value") for e in c.get("env", [])}
                if "TAPSTREAM_KAFKA_SASL_USERNAME" in env:
                    assert env["TAPSTREAM_KAFKA_SASL_USERNAME"] in users
    for mm2 in of_kind(site, "KafkaMirrorMaker2"):
        for cluster in mm2["spec"]["clusters"]:
            assert cluster["authentication"]["username"] in users
            assert cluster["tls"]["trustedCertificates"]
    # Topics: the writes topic fits the largest record and outlives the journal history.
    writes = named(site, "KafkaTopic", "tapstream.writes.g1")["spec"]["config"]
    assert writes["max.message.bytes"] >= 8 * 1024 * 1024 + 64 * 1024
    assert writes["retention.ms"] / 1000 > 3600


@pytest.mark.parametrize("site", sorted(RENDERED))
def test_each_user_reaches_only_its_topics(site: str) -> None:
    users = {
        u["metadata"]["name"]: u["spec"]["authorization"]["acls"]
        for u in of_kind(site, "KafkaUser")
    }
    for name, acls in users.items():
        for acl in acls:
            resource = acl["resource"]
            assert resource.get("name") != "*", f"{name} has a wildcard ACL"
            if resource["type"] == "topic" and name != "tapstream-mirrormaker":
                assert resource["name"].startswith(OWN_TOPICS), (name, resource)
    # The journal reads the mirrored stream and writes nothing but dead letters.
    journal = users.get("tapstream-journal", [])
    assert all(
        a["resource"]["name"] == "tapstream.dlq"
        for a in journal
        if a["resource"]["type"] == "topic" and "Write" in a["operations"]
    )


@pytest.mark.parametrize("site", sorted(RENDERED))
def test_kafka_users_are_the_acl_table(site: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """validate-deploy: the KafkaUsers equal the ACL table's, and users.yaml is its generator's
    output byte for byte."""
    from tapstream.core.acl_strimzi import users_yaml

    assert checks.check_kafka_users(RENDERED[site], site) == []
    committed = (checks.OVERLAYS[site] / "users.yaml").read_text()
    assert committed == users_yaml(checks.table_settings(), site), (
        f"regenerate: python -m tapstream.core.acl_strimzi {site} > "
        f"deploy/k8s/overlays/{site}/users.yaml"
    )
    (cm,) = [o for o in of_kind(site, "ConfigMap") if o["metadata"]["name"] == "tapstream-settings"]
    assert cm["data"]["TAPSTREAM_TOPIC_PREFIX"] == checks.table_settings().topic_prefix


def test_a_kafka_user_that_differs_from_the_table_fails() -> None:
    objects = copy.deepcopy(RENDERED["recovery"])
    vdsa = next(o for o in objects if o["metadata"]["name"] == "tapstream-vdsa-recovery")
    # The finding: without this ACL kept checkpoints are silently ignored.
    acls = vdsa["spec"]["authorization"]["acls"]
    acls[:] = [a for a in acls if a["resource"].get("name") != "protected.tapstream.control"]
    objects = [o for o in objects if o["metadata"]["name"] != "tapstream-journal"]
    problems = checks.check_kafka_users(objects, "recovery")
    assert "KafkaUser/tapstream-vdsa-recovery: spec.authorization differs from the ACL table" in (
        problems
    )
    assert "KafkaUser/tapstream-journal: in the ACL table, not deployed" in problems


@pytest.mark.parametrize("site", sorted(RENDERED))
def test_services_log_in_as_their_principal(site: str) -> None:
    assert checks.check_kafka_credentials(RENDERED[site], site) == []
    sm = named(site, "Deployment", "tapstream-site-manager")["spec"]["template"]["spec"]
    # Move and failback command the other site: its credentials work on both clusters.
    env = {e["name"]: e for e in sm["containers"][0]["env"]}
    assert env["TAPSTREAM_KAFKA_SASL_USERNAME"]["value"] == f"tapstream-site-manager-{site}"
    users = {u["metadata"]["name"]: u for u in of_kind(site, "KafkaUser")}
    for other in ("protected", "recovery"):
        auth = users[f"tapstream-site-manager-{other}"]["spec"]["authentication"]
        assert auth["password"]["valueFrom"]["secretKeyRef"]["name"] == (
            f"tapstream-site-manager-{other}-password"
        )
    assert len(checks.ca_secrets(sm)) == 2


def test_wrong_credentials_fail() -> None:
    objects = copy.deepcopy(RENDERED["recovery"])
    vdsa = next(o for o in objects if o["metadata"]["name"] == "tapstream-vdsa")
    spec = vdsa["spec"]["template"]["spec"]
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    env["TAPSTREAM_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] = "tapstream-vdsa"
    del spec["initContainers"]  # no CA bundle: the protected cluster's certificate is unknown
    sm = next(
        o
        for o in objects
        if o["metadata"]["name"] == "tapstream-site-manager" and o["kind"] == "Deployment"
    )
    env = {e["name"]: e for e in sm["spec"]["template"]["spec"]["containers"][0]["env"]}
    env["TAPSTREAM_KAFKA_SASL_USERNAME"]["value"] = "tapstream-site-manager"
    problems = "\n".join(checks.check_kafka_credentials(objects, "recovery"))
    assert "password from Secret 'tapstream-vdsa', expected 'tapstream-vdsa-recovery-password'" in (
        problems
    )
    assert "tapstream-vdsa-recovery reaches both clusters but its CA file holds" in problems
    assert "Kafka user 'tapstream-site-manager', the ACL table says" in problems


@pytest.mark.parametrize("site", sorted(RENDERED))
def test_volume_mounts_hold_the_settings_paths(site: str) -> None:
    assert checks.check_path_mounts(RENDERED[site]) == []


def test_missing_mounts_fail() -> None:
    objects = copy.deepcopy(RENDERED["recovery"])
    sm = next(
        o
        for o in objects
        if o["metadata"]["name"] == "tapstream-site-manager" and o["kind"] == "Deployment"
    )
    container = sm["spec"]["template"]["spec"]["containers"][0]
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] != "replicas"]
    for m in container["volumeMounts"]:
        if m["name"] == "state":
            m["readOnly"] = True
    vdsa = next(
        o
        for o in objects
        if o["metadata"]["name"] == "tapstream-vdsa" and o["kind"] == "Deployment"
    )
    env = vdsa["spec"]["template"]["spec"]["containers"][0]["env"]
    env[:] = [e for e in env if e["name"] != "TAPSTREAM_REPLICA_DIR"]
    problems = "\n".join(checks.check_path_mounts(objects))
    assert "settings.replica_dir = /var/lib/tapstream/replicas is on no volume mount" in problems
    assert "site_manager_state_dir = /var/lib/tapstream/site-manager is on a read-only mount" in (
        problems
    )
    assert "tapstream-vdsa/vdsa: TAPSTREAM_REPLICA_DIR is not set" in problems
    tapper = copy.deepcopy(named("protected", "DaemonSet", "tapstream-tapper"))
    tapper["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = [
        m
        for m in tapper["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        if m["name"] != "volumes"
    ]
    others = [o for o in RENDERED["protected"] if o["kind"] != "DaemonSet"]
    assert any("tapper_volumes[0].path" in p for p in checks.check_path_mounts([*others, tapper]))


@pytest.mark.parametrize("site", sorted(RENDERED))
def test_the_api_answers_operators_only(site: str) -> None:
    policy = named(site, "NetworkPolicy", "tapstream-site-manager")
    for rule in policy["spec"]["ingress"]:
        if any(p["port"] == 8470 for p in rule["ports"]):
            assert rule.get("from"), "the API port is open to every pod"
            for peer in rule["from"]:
                assert peer.get("podSelector") or peer.get("namespaceSelector")
                assert all(peer.get(k) != {} for k in ("podSelector", "namespaceSelector"))


def _without_tapstream_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("TAPSTREAM_"):
            monkeypatch.delenv(key)


def test_committed_mirrormaker2_equals_the_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    """The committed file is the CLI's output for the command in its kustomization.yaml, byte for byte."""
    from tapstream.cli.main import app

    _without_tapstream_env(monkeypatch)
    env = {
        "TAPSTREAM_ENV_FILE": "",
        "TAPSTREAM_PROTECTED_BOOTSTRAP": "tapstream-kafka-bootstrap.tapstream-protected.svc:9093",
        "TAPSTREAM_RECOVERY_BOOTSTRAP": "tapstream-kafka-bootstrap.tapstream-recovery.svc:9093",
    }
    result = CliRunner().invoke(app, ["replicator", "strimzi", "--rf", "3"], env=env)
    assert result.exit_code == 0, result.output
    committed = (checks.K8S / "base" / "mirrormaker" / "kafkamirrormaker2.yaml").read_text()
    assert result.output == committed, (
        "regenerate with the command in deploy/k8s/base/mirrormaker/kustomization.yaml"
    )
    kustomization = (checks.K8S / "base" / "mirrormaker" / "kustomization.yaml").read_text()
    assert all(f"{k}={v}" in kustomization for k, v in env.items() if v)


def test_dashboard_and_alerts_use_real_metric_names() -> None:
    cm = named("protected", "ConfigMap", "tapstream-grafana-dashboard")
    dashboard = yaml.safe_load(cm["data"]["tapstream.json"])
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert checks.check_metric_names(exprs, "dashboard") == []
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("rpo", "lag", "write rate", "checkpoints", "alerts"):
        assert topic in titles
    (rule,) = of_kind("protected", "PrometheusRule")
    alerts = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert checks.check_metric_names(alerts, "alerts") == []
    assert checks.check_metric_names(
        ["rate(tapstream_tapper_writes_total[1m])"], "x"
    )  # a made-up name fails


@pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (with its built-in kustomize) is not installed"
)
@pytest.mark.parametrize("site", sorted(RENDERED))
def test_python_renderer_equals_kubectl_kustomize(site: str) -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(checks.OVERLAYS[site])],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    theirs = {render.identity(o): o for o in yaml.safe_load_all(out) if o}
    ours = {render.identity(o): o for o in RENDERED[site]}
    assert ours.keys() == theirs.keys()
    assert [k for k in ours if ours[k] != theirs[k]] == []


def test_renderer_refuses_what_it_does_not_handle(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nimages: [{name: x, newTag: y}]\n")
    with pytest.raises(render.RenderError, match="images"):
        render.render(tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [cm.yaml]\npatches:\n- patch: '[{op: replace, path: /data/b, value: x}]'\n  target: {kind: ConfigMap, name: c}\n"
    )
    (tmp_path / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: '1'}\n"
    )
    with pytest.raises(render.RenderError, match="replace of missing"):
        render.render(tmp_path)


@pytest.mark.parametrize("site", sorted(RENDERED))
def test_secrets_stay_in_secrets(site: str) -> None:
    assert checks.check_secrets_in_secrets(RENDERED[site]) == []


def test_a_literal_password_fails() -> None:
    objects = copy.deepcopy(RENDERED["protected"])
    sm = next(
        o
        for o in objects
        if o["metadata"]["name"] == "tapstream-site-manager" and o["kind"] == "Deployment"
    )
    env = sm["spec"]["template"]["spec"]["containers"][0]["env"]
    for e in env:
        if e["name"] == "TAPSTREAM_KAFKA_SASL_PASSWORD":
            e.pop("valueFrom")
            e["value"] = "hunter2"
    cm = next(o for o in objects if o["metadata"]["name"] == "tapstream-settings")
    cm["data"]["TAPSTREAM_API_TOKEN"] = "t0k3n"
    problems = "\n".join(checks.check_secrets_in_secrets(objects))
    assert "TAPSTREAM_KAFKA_SASL_PASSWORD is not from a Secret" in problems
    assert "ConfigMap/tapstream-settings: TAPSTREAM_API_TOKEN looks secret" in problems
