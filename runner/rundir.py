"""The run directory: the source of truth for one run, written atomically.

runs/<run_id>/
  run.json          identity: experiment, variant, spec file, overrides, created
  spec.yaml         the resolved spec (variant applied, defaults filled)
  env.json          package versions, git commit, hardware
  status.json       state (running | completed | failed | interrupted | pruned), current
                    stage, pid, error
  metrics.jsonl     step metrics, one JSON object per line (append-only)
  stages/<name>/stage.json   hash, method, state, summary, artifact, reused_from
  stages/<name>/artifact/    adapter or full weights (+ tokenizer)
  stages/<name>/checkpoints/ trainer checkpoints while the stage runs
  summary.json      one-screen summary when the run ends
  notes.json        what a user said about the run: tags, note, archived (`ftlab runs
                    tag | note | archive`); never part of its identity
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RUN_FORMAT = 1  # bump when the layout changes; the golden-fixture test guards it
# the temp files of write_json/write_text: tempfile.mkstemp(prefix=name + ".", suffix=".tmp")
TEMP_FILE = re.compile(r".+\.[a-z0-9_]{8}\.tmp")


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically: a reader sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return default


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Step metrics; a line cut short by a kill is skipped, not an error."""
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    except FileNotFoundError:
        pass
    return rows


class RunBusy(RuntimeError):
    """Another process is running this run directory."""


class RunDir:
    """Accessors for one run directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def run_id(self) -> str:
        return self.path.name

    def stage_dir(self, stage: str) -> Path:
        return self.path / "stages" / stage

    def info(self) -> dict[str, Any]:
        return read_json(self.path / "run.json", {})

    def notes(self) -> dict[str, Any]:
        """{tags: [...], note: str, archived: bool}: what a user said about the run."""
        return {"tags": [], "note": "", "archived": False} | read_json(self.path / "notes.json", {})

    def status(self) -> dict[str, Any]:
        status = read_json(self.path / "status.json")
        if status is None:
            # status.json is written before run.json (`execute.create_run`): a run without
            # it was killed while being created (or by an ftlab that wrote run.json first)
            known = (self.path / "run.json").is_file()
            return {"state": "interrupted" if known else "unknown"}
        if status.get("state") == "running" and not pid_alive(status.get("pid")):
            status["state"] = "interrupted"  # killed: resumable with --resume
        return status

    def remove_temp_files(self) -> list[Path]:
        """Delete what a kill during `write_json`/`write_text` left (`<name>.<8 random
        characters>.tmp`); call only when no process writes this run (on resume)."""
        stale = [p for p in self.path.rglob("*.tmp") if TEMP_FILE.fullmatch(p.name) and p.is_file()]
        for path in stale:
            path.unlink(missing_ok=True)
        return stale

    def set_status(self, **fields: Any) -> None:
        status = read_json(self.path / "status.json", {})
        status.update(fields, updated=time.time(), pid=os.getpid())
        write_json(self.path / "status.json", status)

    def stage_names(self) -> list[str]:
        """The run's stages that have a folder, in the spec's order (not alphabetical:
        the last one is the run's final model)."""
        present = sorted(d.name for d in (self.path / "stages").glob("*") if d.is_dir())
        from ruamel.yaml import YAML

        try:
            spec = YAML(typ="safe", pure=True).load((self.path / "spec.yaml").read_text())
            order = [str(s["name"]) for s in spec.get("stages", [])]
        except Exception:  # noqa: BLE001 - a damaged spec.yaml: fall back to the folders
            order = []
        return [s for s in order if s in present] + [s for s in present if s not in order]

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run directory for this process (a second `--resume` of the same run
        is refused with the holder's pid, instead of both training into one folder)."""
        import fcntl

        with open(self.path / ".lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "?"
                raise RunBusy(
                    f"run {self.run_id} is being run by another process (pid {holder}); "
                    "wait for it, or stop it first"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def drop_metrics_after(self, stage: str, step: int) -> int:
        """Forget `stage`'s step metrics after `step` (a resume from the checkpoint at
        `step` logs them again); returns how many records went."""
        rows = self.metrics()
        keep = [r for r in rows if not (r.get("stage") == stage and (r.get("step") or 0) > step)]
        if len(keep) != len(rows):
            write_text(
                self.path / "metrics.jsonl",
                "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in keep),
            )
        return len(rows) - len(keep)

    def stage(self, stage: str) -> dict[str, Any]:
        return read_json(self.stage_dir(stage) / "stage.json", {})

    def write_stage(self, stage: str, data: dict[str, Any]) -> None:
        write_json(self.stage_dir(stage) / "stage.json", data)

    def log_metrics(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True, default=str)
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()

    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.path / "metrics.jsonl")


def pid_alive(pid: Any) -> bool:
    """Whether a process with this id runs on this machine."""
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def latest_checkpoint(stage_dir: Path) -> Path | None:
    """The newest complete trainer checkpoint of a stage, if any."""
    ckpts = []
    for p in (stage_dir / "checkpoints").glob("checkpoint-*"):
        suffix = p.name.rsplit("-", 1)[-1]
        if suffix.isdigit() and (p / "trainer_state.json").is_file():
            ckpts.append((int(suffix), p))
    return max(ckpts)[1] if ckpts else None


def find_run(ref: str, root: Path) -> RunDir:
    """A run by directory path, run id, or unique run-id prefix under `root`; anything
    else is an error (nothing is created)."""
    path = Path(ref)
    if (path / "run.json").is_file():
        return RunDir(path)
    if "/" in ref or ref in ("", ".", ".."):
        raise FileNotFoundError(
            f"{ref} is not a run directory (it has no run.json). `ftlab runs` lists the runs"
        )
    names = [p.name for p in root.iterdir()] if root.is_dir() else []
    candidates = [
        root / n for n in names if n.startswith(ref) and (root / n / "run.json").is_file()
    ]
    if root / ref in candidates:  # an exact id wins over longer ids it prefixes
        return RunDir(root / ref)
    if len(candidates) == 1:
        return RunDir(candidates[0])
    if not candidates:
        raise FileNotFoundError(
            f"no run '{ref}' (looked for a run directory, and under {root}/)."
            " `ftlab runs` lists the runs; --dir DIR reads another runs directory"
        )
    several = ", ".join(sorted(p.name for p in candidates)[:5])
    raise FileNotFoundError(f"'{ref}' matches several runs ({several}); give more of the id")


def cwd_relative(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)
