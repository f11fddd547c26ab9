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
import io
import json
import random
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftlab.runner.spec.datapath import (
    EXPECTED,
    looks_like_file,
    type_hint,
    unsupported_type,
    user_path,
)
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


def load(
    source: DataSource,
    *,
    base_dir: Path,
    seed: int,
    sources: Mapping[str, DataSource] | None = None,
    name: str = "",
) -> Dataset:
    """Read, convert, check, normalise, filter and split one dataset; a mixture draws
    from its `sources` (the spec's `data:`), each loaded as its own dataset.

    Rows sharing a prompt always land on the same side of the train/validation split.
    """
    from ftlab.runner import prefdata, recipes

    if source.mix:
        parts = {
            p.source: load((sources or {})[p.source], base_dir=base_dir, seed=seed)
            for p in source.mix
        }
        train, val, digest, steps = recipes.mix(name, source, parts, seed=seed)
        return Dataset(train=train, val=val, content_hash=digest, report=steps)
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
    # pairs_to_judge reads and splits preference pairs; the judge rows are made per side
    read_as = "preference" if source.convert == "pairs_to_judge" else source.format
    rows = [(where, normalise(read_as, row, where)) for where, row in raw]
    if source.system_prompt:
        rows = [(where, with_system(row, source.system_prompt)) for where, row in rows]
    if read_as == "preference":
        rows = prefdata.drop_identical(rows, report)
    rows = recipes.apply_filters(prefdata.dedupe(rows, report), source.filters, report)
    if not rows:
        raise DataError(f"{source.path}: no rows left; " + "; ".join(report.lines()))
    val, train = _split(rows, source, seed)
    if source.convert == "pairs_to_judge":
        from ftlab.evals.judge_prompts import judge_conversations, rubric_text

        rubric = rubric_text(source.rubric, base_dir)
        val, train = judge_conversations(val, rubric), judge_conversations(train, rubric)
    digest = hashlib.sha256()
    digest.update(
        json.dumps(
            {
                "format": source.format,
                "seed": seed,
                "overlong": source.overlong,  # what the stages do with rows past max_length
                "val": val,
                "train": train,
            },
            sort_keys=True,
        ).encode()
    )
    return Dataset(train=train, val=val, content_hash=digest.hexdigest()[:16], report=report.steps)


def _split(
    rows: list[tuple[str, dict[str, Any]]], source: DataSource, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(validation, train): prompt groups shuffled with the seed, cut by val_fraction;
    rows sharing a prompt always on the same side."""
    from ftlab.runner import prefdata

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
    return val, train


def with_system(row: dict[str, Any], text: str) -> dict[str, Any]:
    """`data.<name>.system_prompt`: first in a conversation that has no system turn; a
    `system` field for rows whose prompt is a string (see `chat_prompt`)."""
    if "messages" in row:
        msgs = row["messages"]
        if msgs and msgs[0]["role"] == "system":
            return row
        return {**row, "messages": [{"role": "system", "content": text}, *msgs]}
    return row if row.get("system") else {**row, "system": text}


def chat_prompt(row: dict[str, Any]) -> list[dict[str, str]]:
    """A string-prompt row as chat turns: its `system` message, if any, then the user's."""
    system = row.get("system")
    head = [{"role": "system", "content": system}] if isinstance(system, str) and system else []
    return [*head, {"role": "user", "content": str(row["prompt"])}]


def resolve_path(source: DataSource, base_dir: Path) -> Path | None:
    """The local file a source names (relative to the spec file), or None for a hub id."""
    path = user_path(source.path)
    if not path.is_absolute():
        path = base_dir / path
    if path.exists() or looks_like_file(source.path):
        return path
    return None


def _read(source: DataSource, base_dir: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    path = resolve_path(source, base_dir)
    if path is None:
        yield from _read_hub(source)
        return
    if path.is_dir():
        raise DataError(f"{path}: a directory; name one {EXPECTED} file in it")
    unsupported = unsupported_type(path)
    if unsupported is not None:
        hint = type_hint(path, written=source.path)
        raise DataError(f"{path}: {unsupported} (expected {EXPECTED}). {hint}")
    if not path.is_file():
        raise DataError(f"{path}: no such data file (data paths are relative to the spec file)")
    yield from READERS[path.suffix.lower()](path)


def _text_of(path: Path) -> str:
    """The file as UTF-8 text (a leading byte-order mark dropped), or a DataError naming
    the line of the first byte that is not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        text = exc.object  # positions count from after a byte-order mark
        line = text.count(b"\n", 0, exc.start) + 1
        column = exc.start - text.rfind(b"\n", 0, exc.start)
        raise DataError(
            f"{path}:{line}: not UTF-8 text (byte 0x{text[exc.start]:02x} at byte {column} of "
            "the line). Save the file as UTF-8, e.g. "
            f"`iconv -f latin1 -t utf-8 {path.name} > fixed{path.suffix}`"
        ) from None


def _parse_json(text: str, where: str, *, line: int | None = None) -> Any:
    """json.loads, with the file and line in every error (`line` None: the whole file)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        at = f"{where}:{line if line is not None else exc.lineno}"
        raise DataError(f"{at}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        at = where if line is None else f"{where}:{line}"
        raise DataError(
            f"{at}: JSON nested too deeply to read (Python's parser stops near "
            f"{sys.getrecursionlimit()} levels of [ and {{); flatten the rows"
        ) from None


def _read_jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for n, line in enumerate(_text_of(path).split("\n"), 1):
        if line.strip():
            yield f"{path}:{n}", _mapping(_parse_json(line, str(path), line=n), f"{path}:{n}")


def _read_json(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    rows = _parse_json(_text_of(path), str(path))
    if isinstance(rows, dict) and isinstance(rows.get("data"), list):
        rows = rows["data"]
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON list of rows (or {{'data': [...]}})")
    for n, row in enumerate(rows):
        yield f"{path}[{n}]", _mapping(row, f"{path}[{n}]")


def _read_csv(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Rows under the header, each named by the physical line it starts on (a quoted field
    may span lines)."""
    reader = csv.reader(io.StringIO(_text_of(path), newline=""))
    try:
        header = next(reader, None)
        while header is not None:
            start = reader.line_num + 1
            record = next(reader, None)
            if record is None:
                return
            if not record:
                continue  # a blank line
            if len(record) > len(header):
                raise DataError(
                    f"{path}:{start}: {len(record)} fields, the header has {len(header)}; "
                    "quote fields that hold commas"
                )
            padded = [*record, *[None] * (len(header) - len(record))]  # short rows: None
            yield f"{path}:{start}", dict(zip(header, padded, strict=True))
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: not valid CSV ({exc})") from None


def _read_parquet(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise DataError(
            f"{path}: not a readable Parquet file ({type(exc).__name__}: {first}); "
            "write it again (pandas `df.to_parquet`, pyarrow `pq.write_table`) or use .jsonl"
        ) from None
    for n, row in enumerate(rows):
        yield f"{path} row {n}", row


READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}


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
