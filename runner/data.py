"""Datasets: read a file (or hub dataset), check every row, normalise, split reproducibly.

Every format is normalised to what trl trains on:
  messages / sharegpt / alpaca → {"messages": [{"role", "content"}, …]}
  prompt_completion            → {"prompt", "completion"}
  preference                   → {"prompt", "chosen", "rejected"}
  unpaired                     → {"prompt", "completion", "label"}
  prompts                      → {"prompt", …scalar columns kept for reward functions}
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftlab.runner.spec.schema import DataSource

ROLES = {"system", "user", "assistant", "tool"}
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "tool": "tool",
}
LOCAL_SUFFIXES = {".jsonl", ".json", ".csv", ".parquet"}


class DataError(Exception):
    """A dataset that cannot be used; names the file, the row and what was wrong."""

    exit_code = 2


@dataclass(frozen=True)
class Dataset:
    """A normalised dataset split reproducibly into train and validation rows."""

    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    content_hash: str  # of the normalised rows and the split: part of the stage hash
    report: list[dict[str, Any]] = field(default_factory=list)  # rows dropped per step


def load(source: DataSource, *, base_dir: Path, seed: int) -> Dataset:
    """Read, convert, check, normalise, clean and split one dataset.

    Rows sharing a prompt always land on the same side of the train/validation split.
    """
    from ftlab.runner import prefdata

    report = prefdata.Report()
    raw = list(_read(source, base_dir))
    try:
        if source.convert == "ratings_to_pairs":
            raw = prefdata.ratings_to_pairs(
                raw, pairs=source.pairs, min_margin=source.min_margin, report=report
            )
        elif source.convert == "pairs_to_unpaired":
            pairs = [(w, normalise("preference", r, w)) for w, r in raw]
            raw = prefdata.pairs_to_unpaired(prefdata.drop_identical(pairs, report), report)
    except prefdata.PrefDataError as exc:
        raise DataError(str(exc)) from None
    rows = [(where, normalise(source.format, row, where)) for where, row in raw]
    if source.format == "preference":
        rows = prefdata.drop_identical(rows, report)
    rows = prefdata.dedupe(rows, report)
    if not rows:
        raise DataError(f"{source.path}: no rows left; " + "; ".join(report.lines()))
    rng = random.Random(seed)
    groups: dict[str, list[int]] = {}
    for i, (_, row) in enumerate(rows):
        groups.setdefault(prefdata.group_key(row), []).append(i)
    keys = sorted(groups)
    rng.shuffle(keys)
    order = [i for k in keys for i in groups[k]]
    if source.max_rows:
        order = order[: source.max_rows]
    n_val = round(len(order) * source.val_fraction)
    if source.val_fraction > 0 and len(order) > 1:
        n_val = max(1, n_val)
    # extend the validation cut to the end of its last prompt group: no prompt leaks
    cut = n_val
    while 0 < cut < len(order) and prefdata.group_key(rows[order[cut]][1]) == prefdata.group_key(
        rows[order[cut - 1]][1]
    ):
        cut += 1
    val = [rows[i][1] for i in order[:cut]]
    train = [rows[i][1] for i in order[cut:]]
    digest = hashlib.sha256()
    digest.update(
        json.dumps(
            {"format": source.format, "seed": seed, "val": val, "train": train}, sort_keys=True
        ).encode()
    )
    return Dataset(train=train, val=val, content_hash=digest.hexdigest()[:16], report=report.steps)


def resolve_path(source: DataSource, base_dir: Path) -> Path | None:
    """The local file a source names (relative to the spec file), or None for a hub id."""
    path = Path(source.path).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    if path.suffix.lower() in LOCAL_SUFFIXES or path.exists():
        return path
    return None


def _read(source: DataSource, base_dir: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    path = resolve_path(source, base_dir)
    if path is None:
        yield from _read_hub(source)
        return
    if not path.is_file():
        raise DataError(f"{path}: no such data file (data paths are relative to the spec file)")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
                yield f"{path}:{n}", _mapping(row, f"{path}:{n}")
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of rows (or {{'data': [...]}})")
        for n, row in enumerate(data):
            yield f"{path}[{n}]", _mapping(row, f"{path}[{n}]")
    elif suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            for n, row in enumerate(csv.DictReader(f), 2):
                yield f"{path}:{n}", dict(row)
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for n, row in enumerate(pq.read_table(path).to_pylist()):
            yield f"{path} row {n}", row


def _read_hub(source: DataSource) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        import datasets

        ds = datasets.load_dataset(source.path, split=source.split)
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds; all mean "not here"
        raise DataError(
            f"{source.path}: not a local file, and loading it as a hub dataset failed "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            "Use a .jsonl/.json/.csv/.parquet path relative to the spec file, or make the "
            "hub reachable."
        ) from None
    for n, row in enumerate(ds):
        yield f"{source.path}[{source.split}][{n}]", dict(row)


def _mapping(row: Any, where: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object per row, found {type(row).__name__}")
    return row


def _text(row: dict[str, Any], key: str, where: str, fmt: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        found = "missing" if key not in row else f"{type(value).__name__} {value!r:.40}"
        raise DataError(
            f"{where}: format '{fmt}' needs a non-empty string '{key}', "
            f"found {found}. Keys in this row: {sorted(row)}"
        )
    return value


def _messages(msgs: Any, where: str, fmt: str) -> list[dict[str, str]]:
    if not isinstance(msgs, list) or not msgs:
        raise DataError(f"{where}: format '{fmt}' needs a non-empty list of messages")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise DataError(f"{where}: message {i} is not an object")
        if fmt == "sharegpt":
            role = SHAREGPT_ROLES.get(str(m.get("from")))
            content = m.get("value")
            if role is None:
                raise DataError(
                    f"{where}: message {i} has from={m.get('from')!r}; expected "
                    f"one of {sorted(SHAREGPT_ROLES)}"
                )
        else:
            role, content = m.get("role"), m.get("content")
            if role not in ROLES:
                raise DataError(
                    f"{where}: message {i} has role={role!r}; expected one of {sorted(ROLES)}"
                )
        if not isinstance(content, str):
            raise DataError(f"{where}: message {i} has no string content")
        out.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in out):
        raise DataError(f"{where}: the conversation has no assistant message to learn from")
    return out


def normalise(fmt: str, row: dict[str, Any], where: str) -> dict[str, Any]:
    """One row in `fmt` → the normalised row, or a DataError naming the row."""
    if fmt == "messages":
        return {"messages": _messages(row.get("messages"), where, fmt)}
    if fmt == "sharegpt":
        return {"messages": _messages(row.get("conversations"), where, fmt)}
    if fmt == "alpaca":
        instruction = _text(row, "instruction", where, fmt)
        extra = row.get("input") or ""
        user = f"{instruction}\n\n{extra}" if extra else instruction
        return {
            "messages": [
                {"role": "user", "content": user},
                {"role": "assistant", "content": _text(row, "output", where, fmt)},
            ]
        }
    if fmt == "prompt_completion":
        return {
            "prompt": _text(row, "prompt", where, fmt),
            "completion": _text(row, "completion", where, fmt),
        }
    if fmt == "preference":
        out = {k: _text(row, k, where, fmt) for k in ("prompt", "chosen", "rejected")}
        return out
    if fmt == "unpaired":
        label = row.get("label")
        if isinstance(label, str) and label.lower() in ("true", "false", "1", "0"):
            label = label.lower() in ("true", "1")
        if not isinstance(label, bool):
            raise DataError(f"{where}: format 'unpaired' needs a boolean 'label', found {label!r}")
        return {
            "prompt": _text(row, "prompt", where, fmt),
            "completion": _text(row, "completion", where, fmt),
            "label": label,
        }
    if fmt == "prompts":
        extra = {
            k: v
            for k, v in row.items()
            if k != "prompt" and isinstance(v, str | int | float | bool)
        }
        return {"prompt": _text(row, "prompt", where, fmt), **extra}
    raise DataError(f"{where}: unknown data format '{fmt}'")
