"""`ftlab runs tag | note | archive | rm` on real runs: notes in the run directory and the
index, archived runs out of the default views, rm keeping the index and stage cache
consistent and refusing to break a run that reuses a stage."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ftlab.cli.main import app
from ftlab.reports import store

from .conftest import DATA

SPEC = """\
name: managed
model: tiny
data:
  sft: {{path: {data}/support_sft.jsonl, overlong: truncate, max_rows: 32, val_fraction: 0.25}}
stages:
  - {{name: sft, method: lora, train: {{max_steps: 2, batch_size: 8, max_length: 64}}}}
output: {{dir: {runs}}}
"""


def _ftlab(*args: str) -> str:
    out = CliRunner().invoke(app, list(args))
    assert out.exit_code == 0, out.output
    return out.output


@pytest.mark.integration
def test_tag_note_archive_and_rm_keep_index_and_cache_consistent(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    spec = tmp_path / "managed.yaml"
    spec.write_text(SPEC.format(data=DATA, runs=runs))
    _ftlab("run", str(spec))
    _ftlab("run", str(spec))  # the second run reuses the first one's SFT stage
    first, second = (r["run_id"] for r in store.list_runs(runs))
    d = ["--dir", str(runs)]

    assert "#best #lr-sweep" in _ftlab("runs", "tag", first[:-2], "best", "lr-sweep", *d)
    _ftlab("runs", "note", first, "the one to keep", *d)
    _ftlab("runs", "tag", first, "lr-sweep", "--remove", *d)
    (row,) = store.query(runs, "SELECT tags, note FROM runs WHERE run_id = ?", [first])
    assert row == {"tags": "best", "note": "the one to keep"}
    assert store.sync(runs)[0] == 2 and store.query(  # the run directory is the truth
        runs, "SELECT tags FROM runs WHERE run_id = ?", [first]
    ) == [{"tags": "best"}]
    listed = _ftlab("runs", *d)
    assert "#best “the one to keep”" in listed

    # archived: out of `ftlab runs` and compare's latest view, still there by id / --all
    _ftlab("runs", "archive", second, *d)
    assert second not in _ftlab("runs", *d) and second in _ftlab("runs", "--archived", *d)
    from ftlab.reports.compare import compare

    assert [r.run_ids for r in compare(runs, ["managed"]).rows] == [[first]]
    assert len(compare(runs, ["managed"], all_runs=True).rows) == 2

    # rm: refused while another run reuses a stage it trained; no terminal, no --yes: asks
    # for --yes; then the index rows and the stage-cache entry pointing at it go
    refused = CliRunner().invoke(app, ["runs", "rm", first, "-y", *d])
    assert refused.exit_code == 2 and f"1 other run(s) reuse ({second})" in refused.output
    assert "archive" in refused.output and (runs / first).is_dir()
    asks = CliRunner().invoke(app, ["runs", "rm", second, *d])
    assert asks.exit_code == 2 and "--yes" in asks.output and (runs / second).is_dir()
    assert "0 stage-cache entries" in _ftlab("runs", "rm", second, "-y", *d)
    assert "1 stage-cache entry" in _ftlab("runs", "rm", first, "-y", *d)
    assert not (runs / first).exists() and list((runs / "cache" / "stages").glob("*")) == []
    assert store.query(runs, "SELECT count(*) AS n FROM runs")[0]["n"] == 0
    assert store.query(runs, "SELECT count(*) AS n FROM stages")[0]["n"] == 0
    # the next run trains afresh (no dangling cache entry), and is indexed
    assert "reusing" not in _ftlab("run", str(spec))
    missing = CliRunner().invoke(app, ["runs", "tag", "nope", "x", *d])
    assert missing.exit_code == 2 and "no run 'nope'" in missing.output


def test_an_index_of_schema_4_is_migrated_before_its_first_read(tmp_path: Path) -> None:
    """A read-only connection cannot add columns; `ftlab runs` on an older index still
    works (it failed with 'Table r does not have a column named archived')."""
    import duckdb

    root = tmp_path / "runs"
    root.mkdir()
    old = store.SCHEMA.replace(", tags VARCHAR, note VARCHAR, archived BOOLEAN", "")
    assert old != store.SCHEMA
    with duckdb.connect(str(root / store.DB_NAME)) as con:
        con.execute(old)
        con.execute("INSERT INTO meta VALUES ('schema_version', '4')")
        con.execute("INSERT INTO runs (run_id, experiment, created) VALUES ('r', 'e', 1.0)")
    (row,) = store.list_runs(root)
    assert row["run_id"] == "r" and row["archived"] is False and row["tags"] is None
