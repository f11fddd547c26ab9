"""What a user says about runs, and removing one: `ftlab runs tag | note | archive | rm`.

Tags, a note and the archived flag live in the run directory (`notes.json`, never part of
the run's identity or hash) and in the index. Removing a run removes its directory, its
index rows and the stage-cache entries that point at its artifacts; a run whose artifacts
other runs use (they reused a stage it trained) is refused, naming them — removing it
would break their exports, `generate`, `chat` and `--resume`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ftlab.reports import store
from ftlab.runner.rundir import RunDir, pid_alive, read_json, write_json


class ManageError(ValueError):
    """A run cannot be changed as asked; the message says why and what to do."""


def annotate(
    root: Path,
    run: RunDir,
    *,
    add: tuple[str, ...] = (),
    remove: tuple[str, ...] = (),
    note: str | None = None,
    archived: bool | None = None,
) -> dict[str, Any]:
    """Change the run's tags / note / archived flag; the run's notes after the change."""
    notes = run.notes()
    unknown = [t for t in remove if t not in notes["tags"]]
    if unknown:
        raise ManageError(
            f"run {run.run_id} has no tag {', '.join(unknown)} "
            f"(its tags: {', '.join(notes['tags']) or 'none'})"
        )
    bad = [t for t in add if not t or any(c.isspace() for c in t)]
    if bad:
        raise ManageError(f"a tag is one word without spaces; got {bad[0]!r}")
    notes["tags"] = [t for t in dict.fromkeys([*notes["tags"], *add]) if t not in remove]
    if note is not None:
        notes["note"] = note
    if archived is not None:
        notes["archived"] = archived
    write_json(run.path / "notes.json", notes)
    store.ingest_runs(root, [run.path])
    return notes


def users_of(root: Path, run: RunDir) -> list[str]:
    """Other runs whose stages use an artifact inside this run's directory."""
    inside = str(run.path.resolve()) + "/"
    users = []
    for other in store.run_dirs(root):
        if other.resolve() == run.path.resolve():
            continue
        for stage_file in (other / "stages").glob("*/stage.json"):
            path = ((read_json(stage_file) or {}).get("artifact") or {}).get("path") or ""
            if path.startswith(inside):
                users.append(other.name)
                break
    return users


def remove(root: Path, run: RunDir) -> int:
    """Remove the run (directory, index rows, stage-cache entries pointing into it); the
    number of cache entries removed."""
    status = run.status()
    if status.get("state") == "running" and pid_alive(status.get("pid")):
        raise ManageError(f"run {run.run_id} is running (pid {status['pid']}); stop it first")
    if run.path.resolve().parent != root.resolve():
        raise ManageError(f"{run.path} is not in the runs directory {root}; --dir names it")
    users = users_of(root, run)
    if users:
        raise ManageError(
            f"run {run.run_id} trained stages that {len(users)} other run(s) reuse "
            f"({', '.join(users[:5])}{' …' if len(users) > 5 else ''}); removing it would "
            "break them. Remove those first, or `ftlab runs archive` this one instead"
        )
    inside = str(run.path.resolve()) + "/"
    dropped = 0
    for entry in sorted((root / "cache" / "stages").glob("*.json")):
        path = ((read_json(entry) or {}).get("artifact") or {}).get("path") or ""
        if path.startswith(inside):
            entry.unlink()
            dropped += 1
    shutil.rmtree(run.path)
    store.drop_gone(root)
    return dropped
