"""The base of every spec model: unknown keys, NaN and infinity refused; each field's
docstring is its documentation."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        use_attribute_docstrings=True,
        validate_default=True,
        frozen=False,
        allow_inf_nan=False,  # `.inf` / `.nan` are never a setting
    )
