"""Write a resolved spec back to YAML (the run directory's `spec.yaml`)."""

from __future__ import annotations

import io

from ruamel.yaml import YAML

from ftlab.runner.spec.schema import Spec


def to_yaml(spec: Spec) -> str:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]  # schema order
    buf = io.StringIO()
    yaml.dump(spec.model_dump(mode="json", by_alias=True), buf)
    return buf.getvalue()
