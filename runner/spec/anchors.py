"""Paths a spec names (data files, chat templates, reward modules), made absolute
relative to the file that declared them; and no secret written into a spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftlab.runner.spec import datapath
from ftlab.runner.spec.datapath import user_path
from ftlab.runner.spec.errors import HIDDEN, Problem, secret
from ftlab.runner.spec.raw import PathT, Raw


def anchor_data_paths(raw: Raw, prefix: str) -> list[Problem]:
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
        path = user_path(written)
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
    return (
        problems
        + rubric_files(raw, prefix)
        + anchor_reward_modules(raw, prefix)
        + anchor_template(raw, prefix)
        + anchor_plugins(raw, prefix)
    )


def rubric_files(raw: Raw, prefix: str) -> list[Problem]:
    """`data.<name>.rubric` and a judge eval's `params.rubric` name a rubric file that
    exists (a name under `rubrics/` next to the spec, or a path), found before training."""
    named: list[tuple[PathT, Any]] = []
    for name, source in (raw.data.get("data") or {}).items():
        if isinstance(source, dict) and "rubric" in source:
            named.append((("data", name, "rubric"), source["rubric"]))
    for i, ev in enumerate(raw.data.get("evals") or []):
        params = ev.get("params") if isinstance(ev, dict) else None
        if isinstance(params, dict) and "rubric" in params:
            named.append((("evals", i, "params", "rubric"), params["rubric"]))
    problems = []
    for path, value in named:
        if not isinstance(value, str) or not value:
            continue  # the schema reports it
        from ftlab.evals.base import EvalError
        from ftlab.evals.judge_prompts import rubric_text

        where = raw.loc(path)
        base = Path(where.file).parent if Path(where.file).is_file() else Path.cwd()
        dotted = ".".join(str(p) for p in path)
        try:
            rubric_text(value, base)
        except EvalError as exc:
            expected = (
                f"a rubric: a name under {base / 'rubrics'}/ (`support_reply` reads "
                "rubrics/support_reply.yaml) or a path to a rubric file"
            )
            problems.append(
                Problem(where.file, where.line, dotted, expected, value, str(exc), prefix)
            )
    return problems


def anchor_template(raw: Raw, prefix: str) -> list[Problem]:
    """`model.chat_template: x.jinja`: absolute, relative to the declaring file."""
    model = raw.data.get("model")
    if not isinstance(model, dict):
        return []
    value = model.get("chat_template")
    if not isinstance(value, str) or not value.endswith(".jinja"):
        return []
    where = raw.loc(("model", "chat_template"))
    base = Path(where.file).parent if Path(where.file).is_file() else Path.cwd()
    path = user_path(value)
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


def anchor_plugins(raw: Raw, prefix: str) -> list[Problem]:
    """`plugins:` files: absolute, relative to the declaring file; they must exist."""
    from ftlab.runner.plugins import is_file

    problems: list[Problem] = []
    entries = raw.data.get("plugins")
    for i, entry in enumerate(entries if isinstance(entries, list) else []):
        if not isinstance(entry, str) or not is_file(entry):
            continue
        where = raw.loc(("plugins", i))
        base = Path(where.file).parent if Path(where.file).is_file() else Path.cwd()
        candidate = user_path(entry)
        candidate = candidate if candidate.is_absolute() else base / candidate
        if candidate.is_file():
            entries[i] = str(candidate.resolve())
        else:
            problems.append(
                Problem(
                    where.file,
                    where.line,
                    f"plugins.{i}",
                    f"a Python file of plugins (relative to {base})",
                    entry,
                    "fix the path, or give an importable module name",
                    prefix,
                )
            )
    return problems


def anchor_reward_modules(raw: Raw, prefix: str) -> list[Problem]:
    """`stages[*].params.reward_module`: absolute, relative to the declaring file."""
    problems: list[Problem] = []
    stages = raw.data.get("stages")
    for i, stage in enumerate(stages if isinstance(stages, list) else []):
        params = stage.get("params") if isinstance(stage, dict) else None
        if not isinstance(params, dict) or not isinstance(params.get("reward_module"), str):
            continue
        module = user_path(params["reward_module"])
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


def no_secrets(raw: Raw, prefix: str) -> list[Problem]:
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
                    "put the user and password in MLFLOW_TRACKING_USERNAME / "
                    "MLFLOW_TRACKING_PASSWORD, not the URI"
                    if path[:2] == ("tracking", "mlflow")
                    else "put the key in an environment variable; judges name it in api_key_env",
                    prefix,
                )
            )

    walk(raw.data, ())
    return problems
