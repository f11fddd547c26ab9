"""The `search:` block: its parameters, checked against the spec by `ftlab validate` and
before a study starts (a typo costs nothing), and a trial's sampled values → spec
overrides. Optuna's side (distributions, sampling) is `ftlab.sweeps.space`."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any

from ftlab.runner.spec.errors import Problem, SpecError
from ftlab.runner.spec.load import Loc, Raw, apply_override, validate
from ftlab.runner.spec.schema import Spec


@dataclass(frozen=True)
class Param:
    path: str  # dotted spec path
    kind: str  # float | int | categorical | fixed
    low: Any = None
    high: Any = None
    log: bool = False
    step: Any = None
    choices: tuple[Any, ...] = ()
    value: Any = None
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # (path, allowed values)

    def representative(self) -> Any:
        if self.kind == "categorical":
            return self.choices[0]
        if self.kind == "fixed":
            return self.value
        return self.low

    def examples(self) -> list[Any]:
        """Values to validate the spec with: every choice, both ends of a range."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "fixed":
            return [self.value]
        return [self.low, self.high]


def parse(spec: Spec | None, raw: Raw) -> list[Param]:
    """The search space, or a SpecError naming each bad entry's line. `spec`: the spec
    as written, validated (None when it has problems of its own: `when:` paths are then
    checked against the space alone)."""
    problems: list[Problem] = []
    params: list[Param] = []

    def bad(key: str, expected: str, found: Any, hint: str = "") -> None:
        where = raw.loc(("search", "space", key))
        problems.append(
            Problem(where.file, where.line, f"search.space.{key}", expected, repr(found), hint)
        )

    search = raw.data.get("search")
    space = search.get("space") if isinstance(search, dict) else None
    for key, entry in (space if isinstance(space, dict) else {}).items():
        param = _param(key, entry)
        if isinstance(param, Param):
            params.append(param)
        else:
            bad(key, *param)
    if problems:
        raise SpecError(problems)
    paths = [p.path for p in params]
    for p in params:
        for other, _ in p.when:
            if other not in paths and (spec is None or _lookup(spec, other) is _MISSING):
                bad(p.path, "a `when:` path that is in the space or the spec", other)
    if problems:
        raise SpecError(problems)
    _check_paths(raw, params)
    return params


def _param(key: str, entry: Any) -> Param | tuple[str, Any]:
    """One entry of the space, or (what was expected, what was found)."""
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    if isinstance(entry, dict) and "when" in entry:
        cond = entry["when"]
        if not isinstance(cond, dict) or not cond:
            return "when: {other.path: value or [values]}", cond
        when = tuple((str(k), tuple(v) if isinstance(v, list) else (v,)) for k, v in cond.items())
        entry = {k: v for k, v in entry.items() if k != "when"}
    if isinstance(entry, dict) and set(entry) == {"value"}:  # a fixed value, even a list
        return Param(key, "fixed", value=entry["value"], when=when)
    if isinstance(entry, list) or (isinstance(entry, dict) and set(entry) == {"choices"}):
        choices = entry if isinstance(entry, list) else entry["choices"]
        if not choices:
            return "a non-empty list of choices", choices
        return Param(key, "categorical", choices=tuple(choices), when=when)
    if isinstance(entry, dict):
        return _range(key, entry, when)
    return Param(key, "fixed", value=entry, when=when)


def _range(key: str, entry: dict[str, Any], when: Any) -> Param | tuple[str, Any]:
    """`{low, high}` with an optional `log` or `step`, as Optuna takes them."""
    extra = set(entry) - {"low", "high", "log", "step"}
    if extra or "low" not in entry or "high" not in entry:
        return "{low, high} with optional log, step (or a list of choices)", entry
    low, high = entry["low"], entry["high"]
    if not all(isinstance(v, int | float) for v in (low, high)) or low >= high:
        return "numbers with low < high", f"low={low}, high={high}"
    is_int = all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high))
    if entry.get("log") and low <= 0:
        return "low > 0 for a log scale", low
    step = entry.get("step")
    if step is not None and (
        not isinstance(step, int | float)
        or isinstance(step, bool)
        or not 0 < step <= high - low
        or (is_int and not isinstance(step, int))
    ):
        return f"a step > 0 and at most high - low ({high - low})", step
    if step is not None and entry.get("log"):
        return "either log or step (Optuna takes one or the other)", entry
    return Param(
        key,
        "int" if is_int else "float",
        low=low,
        high=high,
        log=bool(entry.get("log", False)),
        step=step,
        when=when,
    )


_MISSING = object()


def _lookup(spec: Spec, dotted: str) -> Any:
    node: Any = spec.model_dump(by_alias=True)
    for part in dotted.split("."):
        if isinstance(node, list):
            named = [x for x in node if isinstance(x, dict) and x.get("name") == part]
            if named:
                node = named[0]
            elif part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return _MISSING
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return _MISSING
    return node


def trial_raw(raw: Raw, values: dict[str, Any], origin: dict[str, Loc]) -> Raw:
    """A copy of the spec's raw data with the sampled values applied (variants and the
    search block dropped: a trial is one plain run)."""
    out = Raw(copy.deepcopy(raw.data), dict(raw.locs))
    out.data["variants"] = {}
    for path, value in values.items():
        apply_override(out, path, value, origin.get(path, Loc("<search.space>", 0)))
    return out


def _check_paths(raw: Raw, params: list[Param]) -> None:
    """Every value each parameter can take must give a valid spec (checked one parameter
    at a time, the others at their first value): a typo fails before any trial runs."""
    origin = {p.path: raw.loc(("search", "space", p.path)) for p in params}
    base = {p.path: p.representative() for p in params if not p.when}
    problems: list[Problem] = []
    for p in params:
        for value in p.examples():
            values = {**base, p.path: value}
            try:
                validate(trial_raw(raw, values, origin), prefix=f"search.space.{p.path}={value!r}")
            except SpecError as exc:
                seen = {replace(q, context="") for q in problems}
                problems += [q for q in exc.problems if replace(q, context="") not in seen]
    if problems:
        raise SpecError(problems)


def active(param: Param, values: dict[str, Any], spec: Spec) -> bool:
    """Whether a conditional parameter applies given the values sampled so far."""
    for path, allowed in param.when:
        current = values.get(path, _lookup(spec, path))
        if current not in allowed:
            return False
    return True
