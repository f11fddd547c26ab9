"""W&B logging of finished runs, from the run directory.

When `tracking.wandb.mode` is not `disabled`, each run is logged as one W&B run at its
end (completed, failed or pruned): `group` = the experiment (or the sweep's study),
`job_type` = the last stage's method, tags for every method and the variant, the resolved
spec as config (flattened, secret-looking keys removed), every step metric as a curve
(`<stage>/<name>`, one global step across stages), eval results as the run summary, and
each eval's per-sample rows (with the judge's verdicts) as a `wandb.Table`.

Logging from the run directory, not from inside the trainers, keeps one code path for
every method (trl trainers and ftlab's PPO alike) and lets `ftlab wandb log RUN` log a run
again. `mode: auto` is online only when an API key is configured and the W&B server answers
within a few seconds; otherwise offline, with one line saying so. wandb is never allowed
to prompt (it waits at a login prompt in a terminal) or to wait on a dead network.
Offline runs land in `<run>/wandb/` and `ftlab wandb sync` uploads them later.
"""

from __future__ import annotations

import functools
import json
import netrc
import os
import re
import urllib.request
from pathlib import Path
from typing import Any

from ftlab.runner.rundir import RunDir, read_metrics, write_json
from ftlab.runner.spec.errors import secret

PROBE_TIMEOUT_S = 3.0
MAX_TABLE_ROWS = 2000
MAX_CELL = 4000


def api_key() -> str | None:
    """The configured W&B key (WANDB_API_KEY or ~/.netrc), never printed or stored."""
    key = os.environ.get("WANDB_API_KEY")
    if key:
        return key
    host = _base_url().split("//", 1)[-1].split("/", 1)[0]
    try:
        auth = netrc.netrc().authenticators(host)
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return None
    return auth[2] if auth else None


def _base_url() -> str:
    return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").rstrip("/")


def server_answers(timeout: float = PROBE_TIMEOUT_S) -> bool:
    return _probe(_base_url(), timeout)


@functools.lru_cache(maxsize=8)  # one probe per process and server
def _probe(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=timeout):  # noqa: S310
            return True
    except urllib.error.HTTPError:
        return True  # it answered, even if not with 200
    except (OSError, ValueError):
        return False


def resolve_mode(mode: str) -> tuple[str, str]:
    """(`online` | `offline` | `disabled`, a notice to print or '')."""
    if mode in ("disabled", "offline"):
        return mode, ""
    if mode == "online":
        if not api_key():
            raise TrackingError(
                "tracking.wandb.mode is online but no W&B API key is configured: set "
                "WANDB_API_KEY (or run `wandb login`), or use mode: auto / offline"
            )
        return "online", ""
    if not api_key():
        return "offline", "W&B: no API key configured, logging offline (ftlab wandb sync uploads)"
    if not server_answers():
        return "offline", (
            f"W&B: {_base_url()} did not answer in {PROBE_TIMEOUT_S:.0f} s, logging offline "
            "(ftlab wandb sync uploads later)"
        )
    return "online", ""


class TrackingError(RuntimeError):
    """W&B is configured in a way that cannot work; the message says what to change."""


def flat_config(spec: Any, prefix: str = "") -> dict[str, Any]:
    """The spec as `a.b.c: value`, lists of named items keyed by name, secrets removed."""
    out: dict[str, Any] = {}
    if isinstance(spec, dict):
        items = list(spec.items())
    elif isinstance(spec, list) and spec and all(isinstance(v, dict) for v in spec):
        items = [(v.get("name", i), v) for i, v in enumerate(spec)]
    else:
        return {prefix.rstrip("."): spec}
    for k, v in items:
        key = f"{prefix}{k}"
        if secret(str(k), v if isinstance(v, str) else ""):
            continue  # an inline secret never leaves the machine
        out |= flat_config(v, key + ".") if isinstance(v, dict | list) else {key: v}
    return out


def _curves(run: RunDir) -> list[dict[str, Any]]:
    """Step metrics on one global step: each stage continues where the last ended."""
    curves: list[dict[str, Any]] = []
    offsets: dict[str, int] = {}
    base = 0
    for rec in run.metrics():
        stage = rec.get("stage", "")
        if stage not in offsets:
            offsets[stage] = base
        step = offsets[stage] + int(rec.get("step") or 0)
        base = max(base, step)
        values = {
            f"{stage}/{k}": v
            for k, v in rec.items()
            if k not in ("stage", "step", "epoch", "time") and isinstance(v, int | float)
        }
        if values:
            curves.append({"step": step, "values": values})
    return curves


def head(run: RunDir) -> dict[str, Any]:
    """What a tracker run is named and grouped by, known before the run trains: name,
    group (the experiment, or the sweep's study), job_type (the last stage's method), tags
    (methods and variant), the resolved spec as flat config."""
    from ftlab.runner.spec.load import load_raw

    info = run.info()
    raw = load_raw(run.path / "spec.yaml").data if (run.path / "spec.yaml").exists() else {}
    raw = raw if isinstance(raw, dict) else {}
    stages = [s for s in raw.get("stages", []) if isinstance(s, dict)]
    ran = [s for s in stages if run.stage(s.get("name", ""))]  # skipped stages left out
    methods = [s.get("method") for s in (ran or stages)]
    return {
        "name": run.run_id,
        "group": info.get("study") or info.get("experiment") or "ftlab",
        "experiment": info.get("experiment") or "ftlab",
        "variant": info.get("variant") or "",
        "job_type": methods[-1] if methods else "run",
        "tags": sorted(
            {m for m in methods if m} | ({info["variant"]} if info.get("variant") else set())
        ),
        "config": flat_config(raw)  # + what dashboards group by (no dots: W&B nests them)
        | {
            "ftlab_variant": info.get("variant") or "",
            "ftlab_methods": " → ".join(map(str, methods)),
        },
        "methods": [str(m) for m in methods if m],
        "stages": [str(s.get("name")) for s in stages],
    }


def eval_summary(run: RunDir, evals: list[str] | None = None) -> dict[str, Any]:
    """Eval results as summary values: `eval/<eval>/<metric>` for the run's last model
    (`eval/<eval>@<target>/<metric>` for another), with `_ci_low`/`_ci_high`."""
    from ftlab.runner.evaluate import read_results

    summary: dict[str, Any] = {}
    for ev, res in read_results(run.path).items():
        if evals is not None and ev not in evals:
            continue
        for target, t in (res.get("targets") or {}).items():
            for metric, m in (t.get("metrics") or {}).items():
                at = "" if target == res.get("last") else f"@{target}"
                key = f"eval/{ev}{at}/{metric}"
                summary[key] = m.get("value")
                if m.get("low") is not None:
                    summary[f"{key}_ci_low"], summary[f"{key}_ci_high"] = m["low"], m.get("high")
    return summary


def run_payload(run: RunDir) -> dict[str, Any]:
    """Everything logged for one run, read from its directory."""
    status, out = run.status(), head(run)
    summary: dict[str, Any] = {
        "state": status.get("state"),
        "wall_time_s": status.get("wall_time_s"),
    }
    for name in out["stages"]:
        record = run.stage(name)
        for k, v in (record.get("summary") or {}).items():
            if isinstance(v, int | float | str):
                summary[f"{name}/{k}"] = v
        if record.get("reused_from"):  # trained by another run: its curves are there
            summary[f"{name}/reused_from"] = record["reused_from"]
    summary |= eval_summary(run)
    tables = {
        p.parent.name: _table(read_metrics(p))
        for p in sorted((run.path / "evals").glob("*/samples.jsonl"))
    }
    return out | {"curves": _curves(run), "summary": summary, "tables": tables}


def _table(samples: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Per-sample rows as columns: target, item, text fields, verdicts, scores."""
    columns: list[str] = ["target", "item"]
    rows = []
    for s in samples[:MAX_TABLE_ROWS]:
        flat: dict[str, Any] = {"target": s.get("target"), "item": s.get("item")}
        for k, v in s.items():
            if isinstance(v, str) and k not in flat:
                flat[k] = v[:MAX_CELL]
            elif isinstance(v, dict) and "verdict" in v:
                flat[k] = str(v.get("verdict"))
        for k, v in (s.get("scores") or {}).items():
            flat[f"score:{k}"] = v
        for k in flat:
            if k not in columns:
                columns.append(k)
        rows.append(flat)
    return columns, [[r.get(c) for c in columns] for r in rows]


class WandbSink:
    """One ftlab run as one W&B run, resumed by id (`--resume`, `ftlab wandb log`)."""

    def __init__(self, run: RunDir, head: dict[str, Any], *, project: str, mode: str, live: bool):
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        self.name, self.mode, self.project = "W&B", mode, project
        self.run_path, self.id = run.path.resolve(), _wandb_id(run)
        self.key = f"wandb:{project}:{self.id}"  # what tracking.json remembers per tracker
        self.table = wandb.Table
        settings = wandb.Settings(
            silent=True, console="off", init_timeout=90, x_disable_stats=not live, quiet=True
        )
        self.wb = wandb.init(
            project=project,
            name=head["name"],
            id=self.id,
            group=head["group"],
            job_type=head["job_type"],
            tags=head["tags"],
            config=head["config"],
            dir=str(self.run_path),  # wandb's service has its own working directory
            mode=mode,  # type: ignore[arg-type]
            resume="allow",
            reinit="create_new",
            settings=settings,
        )
        self.folder = Path(self.wb.dir).parent
        self._record()  # `ftlab wandb show` finds the run while it trains

    def _record(self) -> None:
        record = {"mode": self.mode, "folder": str(self.folder), "project": self.project}
        write_json(self.run_path / "wandb.json", record | {"id": self.id})

    def log_points(self, points: list[tuple[int, dict[str, Any]]]) -> None:
        for step, values in points:
            self.wb.log(values, step=step)

    def summary(self, values: dict[str, Any]) -> None:
        self.wb.summary.update(values)

    def finish(self, payload: dict[str, Any], state: str) -> None:
        try:
            for name, (columns, rows) in payload["tables"].items():
                if rows:
                    self.wb.log({f"samples/{name}": self.table(columns=columns, data=rows)})
            self.wb.summary.update(payload["summary"])
        finally:
            self.wb.finish(exit_code=0 if state in ("completed", "pruned") else 1)
        self._record()


def log_run(run_path: Path, *, project: str, mode: str, notice: bool = True) -> Path | None:
    """Log a run from its directory (`ftlab wandb log`): the steps W&B does not have yet
    (all of them when the run was not logged live), then its summary and tables. Returns
    the W&B run's local folder (None if disabled)."""
    from ftlab.runner import live

    resolved, message = resolve_mode(mode)
    if resolved == "disabled":
        return None
    if message and notice:
        print(message)
    run = RunDir(run_path.resolve())
    sink = WandbSink(run, head(run), project=project, mode=resolved, live=False)
    live.replay(run, [sink])
    return sink.folder


def _wandb_id(run: RunDir) -> str:
    return wandb_id(run.run_id)


def wandb_id(run_id: str) -> str:
    """The W&B run id of an ftlab run (W&B allows letters, digits, - and _; 64 at most)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", run_id)[-64:]


def comparison_key(group: str) -> str:
    """The W&B summary key of an experiment's (or study's) comparison table."""
    return "comparison_" + re.sub(r"[^A-Za-z0-9_]", "_", group)


def log_comparison(
    folder: Path, records: list[dict[str, Any]], *, project: str, group: str, mode: str
) -> Path:
    """The rows of `ftlab compare` (values, interval bounds, Δ, p) as a W&B Table in a run
    of the experiment's group (job_type `comparison`; one run per group, replaced by the
    next `ftlab dashboard`). Returns the W&B run's local folder."""
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    columns: list[Any] = list(dict.fromkeys(k for r in records for k in r))
    data: list[Any] = [[r.get(c) for c in columns] for r in records]
    folder.mkdir(parents=True, exist_ok=True)
    settings = wandb.Settings(
        silent=True, console="off", init_timeout=90, x_disable_stats=True, quiet=True
    )
    wb = wandb.init(
        project=project,
        name=f"{group} comparison",
        id=wandb_id(f"{group}-comparison"),
        group=group,
        job_type="comparison",
        dir=str(folder),
        mode=mode,  # type: ignore[arg-type]
        resume="allow",
        reinit="create_new",
        settings=settings,
    )
    try:
        wb.log({comparison_key(group): wandb.Table(columns=columns, data=data)})
    finally:
        wb.finish()
    return Path(wb.dir).parent


def offline_runs(runs_dir: Path) -> list[Path]:
    """Offline W&B folders under the runs directory not yet uploaded (runs, and the
    comparison runs `ftlab dashboard` writes)."""
    found = sorted(runs_dir.glob("*/wandb/offline-run-*"))
    found += sorted(runs_dir.glob("dashboards/*/wandb/offline-run-*"))
    return [p for p in found if not any(p.glob("*.synced"))]


def read_offline(folder: Path) -> dict[str, Any]:
    """What an offline W&B run holds, read back from its `.wandb` log (a LevelDB-style log
    of protobuf records: 7-byte file header, 32 KiB blocks, 7-byte record headers):
    {"group", "job_type", "tags", "config", "summary", "history"}. wandb ships no reader
    for it any more; `ftlab wandb show` and the tests use this one."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    (log,) = folder.glob("*.wandb")
    raw = log.read_bytes()
    if raw[:4] != b":W&B":
        raise ValueError(f"{log}: not a W&B log")
    block, pos, pieces, records = 32768, 7, b"", []
    while pos + 7 <= len(raw):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        if left < 7 or (length == 0 and kind == 0):
            pos += left  # block trailer / padding
            continue
        data = raw[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:  # full
            records.append(data)
        elif kind == 2:  # first
            pieces = data
        elif kind == 3:  # middle
            pieces += data
        elif kind == 4:  # last
            records.append(pieces + data)
    out: dict[str, Any] = {"config": {}, "summary": {}, "history": []}
    for data in records:
        rec = pb.Record()  # type: ignore[attr-defined]
        rec.ParseFromString(data)
        which = rec.WhichOneof("record_type")
        if which == "run":
            out |= {
                "group": rec.run.run_group,
                "job_type": rec.run.job_type,
                "tags": list(rec.run.tags),
                "name": rec.run.display_name,
                "id": rec.run.run_id,
            }
            out["config"] |= {i.key: json.loads(i.value_json) for i in rec.run.config.update}
        elif which == "config":
            out["config"] |= {i.key: json.loads(i.value_json) for i in rec.config.update}
        elif which == "summary":
            out["summary"] |= {
                i.key or ".".join(i.nested_key): json.loads(i.value_json)
                for i in rec.summary.update
            }
        elif which == "history":
            out["history"].append(
                {
                    i.key or ".".join(i.nested_key): json.loads(i.value_json)
                    for i in rec.history.item
                }
            )
    return out
