"""`ftlab dashboard`: a W&B workspace and a W&B report laid out for comparing one
experiment's (or one sweep's) runs, built from the DuckDB index with wandb-workspaces.

The objects are plain models, built offline: runs filtered to the experiment's W&B group
and grouped by variant (seeds become one line with its spread), the compare baseline as the
workspace's baseline run, sections for the eval metrics (bars, ↑/↓ in the title), losses
per stage, alignment curves (rewards, KL, margins, chosen/rejected), cost (time, memory,
trainable parameters) and, for a sweep, parallel coordinates over the searched keys and
parameter importance for the objective. The report holds the `ftlab compare` table (Δ, p)
and the same panels. Saving needs a W&B key and a server that answers; otherwise only the
definition is written (`<runs>/dashboards/<group>.json`) with the command that saves it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftlab.reports import store
from ftlab.reports.compare import STAGE_METRICS, Comparison

ALIGNMENT = re.compile(r"reward|kl\b|kl_|margin|chosen|rejected|logps|score|advantage", re.I)


@dataclass
class Dashboard:
    group: str
    project: str
    workspace: Any
    report: Any
    sections: dict[str, list[str]]  # section → panel titles (what `ftlab dashboard` prints)

    def definition(self) -> dict[str, Any]:
        from pydantic import TypeAdapter

        return {
            "workspace": TypeAdapter(type(self.workspace)).dump_python(self.workspace, mode="json"),
            "report": TypeAdapter(type(self.report)).dump_python(self.report, mode="json"),
        }


def _safe(group: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", group)  # as runner.tracking.comparison_key


def _key(metric: str, last_stage: str) -> str:
    """The W&B summary key of a compare metric or sweep objective."""
    if metric in STAGE_METRICS:
        return f"{last_stage}/{metric}"
    if metric.startswith("stage."):
        _, stage, name = metric.split(".", 2)
        return f"{stage}/{name}"
    if metric in ("wall_time_s", "peak_memory_mb"):
        return metric
    ev, _, name = metric.partition(".")
    return f"eval/{ev}/{name}"


def _facts(root: Path, cmp: Comparison) -> dict[str, Any]:
    ids = [i for row in cmp.rows for i in row.run_ids]
    with store.connect(root, write=False) as con:
        runs = store.rows(
            con,
            "SELECT run_id, experiment, study, spec_json FROM runs "
            "WHERE run_id IN (SELECT unnest(?))",
            [ids],
        )
        steps = store.rows(
            con,
            "SELECT DISTINCT stage, name FROM step_metrics WHERE run_id IN (SELECT unnest(?)) "
            "ORDER BY stage, name",
            [ids],
        )
        stages = store.rows(
            con,
            f"SELECT DISTINCT stage, position FROM stages WHERE run_id IN (SELECT unnest(?)) "
            f"AND {store.ON_CHAIN} ORDER BY position",
            [ids],
        )
    spec = json.loads(runs[0]["spec_json"] or "{}") if runs else {}
    wandb = (spec.get("tracking") or {}).get("wandb") or {}
    return {
        "group": (runs[0]["study"] or runs[0]["experiment"]) if runs else "ftlab",
        "project": wandb.get("project") or "ftlab",
        "search": spec.get("search") or {},
        "stages": list(dict.fromkeys(s["stage"] for s in stages)),
        "steps": [(s["stage"], s["name"]) for s in steps],
    }


def _sections(cmp: Comparison, facts: dict[str, Any], sweep: bool) -> dict[str, list[Any]]:
    import wandb_workspaces.reports.v2 as wr

    last = facts["stages"][-1] if facts["stages"] else "train"
    group = {} if sweep else {"groupby_aggfunc": "mean", "groupby_rangefunc": "minmax"}
    evals = [
        wr.BarPlot(
            title=f"{m} {'↑' if cmp.higher_is_better[m] else '↓'}",
            metrics=[_key(m, last)],
            **group,  # type: ignore[arg-type]
        )
        for m in cmp.metrics
    ]
    losses = [
        wr.LinePlot(title=f"{stage} {name}", x="Step", y=[f"{stage}/{name}"])
        for stage in facts["stages"]
        for name in ("loss", "eval_loss")
        if (stage, name) in facts["steps"]
    ]
    alignment = [
        wr.LinePlot(title=f"{stage} {name}", x="Step", y=[f"{stage}/{name}"])
        for stage, name in facts["steps"]
        if ALIGNMENT.search(name) and not name.startswith("eval_")
    ]
    cost = [
        wr.BarPlot(title="run time (s)", metrics=["wall_time_s"]),
        *(
            wr.BarPlot(title=f"{s} peak memory (MB)", metrics=[f"{s}/peak_memory_mb"])
            for s in facts["stages"]
        ),
        wr.BarPlot(title=f"{last} trainable parameters", metrics=[f"{last}/trainable_params"]),
    ]
    out: dict[str, list[Any]] = {
        "Evaluation": evals,
        "Loss": losses,
        "Alignment": alignment,
        "Cost": cost,
    }
    if sweep:
        objective = ((facts["search"].get("objectives") or [{}])[0]).get("metric", "eval_loss")
        target = _key(objective, last)
        columns = [
            wr.ParallelCoordinatesPlotColumn(metric=wr.Config(k))
            for k in (facts["search"].get("space") or {})
        ] + [wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(target))]
        out["Sweep"] = [
            wr.ParallelCoordinatesPlot(title=f"search space vs {objective}", columns=columns),
            wr.ParameterImportancePlot(with_respect_to=target),
        ]
    return {name: panels for name, panels in out.items() if panels}


def build(
    root: Path, cmp: Comparison, table_md: str, *, baseline_run: str | None, entity: str = ""
) -> Dashboard:
    """The workspace and report for the compared runs (all of one experiment or study);
    `baseline_run`: the W&B id of the compare baseline's run."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces import expr

    facts = _facts(root, cmp)
    sweep = any(r.trial is not None for r in cmp.rows)
    sections = _sections(cmp, facts, sweep)
    group, project = facts["group"], facts["project"]
    where = f"Group == '{group}'"
    by_variant: list[Any] = [] if sweep else [expr.Config("ftlab_variant")]
    workspace = ws.Workspace(
        entity=entity,
        project=project,
        name=f"ftlab {group}",
        sections=[ws.Section(name=n, panels=p, is_open=True) for n, p in sections.items()],
        runset_settings=ws.RunsetSettings(
            filters=where, groupby=by_variant, baseline_run=baseline_run
        ),
    )
    runset = wr.Runset(
        entity=entity,
        project=project,
        name=group,
        filters=where,
        groupby=[] if sweep else ["ftlab_variant"],
    )
    blocks: list[Any] = [
        wr.H1(f"ftlab: {group}"),
        wr.P(
            f"Baseline: {cmp.baseline.label if cmp.baseline else '(none)'}. "
            "Δ = run − baseline on the same items with a paired test, Holm-corrected "
            "(the table below is `ftlab compare`)."
        ),
        wr.MarkdownBlock(text=table_md),
        wr.P("The same rows as a W&B Table (logged by `ftlab dashboard`):"),
        wr.WeaveBlockSummaryTable(
            entity=entity, project=project, table_name=f"comparison_{_safe(group)}"
        ),
    ]
    for name, panels in sections.items():
        blocks += [wr.H2(name), wr.PanelGrid(runsets=[runset], panels=panels)]
    report = wr.Report(
        project=project,
        entity=entity,
        title=f"ftlab: {group}",
        description=f"{len(cmp.rows)} rows compared by ftlab",
        blocks=blocks,
    )
    titles = {
        n: [getattr(p, "title", None) or type(p).__name__ for p in panels]
        for n, panels in sections.items()
    }
    return Dashboard(group, project, workspace, report, titles)
