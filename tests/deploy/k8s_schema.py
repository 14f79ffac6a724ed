"""Custom resources checked offline against the vendored KubeRay CRDs (k8s/crds/*.yaml.gz) with jsonschema.

A CRD's openAPIV3Schema is OpenAPI 3.0 (JSON Schema draft 4 plus a few keywords) under the API server's
structural-schema rules. ``schema()`` turns it into plain JSON Schema that keeps the rules a manifest can break:

- unknown fields: the API server drops them (``kubectl apply``'s strict validation refuses them), so a misspelled
  field would silently do nothing; where the schema lists ``properties`` and does not say
  ``x-kubernetes-preserve-unknown-fields``, the JSON Schema gets ``additionalProperties: false``;
- ``x-kubernetes-int-or-string`` (resource quantities, ports): an integer or a string;
- ``nullable``, and the ranges of ``format: int32`` / ``int64``.

Not checked: CEL rules (``x-kubernetes-validations``), unique list-map keys, built-in kinds (ConfigMap: no CRD).
"""
from __future__ import annotations

import functools
import gzip
from pathlib import Path

import jsonschema
import yaml

CRD_DIR = Path(__file__).resolve().parents[2] / "k8s" / "crds"
_INT_BOUND = {"int32": 2 ** 31, "int64": 2 ** 63}


def schema(node):
    """An openAPIV3Schema node as JSON Schema, under the structural rules above."""
    if isinstance(node, list):
        return [schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: ({name: schema(sub) for name, sub in v.items()} if k == "properties" else schema(v))
           for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if node.get("format") in _INT_BOUND:
        bound = _INT_BOUND[node["format"]]
        out.update(minimum=-bound, maximum=bound - 1)
    if "properties" in node and "additionalProperties" not in node \
            and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@functools.cache
def validators() -> dict[tuple[str, str], jsonschema.Draft4Validator]:
    """(apiVersion, kind) -> validator, for each served version of each CRD in k8s/crds."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are ~25k lines each
    out = {}
    for path in sorted(CRD_DIR.glob("*.yaml.gz")):
        with gzip.open(path, "rt") as f:
            spec = yaml.load(f, Loader=loader)["spec"]
        for version in spec["versions"]:
            if version.get("served"):
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                # draft 4: OpenAPI 3.0's keywords mean what they mean there (exclusiveMinimum is a boolean, ...)
                out[key] = jsonschema.Draft4Validator(schema(version["schema"]["openAPIV3Schema"]))
    if not out:
        raise FileNotFoundError(f"no CRD (*.yaml.gz) in {CRD_DIR}: the checkout is incomplete; k8s/crds/SOURCES.md "
                                "says where the vendored KubeRay CRDs come from")
    return out


def errors(doc: dict) -> list[str]:
    """Why the API server would refuse the custom resource ``doc``, as 'path: message' lines; [] when valid."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    validator = validators().get(key)
    if validator is None:
        return [f"no CRD in {CRD_DIR} for apiVersion {key[0]!r} kind {key[1]!r} (known: {sorted(validators())})"]
    return sorted(f"{e.json_path}: {e.message}" for e in validator.iter_errors(doc))
