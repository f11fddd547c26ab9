"""The spec as read: YAML with line numbers, `extends:` merged, CLI overrides applied.

Nothing here validates: `load.validate` does, and reports every problem with the file
and line `Raw.loc` keeps for each dotted path.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from ftlab.runner.registry import did_you_mean
from ftlab.runner.spec.errors import HIDDEN, Problem, SpecError, secret

PathT = tuple[str | int, ...]


@dataclass(frozen=True)
class Loc:
    file: str
    line: int  # 1-based; 0 = unknown


@dataclass
class Raw:
    """Unvalidated spec data plus where each dotted path came from."""

    data: dict[str, Any]
    locs: dict[PathT, Loc] = field(default_factory=dict)

    def loc(self, path: PathT) -> Loc:
        for end in range(len(path), -1, -1):
            if path[:end] in self.locs:
                return self.locs[path[:end]]
        return Loc("", 0)


# ---------------------------------------------------------------- reading YAML


MAX_NODES = 20_000  # values in one spec file after YAML aliases are expanded


class _TooBig(Exception):
    pass


def _plain(
    node: Any, file: str, path: PathT, locs: dict[PathT, Loc], budget: list[int] | None = None
) -> Any:
    """Turn ruamel's round-trip nodes into plain Python, recording line numbers. Aliases
    (`*x`) are expanded, within `MAX_NODES` values: an alias "bomb" (aliases of aliases
    of lists) stops here in milliseconds instead of expanding to gigabytes."""
    budget = budget if budget is not None else [MAX_NODES]
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooBig
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            sub = (*path, str(key))
            try:
                locs[sub] = Loc(file, node.lc.key(key)[0] + 1)  # type: ignore[attr-defined]
            except (AttributeError, KeyError, TypeError):
                locs[sub] = locs.get(path, Loc(file, 0))
            out[str(key)] = _plain(value, file, sub, locs, budget)
        return out
    if isinstance(node, list):
        items = []
        for i, value in enumerate(node):
            sub = (*path, i)
            try:
                locs[sub] = Loc(file, node.lc.item(i)[0] + 1)  # type: ignore[attr-defined]
            except (AttributeError, KeyError, TypeError, IndexError):
                locs[sub] = locs.get(path, Loc(file, 0))
            items.append(_plain(value, file, sub, locs, budget))
        return items
    if isinstance(node, str):
        return str(node)
    if isinstance(node, bool | int | float) or node is None:
        return node
    return str(node)  # dates and other scalars: keep their text


def read_yaml(path: Path) -> Raw:
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([Problem(file, 0, "", "an existing spec file", "no such file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([Problem(file, 0, "", "a readable UTF-8 file", str(exc))]) from None
    try:
        node = YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        what = " ".join(str(x) for x in (exc.context, exc.problem) if x)
        raise SpecError(
            [
                Problem(
                    file,
                    line,
                    "",
                    "valid YAML",
                    what or "a YAML syntax error",
                    "check indentation, colons and quoting on that line",
                )
            ]
        ) from None
    except (YAMLError, ValueError, TypeError, RecursionError, AssertionError) as exc:
        # AssertionError: ruamel's own checks, e.g. a `|` block scalar before a comment
        found = str(exc) or "YAML the reader cannot parse (a stray | or >, or a comment?)"
        raise SpecError([Problem(file, 0, "", "valid YAML", found)]) from None
    if node is None:
        node = {}
    if not isinstance(node, dict):
        raise SpecError(
            [
                Problem(
                    file, 1, "", "a mapping of keys (name:, model:, stages: …)", type(node).__name__
                )
            ]
        )
    locs: dict[PathT, Loc] = {(): Loc(file, 1)}
    try:
        data = _plain(node, file, (), locs)
    except RecursionError:
        raise SpecError([Problem(file, 0, "", "a spec nested less deeply", "too deep")]) from None
    except _TooBig:
        raise SpecError(
            [
                Problem(
                    file,
                    0,
                    "",
                    f"a spec of at most {MAX_NODES:,} values once YAML aliases are expanded",
                    "more (aliases of aliases multiply: an alias bomb?)",
                    "remove the &anchor/*alias chains; reuse whole specs with extends:",
                )
            ]
        ) from None
    return Raw(data, locs)


# ---------------------------------------------------------------- extends


def merge(base: Raw, child: Raw, path: PathT = ()) -> None:
    """Deep-merge `child` into `base` in place: mappings merge key by key; anything else —
    a list, a value, an explicit empty mapping (`variants: {}` drops inherited variants) —
    replaces what `base` had."""
    base_node = _get(base.data, path)
    child_node = _get(child.data, path)
    for key, value in child_node.items():
        sub = (*path, key)
        if value and isinstance(value, dict) and isinstance(base_node.get(key), dict):
            base.locs[sub] = child.locs.get(sub, base.loc(sub))
            merge(base, child, sub)
            continue
        for p in [p for p in base.locs if p[: len(sub)] == sub]:
            del base.locs[p]
        base_node[key] = copy.deepcopy(value)
        base.locs.update({p: loc for p, loc in child.locs.items() if p[: len(sub)] == sub})


def _get(data: Any, path: PathT) -> Any:
    for part in path:
        data = data[part]
    return data


def resolve(path: Path, _chain: tuple[Path, ...] = ()) -> Raw:
    """Read a spec file and everything it `extends:`, merged (this file wins)."""
    path = path.resolve()
    raw = read_yaml(path)  # cycles are caught at the extends: entry that closes them
    parents = raw.data.pop("extends", [])
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise SpecError(
            [
                Problem(
                    str(path),
                    raw.loc(("extends",)).line,
                    "extends",
                    "a relative path or a list of them",
                    repr(parents),
                )
            ]
        )
    merged = Raw({}, {(): Loc(str(path), 1)})
    for i, parent in enumerate(parents):
        target = (path.parent / parent).resolve()
        where = (str(path), raw.loc(("extends", i)).line, f"extends.{i}")
        if target in (*_chain, path):
            cycle = " → ".join(p.name for p in (*_chain, path, target))
            found = (
                "an extends chain without cycles",
                cycle,
                "remove one of the extends: entries",
            )
            raise SpecError([Problem(*where, *found)])
        if not target.is_file():
            missing = ("a spec file, relative to this one", parent, f"no file at {target}")
            raise SpecError([Problem(*where, *missing)])
        merge(merged, resolve(target, (*_chain, path)))
    merge(merged, raw)
    return merged


# ---------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b.c=value` → ("a.b.c", YAML-typed value)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        shown = HIDDEN if secret("", text) else text
        raise SpecError(
            [Problem("<command line>", 0, shown, "an override like a.b.c=value", shown)]
        )
    try:
        parsed = YAML(typ="safe").load(value) if value.strip() else ""
    except YAMLError as exc:
        raise SpecError(
            [
                Problem(
                    "<command line>",
                    0,
                    key,
                    "a YAML value",
                    HIDDEN if secret(key, value) else value,
                    str(exc).splitlines()[0],
                )
            ]
        ) from None
    return key.strip(), parsed


def apply_override(raw: Raw, dotted: str, value: Any, origin: Loc) -> PathT:
    """Set `dotted` (list items by index or by their `name`) to value; return the path."""
    node: Any = raw.data
    path: PathT = ()
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        key: str | int
        if isinstance(node, list):
            key = _list_index(node, part, dotted, origin)
        elif isinstance(node, dict):
            key = part
        else:
            raise SpecError(
                [
                    Problem(
                        origin.file,
                        origin.line,
                        ".".join(map(str, path)),
                        "a mapping or list to descend into",
                        repr(node),
                        f"cannot set '{dotted}'",
                    )
                ]
            )
        path = (*path, key)
        if last:
            node[key] = copy.deepcopy(value)
            for p in [p for p in raw.locs if p[: len(path)] == path]:
                del raw.locs[p]
            raw.locs[path] = origin
        else:
            if isinstance(node, dict) and not isinstance(node.get(key), dict | list):
                node[key] = {}
                raw.locs[path] = origin  # a key the override made up: its error points here
            node = node[key]
    return path


def _list_index(node: list[Any], part: str, dotted: str, origin: Loc) -> int:
    if part.lstrip("-").isdigit():
        index = int(part)
        if -len(node) <= index < len(node):
            return index % len(node)
        raise SpecError(
            [Problem(origin.file, origin.line, dotted, f"an index below {len(node)}", part)]
        )
    names = [item.get("name") for item in node if isinstance(item, dict)]
    if part in names:
        return names.index(part)
    raise SpecError(
        [
            Problem(
                origin.file,
                origin.line,
                dotted,
                f"a list index or one of the names {names}",
                part,
                did_you_mean(part, [str(n) for n in names]).strip(),
            )
        ]
    )


# ---------------------------------------------------------------- validation
