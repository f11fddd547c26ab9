"""The spec's JSON Schema, with every registered plugin's params (`ftlab schema`).

`stages[].params` and `evals[].params` are plain objects in the pydantic model (each is
validated against its plugin's params model by the loader); here each registered method
and eval kind adds an `if method/kind == NAME then params: <its params model>` case, so
an editor completes `params.beta` for a dpo stage and flags a misspelt key.
"""

from __future__ import annotations

from typing import Any

from ftlab.runner.spec.schema import Spec


def json_schema() -> dict[str, Any]:
    """Every registered plugin's params (load a spec's `plugins:` first to include them)."""
    from ftlab.evals import EVALS
    from ftlab.runner.methods import METHODS

    schema = Spec.model_json_schema(by_alias=True)
    defs = schema["$defs"]
    props = schema["properties"]
    # what the loader accepts besides the models' shapes: `model: tiny`, `extends: base.yaml`
    props["model"] = {"anyOf": [{"type": "string"}, {"$ref": "#/$defs/ModelSpec"}]}
    props["extends"] = {"anyOf": [{"type": "string"}, props["extends"]]}
    for key in ("variants", "data", "evals", "extends"):  # left empty in YAML: none
        props[key] = {"anyOf": [props[key], {"type": "null"}]}
    for entry, key, registry in (("StageSpec", "method", METHODS), ("EvalSpec", "kind", EVALS)):
        cases = []
        for name, plugin in registry.items():
            params = plugin.params_model.model_json_schema(
                by_alias=True, ref_template="#/$defs/{model}"
            )
            defs.update(params.pop("$defs", {}))
            cases.append(
                {
                    "if": {"properties": {key: {"const": name}}, "required": [key]},
                    "then": {"properties": {"params": params}},
                }
            )
        defs[entry]["allOf"] = cases
    return schema
