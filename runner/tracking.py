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

from ftlab.runner.rundir import RunDir, read_metrics
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


def run_payload(run: RunDir) -> dict[str, Any]:
    """Everything logged for one run, read from its directory."""
    from ftlab.runner.evaluate import read_results
    from ftlab.runner.spec.load import load_raw

    info, status = run.info(), run.status()
    raw = load_raw(run.path / "spec.yaml").data if (run.path / "spec.yaml").exists() else {}
    stages = raw.get("stages", []) if isinstance(raw, dict) else []
    methods = [
        s.get("method") for s in stages if isinstance(s, dict) and run.stage(s.get("name", ""))
    ]
    group = info.get("study") or info.get("experiment") or "ftlab"
    tags = sorted({m for m in methods if m} | ({info["variant"]} if info.get("variant") else set()))
    curves = _curves(run)
    summary: dict[str, Any] = {
        "state": status.get("state"),
        "wall_time_s": status.get("wall_time_s"),
    }
    for name in [s.get("name") for s in stages if isinstance(s, dict)]:
        for k, v in (run.stage(str(name)).get("summary") or {}).items():
            if isinstance(v, int | float | str):
                summary[f"{name}/{k}"] = v
    tables: dict[str, tuple[list[str], list[list[Any]]]] = {}
    for ev, res in read_results(run.path).items():
        for target, t in (res.get("targets") or {}).items():
            for metric, m in (t.get("metrics") or {}).items():
                key = (
                    f"eval/{ev}/{metric}"
                    if target == res.get("last")
                    else f"eval/{ev}@{target}/{metric}"
                )
                summary[key] = m.get("value")
                if m.get("low") is not None:
                    summary[f"{key}_ci_low"], summary[f"{key}_ci_high"] = (
                        m.get("low"),
                        m.get("high"),
                    )
        tables[ev] = _table(read_metrics(run.path / "evals" / ev / "samples.jsonl"))
    return {
        "name": run.run_id,
        "group": group,
        "job_type": methods[-1] if methods else "run",
        "tags": tags,
        "config": flat_config(raw if isinstance(raw, dict) else {}),
        "curves": curves,
        "summary": summary,
        "tables": tables,
    }


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


def log_run(run_path: Path, *, project: str, mode: str, notice: bool = True) -> Path | None:
    """Log one finished run to W&B; returns the W&B run's local folder (None if disabled)."""
    resolved, message = resolve_mode(mode)
    if resolved == "disabled":
        return None
    if message and notice:
        print(message)
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    run_path = run_path.resolve()  # wandb's service process has its own working directory
    run = RunDir(run_path)
    payload = run_payload(run)
    settings = wandb.Settings(
        silent=True, console="off", init_timeout=30, x_disable_stats=True, quiet=True
    )
    wb = wandb.init(
        project=project,
        name=payload["name"],
        id=_wandb_id(run),
        group=payload["group"],
        job_type=payload["job_type"],
        tags=payload["tags"],
        config=payload["config"],
        dir=str(run_path),
        mode=resolved,  # type: ignore[arg-type]
        resume="allow",
        reinit="create_new",
        settings=settings,
    )
    try:
        for point in payload["curves"]:
            wb.log(point["values"], step=point["step"])
        for name, (columns, rows) in payload["tables"].items():
            if rows:
                wb.log({f"samples/{name}": wandb.Table(columns=columns, data=rows)})
        wb.summary.update(payload["summary"])
        folder = Path(wb.dir).parent
    finally:
        wb.finish()
    record = {"mode": resolved, "folder": str(folder), "project": project, "id": _wandb_id(run)}
    (run_path / "wandb.json").write_text(json.dumps(record, indent=2))
    return folder


def _wandb_id(run: RunDir) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", run.run_id)[-64:]


def offline_runs(runs_dir: Path) -> list[Path]:
    """Offline W&B folders under the runs directory not yet uploaded."""
    found = sorted(runs_dir.glob("*/wandb/offline-run-*"))
    return [p for p in found if not any(p.glob("*.synced"))]


def log_after_run(run_path: Path, tracking: Any) -> None:
    """Called by the runner at the end of every run; a W&B problem never fails a run."""
    if tracking.wandb.mode == "disabled":
        return
    try:
        log_run(run_path, project=tracking.wandb.project, mode=tracking.wandb.mode)
    except Exception as exc:  # noqa: BLE001 - the run itself is done and saved
        print(
            f"note: W&B logging failed ({type(exc).__name__}: {exc}); "
            f"`ftlab wandb log {run_path}` retries it"
        )


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
