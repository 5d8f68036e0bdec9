"""Generate CustomResourceDefinitions (apiextensions.k8s.io/v1) from the pydantic models.

Pydantic emits JSON Schema 2020-12; the apiserver wants a *structural* OpenAPI v3 schema: every node typed,
no $ref, no anyOf-with-null, booleans for exclusive bounds, no `additionalProperties: false` beside
`properties`. This module translates, and keeps the cross-field rules as `x-kubernetes-validations` (CEL).
"""

from __future__ import annotations

import copy
from typing import Any

from .base import GROUP, VERSION
from .kinds import KINDS, Kind

_DROP = {"title", "propertyNames", "discriminator"}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**copy.deepcopy(target), **node}
    if "allOf" in node and len(node["allOf"]) == 1:
        node = {**node.pop("allOf")[0], **node}
        return _structural(node, defs)
    if "anyOf" in node:
        variants = [v for v in node.pop("anyOf") if v.get("type") != "null"]
        if len(variants) != 1:
            raise ValueError(f"non-structural union in schema: {variants}")
        if node.get("default", ...) is None:
            node.pop("default")
        node = {**variants[0], **node}
        return _structural(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        elif key == "properties":
            out[key] = {k: _structural(v, defs) for k, v in value.items()}
        elif key in ("items", "additionalProperties"):
            if value is False:
                continue  # extra="forbid": the apiserver prunes or (kubectl --validate=strict) rejects unknowns
            out[key] = _structural(value, defs)
        elif key == "default" and isinstance(value, dict) and value:
            continue  # only empty-object defaults (see TuneopsModel), filled by _materialize_defaults
        else:
            out[key] = value
    if "enum" in out and "type" not in out:
        sample = out["enum"][0]
        out["type"] = "integer" if isinstance(sample, int) else "string"
    return out


def _materialize_defaults(node: Any) -> Any:
    """Replace `default: {}` with the object its nested defaults make, bottom-up.

    The apiserver validates a default as written (CEL rules included) without applying nested defaults
    to it first, so `{}` would fail rules such as `self.strategy != 'none' || ...`.
    """
    if isinstance(node, list):
        return [_materialize_defaults(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _materialize_defaults(v) for k, v in node.items()}
    if node.get("default") == {} and "properties" in node:
        node["default"] = {k: v["default"] for k, v in node["properties"].items() if "default" in v}
    return node


def _conditions_as_map(schema: dict[str, Any]) -> None:
    """Conditions are a list keyed by type (as in metav1.Condition), for server-side apply merges."""
    cond = schema.get("properties", {}).get("conditions")
    if cond and cond.get("type") == "array":
        cond["x-kubernetes-list-type"] = "map"
        cond["x-kubernetes-list-map-keys"] = ["type"]


def openapi_schema(kind: Kind) -> dict[str, Any]:
    spec_json = kind.spec.model_json_schema(by_alias=True, mode="validation")
    status_json = kind.status.model_json_schema(by_alias=True, mode="validation")
    spec = _materialize_defaults(
        _structural({k: v for k, v in spec_json.items() if k != "$defs"}, spec_json.get("$defs", {})))
    status = _materialize_defaults(
        _structural({k: v for k, v in status_json.items() if k != "$defs"}, status_json.get("$defs", {})))
    _conditions_as_map(status)
    if kind.immutable_spec:
        spec.setdefault("x-kubernetes-validations", []).append(
            {"rule": "self == oldSelf", "message": f"{kind.kind} spec is immutable: create a new {kind.kind}"})
    spec["description"] = (kind.spec.__doc__ or "").strip().split("\n")[0] or f"{kind.kind} spec"
    return {
        "type": "object",
        "description": (kind.model.__doc__ or kind.kind).strip().split("\n")[0],
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }


def crd(kind: Kind) -> dict[str, Any]:
    columns = [
        {"name": c.name, "type": c.type, "jsonPath": c.json_path,
         **({"description": c.description} if c.description else {}),
         **({"priority": c.priority} if c.priority else {})}
        for c in kind.columns
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.crd_name,
            "labels": {"app.kubernetes.io/name": "tuneops", "app.kubernetes.io/part-of": "tuneops"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": ["tuneops", "ml"],
            },
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": openapi_schema(kind)},
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
            }],
        },
    }


def all_crds() -> dict[str, dict[str, Any]]:
    """File name -> CRD object, for every kind."""
    return {f"{GROUP}_{k.plural}.yaml": crd(k) for k in KINDS}
