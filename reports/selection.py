"""Which runs a comparison shows: named by id, experiment or study; by default the latest
run per variant and seed, archived runs left out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftlab.reports import store

__all__ = ["CompareError", "hidden_notes", "select_runs"]


class CompareError(ValueError):
    """A run or experiment that is not in the index; the message says what is."""


def select_runs(
    root: Path, refs: list[str], con: Any = None, *, all_runs: bool = True
) -> list[dict[str, Any]]:
    """Runs named by id (or a unique id prefix), experiment or sweep study; none → the
    latest experiment's runs. Ordered by creation. Without `all_runs`, an experiment or
    study gives its latest run per variant and seed (a completed one when there is one);
    runs named by id are always kept."""
    sql = (
        "SELECT run_id, experiment, variant, state, created, wall_time_s, spec_json, study,"
        " trial, seed, coalesce(archived, false) AS archived FROM runs ORDER BY created"
    )
    if not root.is_dir():
        raise CompareError(
            f"no runs directory {root}/ here: run from the directory you ran `ftlab run` "
            "in, or pass --dir"
        )
    refs = [_run_dir_name(ref) for ref in refs]
    runs = store.rows(con, sql) if con is not None else store.query(root, sql)
    if not runs:
        raise CompareError(f"no runs indexed under {root} (run an experiment, or `ftlab sync`)")
    if not refs:
        latest = runs[-1]
        key = "study" if latest.get("study") else "experiment"
        group = [r for r in runs if r[key] == latest[key]]
        return group if all_runs else _latest(group)
    picked: list[dict[str, Any]] = []
    for ref in refs:
        hit = [r for r in runs if ref in (r["experiment"], r["study"])]
        hit = hit if all_runs else _latest(hit)
        if not hit:
            hit = [r for r in runs if r["run_id"].startswith(ref)]
            if len(hit) > 1:
                raise CompareError(f"{ref!r} matches {len(hit)} runs; give more of the run id")
        if not hit:
            experiments = sorted({r["experiment"] for r in runs})
            raise CompareError(
                f"{ref!r} is not a run id, experiment or sweep in {root}; "
                f"experiments there: {', '.join(experiments)}"
            )
        picked += [r for r in hit if r not in picked]
    return picked


def _latest(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest run per experiment, variant and seed — a completed one if any; archived
    runs (`ftlab runs archive`) are left out."""
    best: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in [r for r in runs if not r.get("archived")]:  # ordered by creation
        key = (r["experiment"], r["variant"], r["seed"], r["trial"])
        if key not in best or r["state"] == "completed" or best[key]["state"] != "completed":
            best[key] = r
    kept = {id(r) for r in best.values()}
    return [r for r in runs if id(r) in kept]


def _run_dir_name(ref: str) -> str:
    """A run directory given as a path stands for its run id."""
    path = Path(ref)
    return path.name if len(path.parts) > 1 and (path / "run.json").is_file() else ref


def hidden_notes(root: Path, refs: list[str], shown: list[dict[str, Any]]) -> list[str]:
    every = select_runs(root, refs, all_runs=True)
    archived = sum(bool(r.get("archived")) for r in every)
    older = len(every) - len(shown) - archived
    notes = [f"{older} older run{'s' * (older > 1)} of these variants not shown"] if older else []
    notes += [f"{archived} archived run{'s' * (archived > 1)} not shown"] if archived else []
    return [f"{n} (--all shows every run)" for n in notes]
