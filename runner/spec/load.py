"""Spec loading: YAML → `extends:` deep merge → CLI overrides → validation.

Every problem is collected and raised once as a `SpecError`, each naming the file, the
line, the dotted path, what was expected and what was found.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

from pydantic import ValidationError

from ftlab.runner.registry import did_you_mean
from ftlab.runner.spec.anchors import (
    anchor_data_paths,
    no_secrets,
)
from ftlab.runner.spec.checks import cross_check, schema_problems, short, stage_refs
from ftlab.runner.spec.errors import Problem, SpecError, secret
from ftlab.runner.spec.raw import (
    Loc,
    Raw,
    apply_override,
    merge,
    parse_override,
    read_yaml,
    resolve,
)
from ftlab.runner.spec.schema import Spec

__all__ = [
    "Loc",
    "Raw",
    "apply_override",
    "expand_runs",
    "load_raw",
    "load_spec",
    "parse_override",
    "read_yaml",
    "validate",
    "with_evals",
]


def validate(raw: Raw, prefix: str = "") -> Spec:
    """Validate merged data into a Spec, or raise one SpecError with every problem."""
    secrets_found = no_secrets(raw, prefix)
    if secrets_found:  # nothing else is checked (or echoed) until they are gone
        raise SpecError(secrets_found)
    path_problems = anchor_data_paths(raw, prefix) + stage_refs(raw, prefix)
    if not any(p.path.startswith("plugins") for p in path_problems):
        path_problems += _load_plugins(raw, prefix)
    try:
        spec = Spec.model_validate(raw.data)
    except ValidationError as exc:
        raise SpecError(path_problems + schema_problems(raw, exc, prefix)) from None
    problems = path_problems + cross_check(raw, spec, prefix)
    if problems:
        raise SpecError(problems)
    return spec


def _load_plugins(raw: Raw, prefix: str) -> list[Problem]:
    """Import the spec's `plugins:` (their registrations must exist before the checks)."""
    from ftlab.runner import plugins

    problems = []
    entries = raw.data.get("plugins")
    for i, entry in enumerate(entries if isinstance(entries, list) else []):
        try:
            plugins.load([str(entry)])
        except Exception as exc:  # noqa: BLE001 - any failure of a user's file is reported
            where = raw.loc(("plugins", i))
            problems.append(
                Problem(
                    where.file,
                    where.line,
                    f"plugins.{i}",
                    "a plugin file or module that imports",
                    f"{type(exc).__name__}: {exc}",
                    f"fix the plugin (`python {entry}` shows the full error)"
                    if str(entry).endswith(".py")
                    else f"fix the plugin (`python -c 'import {entry}'` shows the full error)",
                    prefix,
                )
            )
    return problems


# ---------------------------------------------------------------- entry points


def load_raw(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Raw:
    raw = resolve(Path(path))
    _apply_cli(raw, overrides)
    return raw


def _apply_cli(raw: Raw, overrides: list[str] | tuple[str, ...], *, variants: bool = True) -> None:
    """Apply command-line overrides (`variants=False`: all but those inside `variants:`)."""
    for text in overrides:
        key, value = parse_override(text)
        if variants or key.split(".", 1)[0] != "variants":
            shown = f"{key}=…" if secret(key, value) else text
            apply_override(raw, key, value, Loc(f"<override {shown}>", 0))


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Load, merge, override and validate one spec file (variants checked too)."""
    return _all_runs(load_raw(path, overrides), overrides)[0][1]


def _all_runs(raw: Raw, overrides: list[str] | tuple[str, ...]) -> list[tuple[str, Spec]]:
    """The spec as written (run `label:`, default `default`) and every variant, validated;
    every problem of the file raised at once, each reported once with the runs it affects."""
    runs: list[tuple[str, Spec]] = []
    found: dict[Problem, list[str]] = {}  # problem (without context) → runs it affects
    written = spec_label(raw)
    names = [written]
    try:
        runs.append((written, validate(raw)))
    except SpecError as exc:
        for p in exc.problems:
            found.setdefault(replace(p, context=""), []).append(written)
    variants = raw.data.get("variants")
    for name in variants if isinstance(variants, dict) else {}:
        names.append(str(name))
        try:
            runs.append((str(name), variant_raw(raw, str(name), overrides)))
        except SpecError as exc:
            for p in exc.problems:
                affected = found.setdefault(replace(p, context=""), [])
                if name not in affected:
                    affected.append(str(name))
    problems = [replace(p, context=_affects(on, names)) for p, on in found.items()]
    for p in _space_problems(raw, runs[0][1] if runs and runs[0][0] == written else None):
        if replace(p, context="") not in found:
            problems.append(p)
    if problems:
        raise SpecError(problems)
    return runs


def spec_label(raw: Raw) -> str:
    """The name of the run of the spec as written (`label:`; `default` when absent or not
    a string — validation reports the latter)."""
    label = raw.data.get("label")
    return label if isinstance(label, str) and label else "default"


def _space_problems(raw: Raw, spec: Spec | None) -> list[Problem]:
    """`search.space`: every path and value a trial can take, checked now (`ftlab validate`
    catches a misspelt path before `ftlab sweep` starts)."""
    from ftlab.runner.spec import space

    search = raw.data.get("search")
    if not isinstance(search, dict) or not search.get("space"):
        return []
    try:
        space.parse(spec, raw)
    except SpecError as exc:
        return exc.problems
    return []


def _affects(affected: list[str], names: list[str]) -> str:
    if len(names) == 1:
        return ""
    if affected == names:
        return f"all {len(names)} runs: {', '.join(names)}"
    if affected == names[:1]:
        return f"run {names[0]} (the spec as written; its variants override this key)"
    if len(affected) == 1:
        return f"variant '{affected[0]}'"
    return "runs " + ", ".join(affected)


def with_evals(spec_path: Path, evals_path: Path) -> Spec:
    """A run's spec with the `evals:` list (and any extra `data:` entries) of another
    file, for `ftlab eval RUN --evals FILE`."""
    raw = read_yaml(spec_path)
    extra = read_yaml(evals_path)
    file = str(evals_path)
    problems = [
        Problem(file, extra.loc((key,)).line, key, "only evals: and data: keys", key)
        for key in extra.data
        if key not in ("evals", "data")
    ]
    if not isinstance(extra.data.get("evals"), list):
        problems.append(Problem(file, 1, "evals", "an evals: list", "no evals: list"))
    if problems:
        raise SpecError(problems)
    merge(raw, Raw({k: v for k, v in extra.data.items()}, extra.locs))
    for stage in raw.data.get("stages") or []:  # trained already: its choice was made
        if isinstance(stage, dict):
            stage.pop("select", None)
    return validate(raw)


def variant_raw(raw: Raw, name: str, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Apply variant `name`'s overrides to a copy of `raw`, then the command line's
    `overrides` (the command line wins over the spec and its variants), and validate."""
    prefix = f"variant '{name}'"
    written = spec_label(raw)
    if name in ("base", written):
        why = (
            "'base' is the untrained base model in evals (on: [base], against: base)"
            if name == "base"
            else f"'{written}' is the run of the spec as written (label: {written})"
        )
        raise SpecError(
            [
                Problem(
                    raw.loc(("variants", name)).file,
                    raw.loc(("variants", name)).line,
                    f"variants.{name}",
                    f"a variant name other than 'base' and '{written}'",
                    name,
                    f"{why}; rename the variant",
                )
            ]
        )
    changes = raw.data["variants"][name]
    copy_ = Raw(copy.deepcopy(raw.data), dict(raw.locs))
    copy_.data["variants"] = {}
    if not isinstance(changes, dict):
        where = raw.loc(("variants", name))
        raise SpecError(
            [
                Problem(
                    where.file,
                    where.line,
                    f"variants.{name}",
                    "a mapping of dotted keys to values",
                    short(changes, ("variants", name)),
                )
            ]
        )
    problems: list[Problem] = []
    for key, value in changes.items():
        try:
            apply_override(copy_, str(key), value, raw.loc(("variants", name, key)))
        except SpecError as exc:
            problems.extend(Problem(**{**p.__dict__, "context": prefix}) for p in exc.problems)
    if problems:
        raise SpecError(problems)
    _apply_cli(copy_, overrides, variants=False)
    return validate(copy_, prefix)


def expand_runs(
    path: str | Path, overrides: list[str] | tuple[str, ...] = (), only: list[str] | None = None
) -> list[tuple[str, Spec]]:
    """The runs a spec file declares: the spec as written (named by `label:`) plus one per
    variant (filtered by `only`)."""
    runs = _all_runs(load_raw(path, overrides), overrides)  # every problem at once
    if only:
        names = [n for n, _ in runs]
        unknown = [n for n in only if n not in names]
        if unknown:
            raise SpecError(
                [
                    Problem(
                        str(path),
                        0,
                        "variants",
                        f"one of {', '.join(names)}",
                        ", ".join(unknown),
                        (
                            f"the spec as written is the run '{names[0]}' (label:); 'base' "
                            "is the untrained model, which evals score (on: [base])"
                            if "base" in unknown
                            else did_you_mean(unknown[0], names).strip()
                        ),
                    )
                ]
            )
        runs = [(n, s) for n, s in runs if n in only]
    return [
        (name, spec.model_copy(update={"train_seed": seed}) if spec.seeds else spec)
        for name, spec in runs
        for seed in spec.seeds or [None]
    ]
