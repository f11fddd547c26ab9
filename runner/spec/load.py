"""Spec loading: YAML → `extends:` deep merge → CLI overrides → validation.

Every problem is collected and raised once as a `SpecError`, each naming the file, the
line, the dotted path, what was expected and what was found.
"""

from __future__ import annotations

import copy
import types
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from ftlab.runner.registry import did_you_mean
from ftlab.runner.spec import datapath
from ftlab.runner.spec.errors import HIDDEN, Problem, SpecError, secret
from ftlab.runner.spec.schema import Spec

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
    except (YAMLError, ValueError, TypeError, RecursionError) as exc:
        raise SpecError([Problem(file, 0, "", "valid YAML", str(exc))]) from None
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


def _merge(base: Raw, child: Raw, path: PathT = ()) -> None:
    """Deep-merge `child` into `base` in place: mappings merge key by key; anything else —
    a list, a value, an explicit empty mapping (`variants: {}` drops inherited variants) —
    replaces what `base` had."""
    base_node = _get(base.data, path)
    child_node = _get(child.data, path)
    for key, value in child_node.items():
        sub = (*path, key)
        if value and isinstance(value, dict) and isinstance(base_node.get(key), dict):
            base.locs[sub] = child.locs.get(sub, base.loc(sub))
            _merge(base, child, sub)
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
        _merge(merged, resolve(target, (*_chain, path)))
    _merge(merged, raw)
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


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class that owns the location `loc` in the schema."""
    current: Any = root
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            fields = {f.alias or n: f for n, f in current.model_fields.items()}
            if part not in fields:
                return None
            current = fields[part].annotation
        elif typing.get_origin(current) in (list, dict):
            current = typing.get_args(current)[-1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return annotation


def _problems(raw: Raw, exc: ValidationError, prefix: str) -> list[Problem]:
    problems = []
    for err in exc.errors():
        loc = _data_loc(raw.data, err["loc"])
        dotted = ".".join(map(str, loc))
        where = raw.loc(loc)
        found = _short(err.get("input"), loc)
        if err["type"] == "extra_forbidden" and loc:
            owner = _model_at(Spec, loc[:-1])
            allowed = sorted(f.alias or n for n, f in owner.model_fields.items()) if owner else []
            problems.append(
                Problem(
                    where.file,
                    where.line,
                    dotted,
                    f"one of the keys {', '.join(allowed)}",
                    f"unknown key '{loc[-1]}'",
                    did_you_mean(str(loc[-1]), allowed).strip(),
                    prefix,
                )
            )
        elif err["type"] == "missing" and loc:
            problems.append(
                Problem(
                    where.file,
                    where.line,
                    dotted,
                    "this required key",
                    "nothing",
                    f"add '{loc[-1]}:'",
                    prefix,
                )
            )
        else:
            msg = err["msg"].removeprefix("Value error, ")
            hint = ""
            if "Did you mean" in msg:
                msg, _, rest = msg.partition(" Did you mean")
                hint = "Did you mean" + rest
            problems.append(Problem(where.file, where.line, dotted, msg, found, hint, prefix))
    return problems


def _data_loc(data: Any, loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop pydantic's union tags (e.g. 'list[str]') from a loc; keep real keys."""
    out: list[Any] = []
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        elif isinstance(part, str) and ("[" in part or "-" in part) and out:
            continue  # a union member tag, not a key of the spec
        else:
            data = None
        out.append(part)
    return tuple(out)


def _short(value: Any, path: str | tuple[Any, ...] = ()) -> str:
    if secret(path, value) or (isinstance(value, dict | list) and secret(path, repr(value))):
        return HIDDEN  # never echo a key, even in an error
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _cross_check(raw: Raw, spec: Spec, prefix: str) -> list[Problem]:
    """Checks across fields: stage references, datasets, params, unique names."""
    from ftlab.runner.methods import METHODS

    problems: list[Problem] = []

    def add(path: PathT, expected: str, found: str, hint: str = "") -> None:
        where = raw.loc(path)
        problems.append(
            Problem(where.file, where.line, ".".join(map(str, path)), expected, found, hint, prefix)
        )

    for i, stage in enumerate(spec.stages):
        method = METHODS.get(stage.method)
        up = next((s for s in spec.stages if s.name == stage.from_), None)
        if stage.adapter_mode == "continue" and (
            up is None or METHODS.get(up.method).weights != "adapter" or method.weights != "adapter"
        ):
            add(
                ("stages", i, "adapter_mode"),
                "continue only from an upstream adapter "
                "stage (from: <a PEFT stage>) into an adapter method",
                f"continue (from: '{stage.from_}'"
                f"{f', a {up.method} stage' if up else ''}, method {stage.method})",
                "use adapter_mode: merge",
            )
        fmt = spec.data[stage.data].format if stage.data in spec.data else None
        if fmt is not None and fmt not in method.data_formats:
            add(
                ("stages", i, "data"),
                f"a dataset in one of the formats "
                f"{', '.join(method.data_formats)} for method {stage.method}",
                f"'{stage.data}' ({fmt})",
            )
        try:
            method.params_model.model_validate(stage.params)
        except ValidationError as exc:
            for p in _params_problems(exc, method.params_model, ("stages", i, "params")):
                add(*p)
        else:
            for where, *rest in method.check(stage, spec):
                add(("stages", i, *where), *rest)
        parallel = spec.resources.world_size > 1 or spec.resources.strategy != "ddp"
        if not method.distributed and parallel:
            add(
                ("stages", i, "method"),
                f"a method that trains across processes ({stage.method} trains on one)",
                f"{stage.method} with resources.processes × nodes > 1",
                "set resources.processes: 1 for this experiment, or use another method",
            )
    if spec.resources.nodes > 1 and not spec.resources.main_address:
        add(
            ("resources", "main_address"),
            "host:port of node 0 for a multi-node run",
            "nothing",
            "pass --main-address HOST:PORT (the same on every node)",
        )
    _check_evals(spec, add)
    _check_template(raw, spec, add)
    return problems


def _check_template(raw: Raw, spec: Spec, add: Any) -> None:
    """Each stage's method says whether the model's chat template can format what it
    trains on (`Method.template_problem`): said now, not at the stage's start."""
    from ftlab.runner import templates
    from ftlab.runner.methods import METHODS

    try:
        template = templates.for_model(spec.model.name, spec.model.chat_template)
    except templates.TemplateError as exc:
        add(("model", "chat_template"), "a chat template", str(exc))
        return
    if template is None:
        return
    said: set[str] = set()
    for i, stage in enumerate(spec.stages):
        problem = METHODS.get(stage.method).template_problem(stage, spec, template)
        if problem is not None and problem[2] not in said:  # once per distinct problem
            said.add(problem[2])
            where, *rest = problem
            add(("stages", i, *where), *rest)


def _stage_refs(raw: Raw, prefix: str) -> list[Problem]:
    """Stage names, `from:`, `data:` and reward-stage references, checked on the raw data:
    they are reported together with the schema's problems, not in a second pass."""
    problems: list[Problem] = []

    def add(path: PathT, expected: str, found: str, hint: str = "") -> None:
        where = raw.loc(path)
        problems.append(
            Problem(where.file, where.line, ".".join(map(str, path)), expected, found, hint, prefix)
        )

    stages = raw.data.get("stages")
    data = raw.data.get("data")
    declared = [str(k) for k in data] if isinstance(data, dict) else []
    seen: list[str] = []
    every = (
        [s.get("name") for s in stages if isinstance(s, dict)] if isinstance(stages, list) else []
    )
    for i, stage in enumerate(stages if isinstance(stages, list) else []):
        if not isinstance(stage, dict):
            continue
        name, from_, ds = stage.get("name"), stage.get("from") or "", stage.get("data", "sft")
        if isinstance(name, str) and name in seen:
            add(("stages", i, "name"), "a stage name not used before", name)
        if isinstance(from_, str) and from_ and from_ not in seen:
            later = from_ in every
            add(
                ("stages", i, "from"),
                f"an earlier stage ({', '.join(seen) or 'none'})",
                f"'{from_}' (a later stage)" if later else from_,
                f"stages run in order: move stage '{from_}' before '{name}'"
                if later
                else did_you_mean(from_, seen).strip(),
            )
        params = stage.get("params")
        rewards = params.get("rewards") if isinstance(params, dict) else None
        for j, reward in enumerate(rewards if isinstance(rewards, list) else []):
            ref = reward.get("params", {}).get("stage") if isinstance(reward, dict) else None
            if isinstance(ref, str) and ref not in seen:
                add(
                    ("stages", i, "params", "rewards", j),
                    f"a reward stage that comes earlier ({', '.join(seen) or 'none'})",
                    ref,
                    did_you_mean(ref, seen).strip(),
                )
        if isinstance(name, str):
            seen.append(name)
        if isinstance(ds, str) and isinstance(data, dict) and ds not in declared:
            add(
                ("stages", i, "data"),
                f"a dataset declared under data: ({', '.join(declared) or 'none declared'})",
                ds,
                did_you_mean(ds, declared).strip()
                or "declare it under data:, e.g. data: {sft: {path: data/x.jsonl}}",
            )
    return problems


def _params_problems(
    exc: ValidationError, model: type[BaseModel], at: PathT
) -> list[tuple[PathT, str, str, str]]:
    """A plugin's params errors as (path, expected, found, hint): an unknown key lists the
    known ones with a did-you-mean, as the schema's own errors do."""
    out = []
    for err in exc.errors():
        where = (*at, *err["loc"])
        if err["type"] == "extra_forbidden" and err["loc"]:
            owner = _model_at(model, tuple(err["loc"][:-1])) or model
            allowed = sorted(f.alias or n for n, f in owner.model_fields.items())
            key = str(err["loc"][-1])
            out.append(
                (
                    where,
                    f"one of the keys {', '.join(allowed)}",
                    f"unknown key '{key}'",
                    did_you_mean(key, allowed).strip(),
                )
            )
        else:
            msg = err["msg"].removeprefix("Value error, ")
            out.append((where, msg, _short(err.get("input"), where), ""))
    return out


def _check_evals(spec: Spec, add: Any) -> None:
    """Eval kinds, names, targets (`on:`), datasets and params."""
    from ftlab.evals import EVALS

    policy = spec.policy_stages()
    scorers = [s.name for s in spec.stages if s.name not in policy]
    keys: list[str] = []
    for i, ev in enumerate(spec.evals):
        if ev.kind not in EVALS:
            add(
                ("evals", i, "kind"),
                f"an eval kind ({', '.join(EVALS.names())})",
                ev.kind,
                did_you_mean(ev.kind, EVALS.names()).strip(),
            )
            continue
        if ev.key in keys:
            add(
                ("evals", i, "name"),
                "a name no other eval uses (results go to evals/<name>/)",
                ev.key,
                "give one of them a name: key",
            )
        keys.append(ev.key)
        options = ["last", "base", "all", *policy]
        for j, target in enumerate(ev.on):
            if target in scorers:
                add(
                    ("evals", i, "on", j),
                    "a model that generates text (last, base, all, or a policy stage)",
                    f"'{target}' (a {spec.stage(target).method} stage, which scores text)",
                    "a scoring stage reports its own accuracy in its stage summary",
                )
            elif target not in options:
                add(
                    ("evals", i, "on", j),
                    f"one of {', '.join(options)}",
                    target,
                    did_you_mean(target, options).strip(),
                )
        kind = EVALS.get(ev.kind)
        if kind.data_formats and not ev.data:
            add(
                ("evals", i, "data"),
                f"a dataset under data: in one of the formats {', '.join(kind.data_formats)}",
                "nothing",
                "add data: <name of a dataset>",
            )
        elif ev.data and ev.data not in spec.data:
            add(
                ("evals", i, "data"),
                f"a dataset declared under data: ({', '.join(spec.data) or 'none declared'})",
                ev.data,
                did_you_mean(ev.data, list(spec.data)).strip(),
            )
        elif ev.data and spec.data[ev.data].format not in kind.data_formats:
            add(
                ("evals", i, "data"),
                f"a dataset in one of the formats {', '.join(kind.data_formats)} "
                f"for eval kind {ev.kind}",
                f"'{ev.data}' ({spec.data[ev.data].format})",
            )
        elif ev.data and ev.split == "val" and not spec.data[ev.data].val_fraction:
            add(
                ("evals", i, "split"),
                f"a split that has rows: dataset '{ev.data}' has val_fraction 0, so no "
                "held-out rows",
                "val",
                f"set data.{ev.data}.val_fraction (e.g. 0.1), or split: all for a dataset "
                "kept only for evaluation",
            )
        try:
            kind.params_model.model_validate(ev.params)
        except ValidationError as exc:
            for p in _params_problems(exc, kind.params_model, ("evals", i, "params")):
                add(*p)
        else:
            for where, *rest in kind.check(ev.params, spec):
                add(("evals", i, "params", *where), *rest)


def _anchor_data_paths(raw: Raw, prefix: str) -> list[Problem]:
    """Make relative data paths absolute, relative to the file that declared them (the
    working directory for command-line overrides). A name that can only be a file
    (`datapath.looks_like_file`) must be an existing file of a type ftlab reads; any other
    name is a hub dataset id."""
    problems: list[Problem] = []
    data = raw.data.get("data")
    if not isinstance(data, dict):
        return problems
    for name, source in data.items():
        if not isinstance(source, dict) or not isinstance(source.get("path"), str):
            continue
        written = source["path"]
        path = Path(written).expanduser()
        where = raw.loc(("data", name, "path"))
        base = Path(where.file).parent if Path(where.file).is_file() else Path.cwd()
        candidate = path if path.is_absolute() else base / path
        if not candidate.exists() and not datapath.looks_like_file(written):
            continue  # a hub dataset id
        if candidate.exists():
            source["path"] = str(candidate.resolve())
        found_hint = _data_file_problem(candidate, written=written)
        if found_hint is not None:
            expected = f"an existing {datapath.EXPECTED} file (relative to {base})"
            problems.append(
                Problem(where.file, where.line, f"data.{name}.path", expected, *found_hint, prefix)
            )
    return problems + _anchor_reward_modules(raw, prefix) + _anchor_template(raw, prefix)


def _anchor_template(raw: Raw, prefix: str) -> list[Problem]:
    """`model.chat_template: x.jinja`: absolute, relative to the declaring file."""
    model = raw.data.get("model")
    if not isinstance(model, dict):
        return []
    value = model.get("chat_template")
    if not isinstance(value, str) or not value.endswith(".jinja"):
        return []
    where = raw.loc(("model", "chat_template"))
    base = Path(where.file).parent if Path(where.file).is_file() else Path.cwd()
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if path.is_file():
        model["chat_template"] = str(path.resolve())
        return []
    return [
        Problem(
            where.file,
            where.line,
            "model.chat_template",
            f"a template name or an existing .jinja file (relative to {base})",
            value,
            "fix the path",
            prefix,
        )
    ]


def _data_file_problem(candidate: Path, *, written: str) -> tuple[str, str] | None:
    """(found, fix) for a local data path ftlab cannot read, else None."""
    if candidate.is_dir():
        return f"'{written}': a directory", "name one file in it"
    unsupported = datapath.unsupported_type(candidate)
    if unsupported is not None:
        return f"'{written}': {unsupported}", datapath.type_hint(candidate, written=written)
    if not candidate.exists():
        return (
            written,
            "fix the path, or run `python experiments/data/generate.py` for shipped data",
        )
    return None


def _anchor_reward_modules(raw: Raw, prefix: str) -> list[Problem]:
    """`stages[*].params.reward_module`: absolute, relative to the declaring file."""
    problems: list[Problem] = []
    stages = raw.data.get("stages")
    for i, stage in enumerate(stages if isinstance(stages, list) else []):
        params = stage.get("params") if isinstance(stage, dict) else None
        if not isinstance(params, dict) or not isinstance(params.get("reward_module"), str):
            continue
        module = Path(params["reward_module"]).expanduser()
        where = raw.loc(("stages", i, "params", "reward_module"))
        base = Path(where.file).parent if Path(where.file).is_file() else Path.cwd()
        candidate = module if module.is_absolute() else base / module
        if candidate.is_file():
            params["reward_module"] = str(candidate.resolve())
        else:
            problems.append(
                Problem(
                    where.file,
                    where.line,
                    f"stages.{i}.params.reward_module",
                    f"a Python file that registers reward functions (relative to {base})",
                    params["reward_module"],
                    "fix the path",
                    prefix,
                )
            )
    return problems


def _no_secrets(raw: Raw, prefix: str) -> list[Problem]:
    """A value that looks like a key (sk-…, hf_…, Bearer …, user:key@ in a URL) anywhere in
    the spec: the spec is copied into every run, the index and the trackers."""
    problems: list[Problem] = []

    def walk(node: Any, path: PathT) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, (*path, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, (*path, i))
        elif isinstance(node, str) and secret("", node):
            where = raw.loc(path)
            problems.append(
                Problem(
                    where.file,
                    where.line,
                    ".".join(map(str, path)),
                    "no secrets in a spec (it is copied into every run, the index and W&B)",
                    HIDDEN,
                    "put the key in an environment variable; judges name it in api_key_env",
                    prefix,
                )
            )

    walk(raw.data, ())
    return problems


def validate(raw: Raw, prefix: str = "") -> Spec:
    """Validate merged data into a Spec, or raise one SpecError with every problem."""
    secrets_found = _no_secrets(raw, prefix)
    if secrets_found:  # nothing else is checked (or echoed) until they are gone
        raise SpecError(secrets_found)
    path_problems = _anchor_data_paths(raw, prefix) + _stage_refs(raw, prefix)
    try:
        spec = Spec.model_validate(raw.data)
    except ValidationError as exc:
        raise SpecError(path_problems + _problems(raw, exc, prefix)) from None
    problems = path_problems + _cross_check(raw, spec, prefix)
    if problems:
        raise SpecError(problems)
    return spec


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
    """`base` and every variant, validated; every problem of the file raised at once, each
    reported once with the runs it affects."""
    runs: list[tuple[str, Spec]] = []
    found: dict[Problem, list[str]] = {}  # problem (without context) → runs it affects
    names = ["base"]
    try:
        runs.append(("base", validate(raw)))
    except SpecError as exc:
        for p in exc.problems:
            found.setdefault(replace(p, context=""), []).append("base")
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
    for p in _space_problems(raw, runs[0][1] if runs and runs[0][0] == "base" else None):
        if replace(p, context="") not in found:
            problems.append(p)
    if problems:
        raise SpecError(problems)
    return runs


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
    if affected == ["base"]:
        return "run base (the spec as written; its variants override this key)"
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
    _merge(raw, Raw({k: v for k, v in extra.data.items()}, extra.locs))
    return validate(raw)


def variant_raw(raw: Raw, name: str, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Apply variant `name`'s overrides to a copy of `raw`, then the command line's
    `overrides` (the command line wins over the spec and its variants), and validate."""
    prefix = f"variant '{name}'"
    if name == "base":
        raise SpecError(
            [
                Problem(
                    raw.loc(("variants", name)).file,
                    raw.loc(("variants", name)).line,
                    "variants.base",
                    "a variant name other than 'base'",
                    "base",
                    "'base' is the run of the spec as written; rename the variant",
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
                    _short(changes, ("variants", name)),
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
    """The runs a spec file declares: `base` plus one per variant (filtered by `only`)."""
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
                        did_you_mean(unknown[0], names).strip(),
                    )
                ]
            )
        runs = [(n, s) for n, s in runs if n in only]
    return runs
