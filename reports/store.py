"""The DuckDB index over run directories (`<runs>/ftlab.duckdb`).

Run directories are the source of truth; the index is rebuilt or updated from them
idempotently (delete-then-insert by run id). DuckDB allows one process to hold the file,
and a second fails at once (even read-only), so every access takes a lock file beside
the database first: writers exclusively, readers shared, both waiting their turn with a
timeout instead of failing. Connections are opened per operation and closed at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ftlab.reports import rows as dirrows
from ftlab.reports.rows import LEGACY_ITEM_SCORES

DB_NAME = "ftlab.duckdb"
SCHEMA_VERSION = 5
# columns added after a table first shipped (idempotent; run on every writing connection)
RUN_NOTES = ("tags VARCHAR", "note VARCHAR", "archived BOOLEAN")  # `ftlab runs tag|note|archive`
MIGRATIONS = (
    "ALTER TABLE runs ADD COLUMN IF NOT EXISTS study VARCHAR",
    "ALTER TABLE runs ADD COLUMN IF NOT EXISTS trial BIGINT",
    *(f"ALTER TABLE runs ADD COLUMN IF NOT EXISTS {c}" for c in RUN_NOTES),
    "ALTER TABLE eval_results ADD COLUMN IF NOT EXISTS score VARCHAR",
    "UPDATE eval_results SET score = coalesce(map_extract(MAP {"
    + ", ".join(f"'{k}': '{v}'" for k, v in LEGACY_ITEM_SCORES.items())
    + "}, metric)[1], metric) WHERE score IS NULL",
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, experiment VARCHAR, variant VARCHAR, state VARCHAR,
    created DOUBLE, finished DOUBLE, wall_time_s DOUBLE, model VARCHAR, seed BIGINT,
    spec_file VARCHAR, run_dir VARCHAR, spec_json VARCHAR, error VARCHAR, study VARCHAR,
    trial BIGINT, tags VARCHAR, note VARCHAR, archived BOOLEAN
);
CREATE TABLE IF NOT EXISTS stages (
    run_id VARCHAR, stage VARCHAR, position INTEGER, method VARCHAR, state VARCHAR,
    hash VARCHAR, reused_from VARCHAR, trainable_params BIGINT, total_params BIGINT,
    steps BIGINT, train_loss DOUBLE, eval_loss DOUBLE, initial_eval_loss DOUBLE,
    tokens_per_epoch BIGINT, precision VARCHAR, wall_time_s DOUBLE, peak_memory_mb DOUBLE,
    artifact VARCHAR, summary_json VARCHAR
);
CREATE TABLE IF NOT EXISTS step_metrics (
    run_id VARCHAR, stage VARCHAR, step BIGINT, epoch DOUBLE, name VARCHAR, value DOUBLE,
    time DOUBLE
);
CREATE TABLE IF NOT EXISTS eval_results (
    run_id VARCHAR, eval VARCHAR, kind VARCHAR, target VARCHAR, is_last BOOLEAN,
    metric VARCHAR, value DOUBLE, ci_low DOUBLE, ci_high DOUBLE, n BIGINT, headline BOOLEAN,
    higher_is_better BOOLEAN, cached_from VARCHAR, score VARCHAR
);
CREATE TABLE IF NOT EXISTS eval_samples (
    run_id VARCHAR, eval VARCHAR, target VARCHAR, item VARCHAR, metric VARCHAR, value DOUBLE
);
CREATE TABLE IF NOT EXISTS eval_items (
    run_id VARCHAR, eval VARCHAR, target VARCHAR, item VARCHAR, record_json VARCHAR
);
CREATE TABLE IF NOT EXISTS judge_verdicts (
    run_id VARCHAR, eval VARCHAR, target VARCHAR, item VARCHAR, position VARCHAR,
    verdict VARCHAR, raw VARCHAR, retried BOOLEAN
);
"""


ON_CHAIN = "NOT coalesce(json_extract(summary_json, '$.evaluator')::BOOLEAN, false)"  # no judge


class StoreBusy(RuntimeError):
    """The index stayed locked by another process for longer than the timeout."""


# How long to wait for a process outside ftlab (a notebook's duckdb.connect) that holds the
# database file: DuckDB refuses a second process at once, even a read-only one.
OUTSIDE_WAIT_S = float(os.environ.get("FTLAB_INDEX_WAIT_S", "15"))
UNINDEXED = "cache/unindexed"  # markers of runs whose ingest found the index busy


def _open(db: Path, *, read_only: bool, timeout: float) -> Any:
    """duckdb.connect, retried with backoff while another process holds the file."""
    import duckdb

    deadline = time.monotonic() + min(timeout, OUTSIDE_WAIT_S)
    pause = 0.05
    while True:
        try:
            return duckdb.connect(str(db), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            if pause == 0.05:  # the first refusal: say what the pause is
                print(
                    f"waiting for another process that holds {db} "
                    f"(up to {min(timeout, OUTSIDE_WAIT_S):.0f} s)…",
                    file=sys.stderr,
                )
            if time.monotonic() > deadline:
                raise StoreBusy(
                    f"another process holds {db} open (DuckDB lets one process at a time "
                    "open the file, even read-only — a notebook's duckdb.connect, say). "
                    "Close that connection (or read through "
                    "ftlab.reports.store.query, which waits its turn); run directories are "
                    "the source of truth: the next ftlab command indexes what was missed"
                ) from None
            time.sleep(pause)
            pause = min(pause * 2, 1.0)


@contextmanager
def _locked(root: Path, *, exclusive: bool, timeout: float) -> Iterator[None]:
    if not exclusive and not root.is_dir():
        yield  # nothing to read, and a reader creates nothing (not even the lock file)
        return
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{DB_NAME}.lock", "a+") as handle:
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StoreBusy(
                        f"{root / DB_NAME} is locked by another ftlab process "
                        f"for more than {timeout:.0f}s"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def connect(root: Path, *, write: bool, timeout: float = 120.0) -> Iterator[Any]:
    """A short-lived connection under the lock; readers never see a half-written ingest."""
    if not write:
        catch_up(root, timeout=timeout)
        _upgrade(root, timeout=timeout)
    with (
        _locked(root, exclusive=write, timeout=timeout),
        _connection(root, write=write, timeout=timeout) as con,
    ):
        yield con


_CURRENT: set[Path] = set()  # indexes this process has seen at SCHEMA_VERSION


def _upgrade(root: Path, *, timeout: float) -> None:
    """Migrate an index an older ftlab wrote before its first read (a read-only connection
    cannot, and the readers' queries name the new columns)."""
    if root in _CURRENT or not (root / DB_NAME).exists():
        return
    with (
        _locked(root, exclusive=False, timeout=timeout),
        _connection(root, write=False, timeout=timeout) as con,
    ):
        try:
            found = con.execute("SELECT value FROM meta WHERE key = 'schema_version'")
            version = int((found.fetchone() or ["0"])[0])
        except Exception:  # noqa: BLE001 - no meta table: older than any version
            version = 0
    if version < SCHEMA_VERSION:
        with (
            _locked(root, exclusive=True, timeout=timeout),
            _connection(root, write=True, timeout=timeout),
        ):
            pass  # the writing connection applies SCHEMA and MIGRATIONS
    _CURRENT.add(root)


@contextmanager
def _connection(root: Path, *, write: bool, timeout: float) -> Iterator[Any]:
    """The database, opened (schema and migrations applied when writing); the caller
    holds the lock."""
    import duckdb

    db = root / DB_NAME
    if not write and not db.exists():
        con = duckdb.connect(":memory:")
        con.execute(SCHEMA)
    else:
        con = _open(db, read_only=not write, timeout=timeout)
        if write:
            con.execute(SCHEMA)
            for statement in MIGRATIONS:
                con.execute(statement)
            con.execute(
                "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                [str(SCHEMA_VERSION)],
            )
    try:
        yield con
    finally:
        con.close()


TABLES = (
    "runs",
    "stages",
    "step_metrics",
    "eval_results",
    "eval_samples",
    "eval_items",
    "judge_verdicts",
)  # every table keyed by run_id, in SCHEMA


def ingest_runs(root: Path, run_dirs: list[Path], *, timeout: float = 120.0) -> int:
    """Index (or re-index) the given run directories; returns how many were written."""
    return _ingest(root, lambda: run_dirs, drop_gone=False, timeout=timeout)[0]


def _ingest(
    root: Path, listing: Callable[[], list[Path]], *, drop_gone: bool, timeout: float
) -> tuple[int, int]:
    """(indexed, removed). The run directories are listed and read under the index lock:
    an ingest that read a run before waiting its turn could write that run's older state
    over a newer ingest (the index saying `running` while status.json says `completed`)."""
    pending = root / UNINDEXED
    try:
        with _locked(root, exclusive=True, timeout=timeout):
            ids, tables = _ingest_tables(listing())
            with _connection(root, write=True, timeout=timeout) as con:
                con.execute("BEGIN TRANSACTION")
                indexed = [r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()]
                gone = [i for i in indexed if drop_gone and not (root / i / "run.json").is_file()]
                for table in TABLES:
                    con.execute(
                        f"DELETE FROM {table} WHERE run_id IN (SELECT unnest(?))", [ids + gone]
                    )
                    if table in tables:
                        arrow = tables[table]  # noqa: F841 - read by name in the SQL below
                        con.execute(f"INSERT INTO {table} SELECT * FROM arrow")
                con.execute("COMMIT")
    except StoreBusy:
        pending.mkdir(parents=True, exist_ok=True)
        for run_dir in listing():  # the next command that reads or writes the index catches up
            (pending / run_dir.name).write_text(str(run_dir.resolve()))
        raise
    for run_id in ids:
        (pending / run_id).unlink(missing_ok=True)
    return len(ids), len(gone)


def _ingest_tables(run_dirs: list[Path]) -> tuple[list[str], dict[str, Any]]:
    """(run ids, {table: arrow table}) read from the run directories."""
    import pyarrow as pa

    rows: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}
    for run_dir in run_dirs:
        run_row, stage_rows, metric_rows = dirrows.run_rows(run_dir)
        rows["runs"].append(run_row)
        rows["stages"].extend(stage_rows)
        rows["step_metrics"].extend(metric_rows)
        for table, eval_rows in zip(
            ("eval_results", "eval_samples", "eval_items", "judge_verdicts"),
            dirrows.eval_rows(run_row["run_id"], run_dir),
            strict=True,
        ):
            rows[table].extend(eval_rows)
    ids = [r["run_id"] for r in rows["runs"]]
    tables = {t: pa.Table.from_pylist(rows[t], schema=_arrow_schema(t)) for t in TABLES if rows[t]}
    return ids, tables


def catch_up(root: Path, *, timeout: float = 120.0) -> None:
    """Index the runs whose ingest found the index busy (their markers in
    `<runs>/cache/unindexed/`); a still-busy index leaves them for the next command."""
    markers = sorted((root / UNINDEXED).glob("*"))
    dirs = [Path(m.read_text()) for m in markers if Path(m.read_text(), "run.json").is_file()]
    for m in markers:
        if not Path(m.read_text(), "run.json").is_file():
            m.unlink(missing_ok=True)  # the run directory is gone
    if dirs:
        with contextlib.suppress(StoreBusy):
            ingest_runs(root, dirs, timeout=timeout)


def _arrow_schema(table: str) -> Any:
    """Column types for an ingest (so an all-null column still has the table's type)."""
    import pyarrow as pa

    kinds = {
        "VARCHAR": pa.string(),
        "DOUBLE": pa.float64(),
        "BIGINT": pa.int64(),
        "INTEGER": pa.int32(),
        "BOOLEAN": pa.bool_(),
    }
    body = SCHEMA.split(f"CREATE TABLE IF NOT EXISTS {table} (", 1)[1].split(");", 1)[0]
    fields = []
    for part in body.replace("\n", " ").split(","):
        name, _, sql_type = part.strip().partition(" ")
        fields.append(pa.field(name, kinds[sql_type.split()[0]]))
    return pa.schema(fields)


def run_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*") if (p / "run.json").is_file())


def sync(root: Path, *, timeout: float = 120.0) -> tuple[int, int]:
    """Make the index match the run directories: (indexed, removed), in one hold of the
    lock (a run indexed while a sync reads the others is neither overwritten nor dropped)."""
    return _ingest(root, lambda: run_dirs(root), drop_gone=True, timeout=timeout)


def drop_gone(root: Path, *, timeout: float = 120.0) -> int:
    """Remove the index rows of runs whose directory is gone; how many."""
    return _ingest(root, list, drop_gone=True, timeout=timeout)[1]


def query(
    root: Path, sql: str, params: list[Any] | None = None, *, timeout: float = 120.0
) -> list[dict[str, Any]]:
    """Run a read-only query; rows as dicts."""
    with connect(root, write=False, timeout=timeout) as con:
        cur = con.execute(sql, params or [])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def rows(con: Any, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    """Rows as dicts from an open connection."""
    cur = con.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def queries(
    root: Path, statements: list[tuple[str, list[Any]]], *, timeout: float = 120.0
) -> list[list[dict[str, Any]]]:
    """Several read-only queries on one connection (one lock, one open)."""
    out = []
    with connect(root, write=False, timeout=timeout) as con:
        for sql, params in statements:
            cur = con.execute(sql, params)
            names = [d[0] for d in cur.description]
            out.append([dict(zip(names, row, strict=True)) for row in cur.fetchall()])
    return out


def list_runs(root: Path, *, experiment: str = "", archived: bool = False) -> list[dict[str, Any]]:
    """The indexed runs (archived ones only with `archived`), oldest first."""
    sql = f"""
        SELECT r.run_id, r.experiment, r.variant, r.state, r.created, r.wall_time_s,
               r.tags, r.note, coalesce(r.archived, false) AS archived,
               string_agg(s.method, ' → ' ORDER BY s.position) AS methods,
               max(s.trainable_params) FILTER (WHERE s.position = last_pos) AS trainable_params,
               max(s.train_loss) FILTER (WHERE s.position = last_pos) AS train_loss,
               max(s.eval_loss) FILTER (WHERE s.position = last_pos) AS eval_loss,
               max(s.initial_eval_loss) FILTER (WHERE s.position = first_pos) AS initial_eval_loss
        FROM runs r
        LEFT JOIN (
            SELECT *, max(position) OVER (PARTITION BY run_id) AS last_pos,
                   min(position) OVER (PARTITION BY run_id) AS first_pos
            FROM stages  -- the chain to the model under test: not a judge stage
            WHERE {ON_CHAIN}
        ) s ON s.run_id = r.run_id
        WHERE (? = '' OR r.experiment = ?) AND (? OR NOT coalesce(r.archived, false))
        GROUP BY ALL ORDER BY r.created
    """
    return query(root, sql, [experiment, experiment, archived])
