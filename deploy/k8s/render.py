"""A small Kustomize in Python: renders the overlays under deploy/k8s without the kustomize binary.

It handles exactly the kustomization features our manifests use and refuses any other key, so it
cannot silently render something different from `kubectl kustomize` (a test compares the two where
kubectl is installed):
  resources            files (one or more YAML documents) and directories with a kustomization.yaml
  namespace            set on every namespaced object
  labels               `pairs` added to metadata.labels (includeSelectors: false, no templates)
  patches              JSON 6902 (a YAML list of ops, with a `target`) or strategic merge (a map,
                       matched by kind and name; `$patch: delete` removes the object; lists of maps
                       with a `name` merge by name, other lists are replaced)
  configMapGenerator   `files`, options.labels, and options.disableNameSuffixHash: true

    python deploy/k8s/render.py deploy/k8s/overlays/protected | kubectl apply -f -
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

KNOWN_KEYS = {"apiVersion", "kind", "resources", "namespace", "labels", "patches", "configMapGenerator"}
# Kinds without a namespace among those we deploy (kustomize knows the full list from its schema).
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "PersistentVolume", "StorageClass", "PriorityClass"}


class RenderError(ValueError):
    """The kustomization uses something this renderer does not handle, or a patch does not apply."""


def render(directory: Path) -> list[Obj]:
    """Every object of the kustomization in `directory`, with its transformations applied."""
    directory = directory.resolve()
    kfile = directory / "kustomization.yaml"
    if not kfile.is_file():
        raise RenderError(f"{directory}: no kustomization.yaml")
    spec = yaml.safe_load(kfile.read_text()) or {}
    unknown = set(spec) - KNOWN_KEYS
    if unknown:
        raise RenderError(f"{kfile}: unsupported keys {sorted(unknown)}")

    objects: list[Obj] = []
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            objects.extend(render(path))
        else:
            objects.extend(_load_documents(path))
    for gen in spec.get("configMapGenerator", []):
        objects.append(_config_map(directory, gen))

    for patch in spec.get("patches", []):
        objects = _apply_patch(directory, patch, objects)

    if "namespace" in spec:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = spec["namespace"]
    for label in spec.get("labels", []):
        if label.get("includeSelectors") or label.get("includeTemplates"):
            raise RenderError(f"{kfile}: labels handle only metadata.labels (includeSelectors/Templates: false)")
        for obj in objects:
            obj.setdefault("metadata", {}).setdefault("labels", {}).update(label["pairs"])

    seen: set[tuple[str, str, str | None, str]] = set()
    for obj in objects:
        key = identity(obj)
        if key in seen:
            raise RenderError(f"{kfile}: {key} appears twice")
        seen.add(key)
    return objects


def identity(obj: Obj) -> tuple[str, str, str | None, str]:
    """(apiVersion group, kind, namespace, name): what makes an object unique in a rendering."""
    meta = obj.get("metadata", {})
    group = obj["apiVersion"].rpartition("/")[0]
    return (group, obj["kind"], meta.get("namespace"), meta["name"])


def _load_documents(path: Path) -> list[Obj]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc or "metadata" not in doc:
            raise RenderError(f"{path}: every document needs kind and metadata")
    return docs


def _config_map(directory: Path, gen: Obj) -> Obj:
    if not gen.get("options", {}).get("disableNameSuffixHash"):
        raise RenderError(f"configMapGenerator {gen['name']}: set options.disableNameSuffixHash: true")
    if set(gen) - {"name", "files", "options"} or set(gen["options"]) - {"disableNameSuffixHash", "labels"}:
        raise RenderError(f"configMapGenerator {gen['name']}: only name, files, options.labels are handled")
    data = {}
    for item in gen["files"]:
        key, sep, rel = item.partition("=")
        rel = rel if sep else key
        key = key if sep else Path(rel).name
        data[key] = (directory / rel).read_text()
    meta: Obj = {"name": gen["name"]}
    if gen["options"].get("labels"):
        meta["labels"] = dict(gen["options"]["labels"])
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def _apply_patch(directory: Path, patch: Obj, objects: list[Obj]) -> list[Obj]:
    text = (directory / patch["path"]).read_text() if "path" in patch else patch["patch"]
    body = yaml.safe_load(text)
    if isinstance(body, list):
        target = patch.get("target")
        if not target:
            raise RenderError("a JSON 6902 patch needs a target")
        hits = [o for o in objects if _matches(o, target)]
        if not hits:
            raise RenderError(f"patch target {target} matches nothing")
        for obj in hits:
            for op in body:
                _json6902(obj, op)
        return objects
    target = patch.get("target") or {"kind": body["kind"], "name": body["metadata"]["name"]}
    hits = [o for o in objects if _matches(o, target)]
    if not hits:
        raise RenderError(f"patch target {target} matches nothing")
    if body.get("$patch") == "delete":
        return [o for o in objects if not any(o is h for h in hits)]
    for obj in hits:
        _merge(obj, {k: v for k, v in body.items() if k not in ("apiVersion", "kind")})
    return objects


def _matches(obj: Obj, target: Obj) -> bool:
    unknown = set(target) - {"kind", "name"}
    if unknown:
        raise RenderError(f"patch target keys {sorted(unknown)} are not handled (kind, name only)")
    return all(
        (obj["kind"] if key == "kind" else obj["metadata"]["name"]) == value for key, value in target.items()
    )


def _merge(into: Obj, patch: Obj) -> None:
    for key, value in patch.items():
        if value is None:
            into.pop(key, None)
        elif isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        elif isinstance(value, list) and isinstance(into.get(key), list) and _named(value) and _named(into[key]):
            by_name = {item["name"]: item for item in into[key]}
            patched = []
            for item in value:
                if item["name"] in by_name:
                    _merge(by_name[item["name"]], item)
                    patched.append(by_name[item["name"]])
                else:
                    patched.append(copy.deepcopy(item))
            # kustomize's merge puts the patch's items first (in the patch's order), then the rest.
            names = {item["name"] for item in value}
            into[key][:] = patched + [item for item in into[key] if item["name"] not in names]
        else:
            into[key] = copy.deepcopy(value)


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(i, dict) and "name" in i for i in items)


def _json6902(obj: Obj, op: Obj) -> None:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
    if not parts:
        raise RenderError(f"{op}: patching the whole object is not handled")
    parent: Any = obj
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last = parts[-1]
    kind = op["op"]
    try:
        if isinstance(parent, list):
            if kind == "add":
                parent.insert(len(parent) if last == "-" else int(last), copy.deepcopy(op["value"]))
            elif kind == "replace":
                parent[int(last)] = copy.deepcopy(op["value"])
            elif kind == "remove":
                del parent[int(last)]
            else:
                raise RenderError(f"JSON 6902 op {kind!r} is not handled")
        elif kind in ("add", "replace"):
            if kind == "replace" and last not in parent:
                raise RenderError(f"replace of missing {op['path']}")
            parent[last] = copy.deepcopy(op["value"])
        elif kind == "remove":
            del parent[last]
        else:
            raise RenderError(f"JSON 6902 op {kind!r} is not handled")
    except (KeyError, IndexError, ValueError) as exc:
        raise RenderError(f"{op['path']}: {exc!r}") from None


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: render.py OVERLAY_DIR")
    sys.stdout.write(yaml.safe_dump_all(render(Path(argv[0])), sort_keys=False))


if __name__ == "__main__":
    main(sys.argv[1:])
