"""Checks across fields, after the schema: stage references, datasets, plugins' params
and cross-checks (each plugin's own `check`), eval targets, the chat template — each
problem with the file, line and dotted path of its cause."""

from __future__ import annotations

import re
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from ftlab.runner.registry import did_you_mean
from ftlab.runner.spec.errors import HIDDEN, Problem, secret
from ftlab.runner.spec.raw import PathT, Raw
from ftlab.runner.spec.schema import Spec


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class that owns the location `loc` in the schema."""
    current: Any = root
    for part in loc:
        members = _members(current)
        if len(members) > 1:  # a tagged union (filters): pydantic's loc names the member
            tagged = [m for m in members if part in _tags(m)]
            if tagged:
                current = tagged[0]
                continue
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


def _members(annotation: Any) -> list[Any]:
    """The pydantic models of a (possibly Annotated) union."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        return [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
    return []


def _tags(model: Any) -> tuple[Any, ...]:
    field = model.model_fields.get("kind")
    return typing.get_args(field.annotation) if field is not None else ()


def _unwrap(annotation: Any) -> Any:
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return annotation


def schema_problems(raw: Raw, exc: ValidationError, prefix: str) -> list[Problem]:
    problems = []
    for err in exc.errors():
        loc = _data_loc(raw.data, err["loc"])
        dotted = ".".join(map(str, loc))
        where = raw.loc(loc)
        found = short(err.get("input"), loc)
        if err["type"] == "union_tag_invalid":
            tags = [t.strip(" '") for t in str(err["ctx"]["expected_tags"]).split(",")]
            tag = str(err["ctx"]["tag"])
            problems.append(
                Problem(
                    where.file,
                    where.line,
                    f"{dotted}.{err['ctx']['discriminator'].strip(chr(39))}",
                    f"one of {', '.join(tags)}",
                    tag,
                    did_you_mean(tag, tags).strip(),
                    prefix,
                )
            )
        elif err["type"] == "extra_forbidden" and loc:
            owner = _model_at(Spec, tuple(err["loc"][:-1])) or _model_at(Spec, loc[:-1])
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
            else:
                hint = _literal_hint(err)
            problems.append(Problem(where.file, where.line, dotted, msg, found, hint, prefix))
    return problems


def _data_loc(data: Any, loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop pydantic's union tags (e.g. 'list[str]') from a loc; keep real keys."""
    out: list[Any] = []
    for i, part in enumerate(loc):
        if isinstance(data, dict) and part not in data and i + 1 < len(loc) and loc[i + 1] in data:
            continue  # a tagged union's member name (a filter's kind), not a key
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


def short(value: Any, path: str | tuple[Any, ...] = ()) -> str:
    if secret(path, value) or (isinstance(value, dict | list) and secret(path, repr(value))):
        return HIDDEN  # never echo a key, even in an error
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def cross_check(raw: Raw, spec: Spec, prefix: str) -> list[Problem]:
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
        _plugin_problems(method, stage.params, ("stages", i), add, stage, spec)
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
    _check_snapshots(spec, add)
    _check_template(raw, spec, add)
    _check_mixes(spec, add)
    return problems


def _check_mixes(spec: Spec, add: Any) -> None:
    """A mixture's sources: declared datasets (not mixtures) of the mixture's format."""
    for name, ds in spec.data.items():
        for j, part in enumerate(ds.mix):
            at = ("data", name, "mix", j, "source")
            src = spec.data.get(part.source)
            if src is None or src.mix:
                files = [n for n, d in spec.data.items() if not d.mix]
                add(
                    at,
                    f"a dataset declared under data: that is a file ({', '.join(files)})",
                    part.source + (" (a mix itself)" if src is not None else ""),
                    did_you_mean(part.source, files).strip(),
                )
            elif src.format != ds.format:
                add(
                    at,
                    f"a dataset in the mix's format {ds.format}",
                    f"'{part.source}' ({src.format})",
                    "mix datasets of one format (a source's convert: can produce it)",
                )


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


def stage_refs(raw: Raw, prefix: str) -> list[Problem]:
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
            implicit = "data" not in stage
            add(
                ("stages", i) if implicit else ("stages", i, "data"),
                f"a dataset declared under data: ({', '.join(declared) or 'none declared'})",
                f"{ds} (the default: the stage names no data:)" if implicit else ds,
                (f"add data: {declared[0]} to the stage" if implicit and declared else "")
                or did_you_mean(ds, declared).strip()
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
            out.append((where, msg, short(err.get("input"), where), _literal_hint(err)))
    return out


def _literal_hint(err: Any) -> str:
    """ "Did you mean 'dr_grpo'?" for a misspelt choice of a fixed set."""
    if err["type"] != "literal_error" or not isinstance(err.get("input"), str):
        return ""
    options = re.findall(r"'([^']*)'", str(err["ctx"]["expected"]))
    return did_you_mean(err["input"], options).strip()


def _check_evals(spec: Spec, add: Any) -> None:
    """Eval kinds, names, targets (`on:`), datasets and params."""
    from ftlab.evals import EVALS

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
        _eval_targets(spec, i, ev, add)
        kind = EVALS.get(ev.kind)
        _eval_data(spec, i, ev, kind, add)
        _plugin_problems(kind, ev.params, ("evals", i), add, ev.params, spec)


def _check_snapshots(spec: Spec, add: Any) -> None:
    """`every:` evaluates a trained stage; `select:` names such an eval's metric."""
    from ftlab.runner.evaluate import targets
    from ftlab.runner.snapshots import select_eval

    stages = {s.name: s for s in spec.stages}
    for i, ev in enumerate(spec.evals):
        on = [t for t in targets(spec, ev) if t in stages] if ev.every else []
        if ev.every and not on:
            add(
                ("evals", i, "every"),
                "an eval that runs on a trained stage (on: last, or a stage's name)",
                f"every: {ev.every} with on: {ev.on}",
                "add the stage to on:, or drop every:",
            )
        for t in [t for t in on if stages[t].method == "ppo"][:1]:
            add(
                ("evals", i, "every"),
                "stages a trl trainer trains (ppo is ftlab's own loop: no snapshots)",
                f"every: {ev.every} on stage {t} (ppo)",
                "evaluate the ppo stage after training: drop every:",
            )
    for i, st in enumerate(spec.stages):
        if st.select is None:
            continue
        ev = select_eval(spec, st)
        options = [e.key for e in spec.evals if e.every and st.name in targets(spec, e)]
        if ev is None or ev.key not in options:
            head = ev.key if ev else st.select.metric.split(".")[0]
            add(
                ("stages", i, "select", "metric"),
                "<eval>.<metric> of an eval with every: that runs on this stage"
                + (f" ({', '.join(options)})" if options else ""),
                st.select.metric,
                f"give eval '{ev.key}' every: N, with {st.name} (or last) among its on: models"
                if ev
                else did_you_mean(head, options).strip()
                or f"give an eval every: N and on: [{st.name}] (or last)",
            )


def _plugin_problems(
    plugin: Any, params: dict[str, Any], at: PathT, add: Any, *check_args: Any
) -> None:
    """A method's or eval kind's `params:` against its params model, then (when they are
    valid) its own cross-checks, whose paths are under the plugin's entry (`at`)."""
    try:
        plugin.params_model.model_validate(params)
    except ValidationError as exc:
        for p in _params_problems(exc, plugin.params_model, (*at, "params")):
            add(*p)
    else:
        for where, *rest in plugin.check(*check_args):
            add((*at, *where), *rest)


def _eval_targets(spec: Spec, i: int, ev: Any, add: Any) -> None:
    policy = spec.policy_stages()
    options = ["last", "base", "all", *policy]
    for j, target in enumerate(ev.on):
        if target in {s.name for s in spec.stages} and target not in policy:
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


def _eval_data(spec: Spec, i: int, ev: Any, kind: Any, add: Any) -> None:
    formats = ", ".join(kind.data_formats)
    if kind.data_formats and not ev.data:
        add(
            ("evals", i, "data"),
            f"a dataset under data: in one of the formats {formats}",
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
            f"a dataset in one of the formats {formats} for eval kind {ev.kind}",
            f"'{ev.data}' ({spec.data[ev.data].format})",
        )
    elif ev.data and ev.split == "val" and not spec.data[ev.data].val_fraction:
        add(
            ("evals", i, "split"),
            f"a split that has rows: dataset '{ev.data}' has val_fraction 0, so no held-out rows",
            "val",
            f"set data.{ev.data}.val_fraction (e.g. 0.1), or split: all for a dataset "
            "kept only for evaluation",
        )
