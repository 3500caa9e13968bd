"""The part of KubeRay's RayCluster schema that infra/ray/kuberay-cluster.yaml touches, and a
JSON Schema validator for it that answers as the API server does.

KubeRay's CRD (helm-chart/kuberay-operator/crds/ray.io_rayclusters.yaml, 930 kB: it embeds the
whole Kubernetes pod template) is cut down to the branches the spec uses. Every object keeps the
names of all its properties, so a misspelt or unknown field still fails, as it does under
kubectl's strict field validation; the branches the spec does not use are left empty.

Regenerate after changing the spec or moving to another KubeRay (the test says when):

    python tests/infra/raycluster_schema.py ray.io_rayclusters.yaml KUBERAY_TAG
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "infra" / "ray" / "kuberay-cluster.yaml"
SUBSET = Path(__file__).with_name("raycluster_v1_schema_subset.json")


def used_branches(schema: dict, values: list) -> dict:
    """``schema`` without descriptions and without the subschemas no value in ``values`` reaches."""
    out = {k: v for k, v in schema.items() if k not in ("description", "properties", "items", "additionalProperties")}
    objects = [v for v in values if isinstance(v, dict)]
    if "properties" in schema:
        out["properties"] = {
            name: used_branches(sub, [o[name] for o in objects if name in o]) if any(name in o for o in objects) else {}
            for name, sub in schema["properties"].items()
        }
    if isinstance(schema.get("items"), dict):
        out["items"] = used_branches(schema["items"], [x for v in values if isinstance(v, list) for x in v])
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = used_branches(schema["additionalProperties"], [x for o in objects for x in o.values()])
    elif "additionalProperties" in schema:
        out["additionalProperties"] = schema["additionalProperties"]
    return out


def as_json_schema(node: dict) -> dict:
    """A Kubernetes structural schema as JSON Schema: an object that lists its properties admits
    no others (unless it says x-kubernetes-preserve-unknown-fields); x-kubernetes-* markers and
    formats go (int-or-string is already an anyOf)."""
    out = {k: v for k, v in node.items() if not k.startswith("x-kubernetes-") and k not in ("format", "nullable")}
    if "properties" in out:
        out["properties"] = {name: as_json_schema(sub) for name, sub in out["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = as_json_schema(out[key])
    if "anyOf" in out:
        out["anyOf"] = [as_json_schema(sub) for sub in out["anyOf"]]
    if "properties" in out and "additionalProperties" not in out and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def unvetted_paths(schema: dict, value, path: str = "") -> list[str]:
    """Where ``value`` has a field whose schema the subset left empty: the spec gained a field
    after the subset was cut, so the subset must be cut again to check it."""
    if not schema:
        return [path or "<root>"]
    found = []
    if isinstance(value, dict):
        for name, sub in value.items():
            if name in schema.get("properties", {}):
                found += unvetted_paths(schema["properties"][name], sub, f"{path}.{name}".lstrip("."))
            elif isinstance(schema.get("additionalProperties"), dict):
                found += unvetted_paths(schema["additionalProperties"], sub, f"{path}.{name}".lstrip("."))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found += unvetted_paths(schema["items"], item, f"{path}.{i}")
    return found


def vendored_schema() -> dict:
    return json.loads(SUBSET.read_text())["schema"]


def spec_errors(document: dict) -> list[str]:
    """Where ``document`` breaks the vendored RayCluster schema (empty: it validates)."""
    validator = jsonschema.Draft7Validator(as_json_schema(vendored_schema()))
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(document)]


def main(crd_path: str, kuberay_tag: str) -> None:
    crd = yaml.safe_load(Path(crd_path).read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    document = yaml.safe_load(SPEC.read_text())
    subset = {
        "source": f"ray-project/kuberay {kuberay_tag}: helm-chart/kuberay-operator/crds/ray.io_rayclusters.yaml, "
                  "version v1, cut to the branches infra/ray/kuberay-cluster.yaml uses (tests/infra/raycluster_schema.py)",
        "schema": used_branches(version["schema"]["openAPIV3Schema"], [document]),
    }
    SUBSET.write_text(json.dumps(subset, indent=1, sort_keys=True) + "\n")
    print(f"wrote {SUBSET.relative_to(ROOT)} ({SUBSET.stat().st_size} bytes)")


if __name__ == "__main__":
    main(*sys.argv[1:])
