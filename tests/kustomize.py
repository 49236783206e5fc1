"""Kustomize's rules for the part of a kustomization.yaml that deploy/kubernetes uses, in
Python, so ``make test`` renders the deployment where no kustomize binary exists.

Knows ``resources`` (files), ``labels`` (pairs added to each resource's own metadata and,
with ``includeTemplates``, to its pod template and a StatefulSet's volume claim templates;
never to selectors) and ``images`` (newName, newTag, digest on every container and init
container). Anything else in the file is refused, so
this can never quietly render something other than what ``kubectl apply -k`` applies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

KNOWN = {"apiVersion", "kind", "resources", "labels", "images"}
LABEL_KEYS = {"pairs", "includeTemplates"}
IMAGE_KEYS = {"name", "newName", "newTag", "digest"}

Resource = dict[str, Any]


class Unsupported(Exception):
    """The kustomization uses a feature this renderer does not implement."""


def load_kustomization(directory: Path) -> dict[str, Any]:
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(k) - KNOWN
    if unknown:
        raise Unsupported(f"kustomization fields not rendered here: {sorted(unknown)}")
    for entry in k.get("labels", []):
        if set(entry) - LABEL_KEYS:
            raise Unsupported(f"labels options not rendered here: {sorted(set(entry))}")
    for entry in k.get("images", []):
        if set(entry) - IMAGE_KEYS:
            raise Unsupported(f"images options not rendered here: {sorted(set(entry))}")
    return k


def load_resources(path: Path) -> list[Resource]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _image_name(ref: str) -> tuple[str, str]:
    """(name, the tag or digest part with its separator) of an image reference."""
    if "@" in ref:
        name, digest = ref.split("@", 1)
        return name, "@" + digest
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon:]
    return ref, ""


def retag(ref: str, rule: dict[str, str]) -> str:
    name, suffix = _image_name(ref)
    if name != rule["name"]:
        return ref
    name = rule.get("newName", name)
    if "digest" in rule:
        suffix = "@" + rule["digest"]
    elif "newTag" in rule:
        suffix = ":" + str(rule["newTag"])
    return name + suffix


def pod_spec(resource: Resource) -> dict[str, Any] | None:
    spec = resource.get("spec") or {}
    template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}) \
        .get("template")
    if resource.get("kind") == "Pod":
        return spec
    return (template or {}).get("spec")


def _add_labels(r: Resource, pairs: dict[str, str], templates: bool) -> None:
    targets = [r]
    spec = r.get("spec") or {}
    if templates and "template" in spec:
        targets.append(spec["template"])
        targets.extend(spec.get("volumeClaimTemplates", []))
    for t in targets:
        t.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)


def render(directory: Path) -> list[Resource]:
    k = load_kustomization(directory)
    out: list[Resource] = []
    for name in k.get("resources", []):
        path = directory / name
        if not path.is_file():
            raise FileNotFoundError(f"kustomization resource {name} is missing")
        out.extend(load_resources(path))
    for r in out:
        for entry in k.get("labels", []):
            _add_labels(r, entry.get("pairs", {}), entry.get("includeTemplates", False))
        spec = pod_spec(r)
        if spec is None:
            continue
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            for rule in k.get("images", []):
                container["image"] = retag(container["image"], rule)
    return out
