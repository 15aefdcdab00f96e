"""Re-vendor Strimzi's CRD schemas: `python deploy/k8s/schemas/strimzi/vendor.py [VERSION]`.

Strimzi publishes its generated CRDs inside the test jar of its API module on Maven Central
(`io.strimzi:api:<version>:jar:tests`, folder `crds/v1beta2/`): the same files as the release's
`install/cluster-operator/04x-Crd-*.yaml`. We keep the openAPIV3Schema of versions v1 and v1beta2
of the kinds we deploy, as JSON without descriptions, so tests validate offline and the repo stays small.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
KINDS = ("Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser", "KafkaMirrorMaker2")
VERSIONS = ("v1", "v1beta2")


def _strip_descriptions(node: object) -> object:
    """Drop prose (a string `description`); a property named `description` is a dict and stays."""
    if isinstance(node, dict):
        return {k: _strip_descriptions(v) for k, v in node.items() if not (k == "description" and isinstance(v, str))}
    if isinstance(node, list):
        return [_strip_descriptions(v) for v in node]
    return node


def main(version: str = "0.49.0") -> None:
    with tempfile.TemporaryDirectory() as repo:
        subprocess.run(["mvn", "-q", "dependency:get", f"-Dartifact=io.strimzi:api:{version}:jar:tests",
                        "-Dtransitive=false", f"-Dmaven.repo.local={repo}"], check=True)
        jar = Path(repo) / f"io/strimzi/api/{version}/api-{version}-tests.jar"
        with zipfile.ZipFile(jar) as zf:
            for name in sorted(n for n in zf.namelist() if n.startswith("crds/v1beta2/") and n.endswith(".yaml")):
                crd = yaml.safe_load(zf.read(name))
                kind = crd["spec"]["names"]["kind"]
                if kind not in KINDS:
                    continue
                for v in crd["spec"]["versions"]:
                    if v["name"] not in VERSIONS:
                        continue
                    out = HERE / f"{kind}-{crd['spec']['group']}-{v['name']}.json"
                    out.write_text(json.dumps(_strip_descriptions(v["schema"]["openAPIV3Schema"]), indent=1, sort_keys=True) + "\n")
                    print(out.name)
    (HERE / "VERSION").write_text(f"io.strimzi:api:{version}:jar:tests (Maven Central), crds/v1beta2/\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
