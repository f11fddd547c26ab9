"""Comparison reports and W&B, on one small real experiment: three SFT runs on the tiny
model (the spec as written, the same recipe with another seed, and a learning rate too
small to learn), each evaluated for held-out perplexity and preference accuracy, logged
to W&B offline. `ftlab compare` groups the seeds and tests each run against the
baseline on the same items; `ftlab report` is opened in a real headless Chromium."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import pytest

from ftlab.reports import compare as compare_mod
from ftlab.reports import html as html_mod
from ftlab.reports import store
from ftlab.runner import tracking

from .conftest import DATA, ROOT, chromium

SPEC = """\
name: reportdemo
seed: 3
model: tiny
data:
  sft: {{path: {data}/support_sft.jsonl, overlong: truncate, max_rows: 96, val_fraction: 0.25}}
  prefs: {{path: {data}/support_prefs.jsonl, overlong: truncate, format: preference, max_rows: 60,
          val_fraction: 0.5}}
stages:
  - name: sft
    method: lora
    adapter: {{r: 8, alpha: 16, dropout: 0.0}}
    train: {{learning_rate: 5.0e-3, max_steps: 16, batch_size: 8, max_length: 96,
             eval_steps: 4, logging_steps: 2, precision: fp32}}
variants:
  seed2: {{seed: 11}}
  frozen: {{stages.sft.train.learning_rate: 1.0e-7}}
evals:
  - {{name: ppl, kind: perplexity, data: sft}}
  - {{name: prefs, kind: preference, data: prefs}}
tracking: {{wandb: {{project: ftlab-test, mode: offline}}}}
output: {{dir: {runs}}}
"""
SECRET = "sk-test-should-never-be-written-0123456789"


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from typer.testing import CliRunner

    from ftlab.cli.main import app

    tmp = tmp_path_factory.mktemp("reports")
    runs = tmp / "runs"
    spec = tmp / "reportdemo.yaml"
    spec.write_text(SPEC.format(data=DATA, runs=runs))
    env = {"WANDB_API_KEY": SECRET, "WANDB_DIR": str(tmp / "wandb-home")}
    result = CliRunner().invoke(app, ["run", str(spec)], env=env)
    assert result.exit_code == 0, result.output
    return runs


@pytest.mark.integration
def test_compare_groups_seeds_and_tests_against_the_baseline(experiment: Path) -> None:
    cmp = compare_mod.compare(experiment)  # no arguments: the latest experiment
    assert [r.label for r in cmp.rows] == ["default ×2 seeds", "frozen"]
    assert cmp.metrics == ["ppl.loss", "prefs.accuracy", "eval_loss"]
    base, frozen = cmp.rows
    assert base.baseline and len(base.run_ids) == 2
    assert base.params == {"stages.sft.train.learning_rate": 5e-3}
    seeds = base.cells["ppl.loss"]
    assert seeds.sd is not None and seeds.sd > 0  # two seeds → a spread
    loss = frozen.cells["ppl.loss"]
    assert loss.diff is not None and loss.diff.test == "paired bootstrap" and loss.diff.paired
    assert loss.diff.delta > 0 and loss.significant  # not learning is worse, and it shows
    # the token-weighted loss: Δ is the difference of the values shown (fresh-eyes: a Δ of
    # item means beside weighted values did not add up), and a note says so
    assert loss.diff.delta == pytest.approx(loss.value - seeds.value)
    assert any("ppl.loss: Δ is the difference of the values shown" in n for n in cmp.notes)
    assert loss.p_adjusted is not None and loss.p_adjusted >= loss.diff.p
    acc = frozen.cells["prefs.accuracy"]
    assert acc.diff is not None and acc.diff.test == "mcnemar" and acc.diff.n == 30
    assert frozen.cells["eval_loss"].diff.test == ""  # type: ignore[union-attr]
    # one run against another by id, the other as baseline
    one = compare_mod.compare(
        experiment, [base.run_ids[1], frozen.run_ids[0]], baseline=frozen.run_ids[0][:30]
    )
    assert [r.baseline for r in one.rows] == [False, True]
    # intervals recomputed from the items: BCa differs from the stored Wilson interval,
    # the token-weighted perplexity keeps its own (it is not a plain mean of items)
    bca = compare_mod.compare(experiment, ci="bca")
    stored, again = frozen.cells["prefs.accuracy"], bca.rows[1].cells["prefs.accuracy"]
    assert again.value == stored.value and again.low is not None
    assert any("ppl.loss: not a plain mean" in n for n in bca.notes)
    assert bca.rows[1].cells["ppl.loss"].low == frozen.cells["ppl.loss"].low
    with pytest.raises(compare_mod.CompareError, match="not a run id, experiment"):
        compare_mod.compare(experiment, ["no-such-experiment"])
    with pytest.raises(compare_mod.CompareError, match="they have: .*prefs.margin"):
        compare_mod.compare(experiment, metrics=["prefs.nope"])


@pytest.mark.integration
def test_compare_cli_formats(experiment: Path) -> None:
    from typer.testing import CliRunner

    from ftlab.cli.main import app

    run = CliRunner()
    table = run.invoke(app, ["compare", "--dir", str(experiment)])
    assert table.exit_code == 0, table.output
    assert "default ×2 seeds (baseline)" in table.output and "frozen" in table.output
    assert "Δ vs baseline" in table.output and "▼*" in table.output  # significantly worse
    recs = json.loads(
        run.invoke(app, ["compare", "--dir", str(experiment), "--format", "json"]).output
    )
    assert [r["run"] for r in recs] == ["default ×2 seeds", "frozen"]
    assert recs[1]["ppl.loss:test"] == "paired bootstrap" and recs[1]["ppl.loss:significant"]
    text = run.invoke(
        app, ["compare", "--dir", str(experiment), "--format", "csv", "-m", "prefs.accuracy"]
    ).output
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[1]["prefs.accuracy:test"] == "mcnemar" and "ppl.loss" not in rows[1]
    md = run.invoke(app, ["compare", "--dir", str(experiment), "--format", "markdown"]).output
    assert md.startswith("| run | methods |") and "| frozen |" in md
    bad = run.invoke(app, ["compare", "nope", "--dir", str(experiment)])
    assert bad.exit_code == 2 and "experiments there: reportdemo" in bad.output
    # --columns / --hide: spec keys by their last parts, costs by name, metrics by --hide
    only = ["compare", "--dir", str(experiment), "--format", "json"]
    picked = json.loads(run.invoke(app, [*only, "-c", "learning_rate,recipe_time"]).output)[1]
    assert "param:stages.sft.train.learning_rate" in picked and "recipe_time_s" in picked
    assert "peak_memory_mb" not in picked and "trainable_params" not in picked
    hidden = json.loads(run.invoke(app, [*only, "--hide", "train.*", "--hide", "ppl.*"]).output)
    assert not any(k.startswith(("param:", "ppl.")) for k in hidden[1]), hidden[1]
    assert "prefs.accuracy" in hidden[1] and "peak_memory_mb" in hidden[1]
    named = json.loads(run.invoke(app, [*only, "--label", "learning_rate"]).output)
    assert [r["run"] for r in named] == ["learning_rate=0.005 ×2 seeds", "learning_rate=1e-07"]
    unnamed = run.invoke(app, ["compare", "--dir", str(experiment), "--label", "rank"])
    assert unnamed.exit_code == 2 and "not a spec key that differs" in unnamed.output
    typo = run.invoke(app, ["compare", "--dir", str(experiment), "--hide", "learning_rat"])
    assert typo.exit_code == 2 and "no column 'learning_rat'" in typo.output
    assert "stages.sft.train.learning_rate" in typo.output


LAYOUT = """() => {
  const table = document.querySelector('#leaderboard'), box = table.parentElement;
  return {table: table.scrollWidth, box: box.clientWidth,
          overflowX: getComputedStyle(box).overflowX,
          page: document.documentElement.scrollWidth};
}"""


@pytest.mark.integration
def test_report_opens_in_headless_chromium(experiment: Path) -> None:
    from playwright.sync_api import sync_playwright

    out = html_mod.write(experiment, None, None)
    page_text = out.read_text()
    assert "http://" not in page_text and "https://" not in page_text  # nothing to fetch
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.route(
            "**/*",
            lambda route: (
                route.abort() if not route.request.url.startswith("file:") else route.continue_()
            ),
        )  # offline: any fetch would fail loudly
        page.goto(out.resolve().as_uri())
        rows = page.locator("#leaderboard tbody tr")
        assert [rows.nth(i).locator("td").first.inner_text() for i in range(rows.count())] == [
            "default ×2 seeds (baseline)",
            "frozen",
        ]
        assert page.locator("#leaderboard td.sig.worse").count() >= 1
        charts = page.locator("#cost figure")
        assert charts.count() == 3  # one per metric, each with one point per row
        assert charts.first.locator("circle").count() == 2
        assert page.locator("#curves svg polyline").count() >= 4
        page.select_option("#ex-eval", "ppl")
        page.select_option("#ex-a", "default ×2 seeds")
        page.select_option("#ex-b", "frozen")
        assert "items differ" in page.locator("#ex-count").inner_text()
        assert page.locator("#ex-items .item").count() > 0
        page.screenshot(path=str(artifacts / "report.png"), full_page=True)
        # the leaderboard fits its box at common widths (long dotted names wrap), scrolls
        # inside it when the window is too narrow, and the page never scrolls sideways
        # (the explorer's preference items hold long unbroken JSON)
        page.select_option("#ex-eval", "prefs")
        for width in (1280, 900, 600):
            page.set_viewport_size({"width": width, "height": 900})
            box = page.evaluate(LAYOUT)
            assert box["page"] <= width, f"the page scrolls sideways at {width} px: {box}"
            if width >= 900:
                assert box["table"] <= box["box"], f"leaderboard cut off at {width} px: {box}"
            assert box["overflowX"] == "auto"
        browser.close()
    assert errors == []
    assert (artifacts / "report.png").stat().st_size > 10_000


@pytest.mark.integration
def test_wandb_offline_files_hold_config_summary_and_tables(experiment: Path) -> None:
    runs = sorted(d for d in experiment.iterdir() if (d / "run.json").exists())
    assert len(runs) == 3
    for run in runs:
        record = json.loads((run / "wandb.json").read_text())
        assert record["mode"] == "offline"
        folder = Path(record["folder"])
        logged = tracking.read_offline(folder)
        assert logged["group"] == "reportdemo" and logged["job_type"] == "lora"
        assert "lora" in logged["tags"]
        assert logged["config"]["stages.sft.method"] == "lora"
        assert logged["config"]["model.name"] == "tiny"
        assert not any("api_key" in k and not k.endswith("_env") for k in logged["config"])
        summary = logged["summary"]
        assert 0.0 <= summary["eval/prefs/accuracy"] <= 1.0
        assert summary["eval/ppl/loss_ci_low"] <= summary["eval/ppl/loss"]
        assert summary["state"] == "completed"
        curve = [h["sft/loss"] for h in logged["history"] if "sft/loss" in h]
        assert len(curve) >= 4 and curve[-1] < curve[0] * 1.5
        files = folder / "files"
        tables = list((files / "media" / "table").rglob("*.table.json"))
        prefs = [t for t in tables if "prefs" in t.name]
        assert prefs, tables
        table = json.loads(prefs[0].read_text())
        assert "score:correct" in table["columns"] and len(table["data"]) == 30
        meta = json.loads((run / "run.json").read_text())
        payload = tracking.run_payload(tracking.RunDir(run))
        assert payload["group"] == meta["experiment"] == "reportdemo"
        assert payload["job_type"] == "lora"
        assert any(k.startswith("sft/loss") for c in payload["curves"] for k in c["values"])
    # the key in the environment never lands anywhere in the runs directory
    for path in experiment.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert SECRET.encode() not in path.read_bytes(), path
    assert tracking.offline_runs(experiment)  # waiting for `ftlab wandb sync`


@pytest.mark.integration
def test_dashboard_is_a_workspace_and_report_for_the_experiment(
    experiment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 20: `ftlab dashboard` builds the W&B workspace and report offline: runs of the
    experiment's group, grouped by variant, the compare baseline as baseline run, eval /
    loss / cost sections, the compare table in the report; --save without a key writes the
    definition and says how to save it."""
    from typer.testing import CliRunner

    from ftlab.cli.main import app

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(experiment / "no-netrc"))
    monkeypatch.setattr(tracking, "api_key", lambda: None)
    done = CliRunner().invoke(app, ["dashboard", "--dir", str(experiment), "--save"])
    assert done.exit_code == 1, done.output
    assert "not saved: no API key configured" in done.output
    assert f"ftlab dashboard reportdemo --save --dir {experiment}" in done.output
    spec = json.loads((experiment / "dashboards" / "reportdemo.json").read_text())
    workspace, report = spec["workspace"], spec["report"]
    settings = workspace["runset_settings"]
    assert workspace["project"] == "ftlab-test" and settings["filters"] == "Group == 'reportdemo'"
    assert settings["groupby"] == [{"name": "ftlab_variant"}]
    baseline = compare_mod.compare(experiment).baseline
    assert baseline is not None and settings["baseline_run"] == tracking.wandb_id(
        baseline.run_ids[0]
    )
    sections = {x["name"]: x["panels"] for x in workspace["sections"]}
    assert list(sections) == ["Evaluation", "Loss", "Cost"]  # no alignment curves in SFT
    bars = {p["title"]: p["metrics"] for p in sections["Evaluation"]}
    assert bars == {
        "ppl.loss ↓": ["eval/ppl/loss"],
        "prefs.accuracy ↑": ["eval/prefs/accuracy"],
        "eval_loss ↓": ["sft/eval_loss"],
    }
    assert all(p["groupby_rangefunc"] == "minmax" for p in sections["Evaluation"])  # seeds
    assert [p["y"] for p in sections["Loss"]] == [["sft/loss"], ["sft/eval_loss"]]
    kinds = [b.get("text", "") for b in report["blocks"]]
    assert any(t.startswith("| run | methods |") and "frozen" in t for t in kinds)
    grids = [b for b in report["blocks"] if "runsets" in b]
    assert len(grids) == 3 and grids[0]["runsets"][0]["groupby"] == ["ftlab_variant"]
    # what the runs logged matches the keys the panels plot
    run = next(d for d in experiment.iterdir() if (d / "wandb.json").exists())
    logged = tracking.read_offline(Path(json.loads((run / "wandb.json").read_text())["folder"]))
    assert logged["config"]["ftlab_variant"] in ("default", "seed2", "frozen")
    assert "eval/ppl/loss" in logged["summary"] and "sft/eval_loss" in logged["summary"]
    # the compare rows as a W&B Table in a `comparison` run of the group, which the report
    # embeds, and `ftlab wandb sync` finds (offline here)
    assert "comparison table: W&B run 'reportdemo comparison'" in done.output
    (table_run,) = [p for p in tracking.offline_runs(experiment) if "dashboards" in str(p)]
    table = tracking.read_offline(table_run)
    assert (table["group"], table["job_type"]) == ("reportdemo", "comparison")
    assert table["summary"]["comparison_reportdemo._type"] == "table-file"
    (table_file,) = table_run.glob("files/media/table/comparison_reportdemo_*.table.json")
    logged_table = json.loads(table_file.read_text())
    assert {"run", "ppl.loss", "ppl.loss:delta", "ppl.loss:p"} <= set(logged_table["columns"])
    assert len(logged_table["data"]) == len(compare_mod.compare(experiment).rows)
    assert any(b.get("table_name") == "comparison_reportdemo" for b in report["blocks"])


def test_wandb_mode_auto_never_prompts_or_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", "/nonexistent")  # no ~/.netrc either
    mode, notice = tracking.resolve_mode("auto")
    assert mode == "offline" and "no API key" in notice
    with pytest.raises(tracking.TrackingError, match="WANDB_API_KEY"):
        tracking.resolve_mode("online")
    # a key but a server that does not answer: offline, after the short probe
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # discard port: refused
    mode, notice = tracking.resolve_mode("auto")
    assert mode == "offline" and "did not answer" in notice and SECRET not in notice
    flat = tracking.flat_config(
        {"stages": [{"name": "sft", "params": {"api_key": SECRET, "api_key_env": "KEY"}}]}
    )
    assert flat == {"stages.sft.name": "sft", "stages.sft.params.api_key_env": "KEY"}
    assert os.environ.get("WANDB_MODE") is None


HOSTILE = "<!--<script>alert('x')</script> & </script><script>"


def _run_with_judged_item(runs: Path, variant: str, *, lr: str, win: int) -> None:
    """A copy of the golden run directory with one judge eval whose prompt, reply and
    verdict hold markup that ends or opens a <script> element."""
    fixture = ROOT / "tests" / "fixtures" / "run_v1" / "quickstart-base-20261123-104159-e458"
    run = runs / fixture.name.replace("-base-", f"-{variant}-")
    shutil.copytree(fixture, run, ignore=shutil.ignore_patterns("evals"))  # only this eval
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "variant": variant, "run_id": run.name}))
    spec = run / "spec.yaml"
    spec.write_text(spec.read_text().replace("learning_rate: 0.003", f"learning_rate: {lr}"))
    evals = run / "evals" / "judged"
    evals.mkdir(parents=True)
    metric = {"value": float(win), "low": 0.0, "high": 1.0, "n": 1}
    summary = {
        "eval": "judged",
        "kind": "judge",
        "targets": {"sft": {"metrics": {"win_rate": metric}}},
        "last": "sft",
        "headline": "win_rate",
        "higher_is_better": True,
    }
    (evals / "summary.json").write_text(json.dumps(summary))
    sample = {
        "target": "sft",
        "item": "hostile-1",
        "scores": {"win": win},
        "prompt": f"prompt {HOSTILE}",
        "response": f"reply {HOSTILE}",
        "verdict": {"verdict": "A", "raw": f"verdict {HOSTILE}"},
    }
    (evals / "samples.jsonl").write_text(json.dumps(sample, ensure_ascii=False) + "\n")


def test_report_survives_script_markup_in_prompts_replies_and_verdicts(tmp_path: Path) -> None:
    """`<!--<script>` in a sample must not swallow the page's code: both <script> elements
    come out whole and the explorer, run in Chromium, lists the item with its text."""
    from html.parser import HTMLParser

    from playwright.sync_api import sync_playwright

    from ftlab.reports import store

    runs = tmp_path / "runs"
    _run_with_judged_item(runs, "base", lr="0.003", win=0)
    _run_with_judged_item(runs, "hot", lr="0.03", win=1)
    store.sync(runs)
    out = html_mod.write(runs, ["quickstart"], None)

    class Scripts(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.scripts: list[tuple[dict[str, str | None], str]] = []
            self._open: dict[str, str | None] | None = None

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag == "script":
                self._open = dict(attrs)
                self.scripts.append((self._open, ""))

        def handle_data(self, data: str) -> None:
            if self._open is not None:
                attrs, text = self.scripts[-1]
                self.scripts[-1] = (attrs, text + data)

        def handle_endtag(self, tag: str) -> None:
            if tag == "script":
                self._open = None

    parser = Scripts()
    parser.feed(out.read_text())
    assert [a.get("id") for a, _ in parser.scripts] == ["explorer-data", None]
    # no markup inside the data: `<!--` and `<script` open HTML's "script data (double)
    # escaped" states, where `</script>` no longer ends the element
    assert not set("<>&") & set(parser.scripts[0][1])
    data = json.loads(parser.scripts[0][1])
    assert data["judged"]["hot"]["hostile-1"]["record"]["prompt"].endswith(HOSTILE)
    assert "function ()" in parser.scripts[1][1] and "runs();" in parser.scripts[1][1]

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: (errors.append(f"dialog: {d.message}"), d.dismiss()))
        page.goto(out.resolve().as_uri())
        assert page.locator("script").count() == 2
        assert page.locator("#ex-count").inner_text() == "1 of 1 shared items differ"
        item = page.locator("#ex-items .item")
        assert item.count() == 1
        text = item.inner_text()
        assert f"prompt {HOSTILE}" in text and f"reply {HOSTILE}" in text
        assert f"verdict {HOSTILE}" in text
        browser.close()
    assert errors == []


@pytest.mark.integration
def test_seeds_run_every_variant_once_per_seed_and_compare_tests_both_levels(tmp_path) -> None:
    """`seeds: [1, 2, 3]`: the spec as written and its variant each run three times, on the
    same held-out items (the split keeps `seed`); the untrained base model's eval is
    computed once; compare shows one row per recipe with its seed spread and tests it
    with the two-level bootstrap."""
    from typer.testing import CliRunner

    from ftlab.cli.main import app

    runs = tmp_path / "runs"
    text = SPEC.format(data=DATA, runs=runs).replace("seed: 3\n", "seed: 3\nseeds: [1, 2, 3]\n")
    text = text.replace("  seed2: {seed: 11}\n", "").replace("max_steps: 16", "max_steps: 6")
    text = text.replace(
        "  - {name: ppl, kind: perplexity, data: sft}",
        "  - {name: ppl, kind: perplexity, data: sft, on: [base, last]}",
    )
    text = text.replace("tracking: {wandb: {project: ftlab-test, mode: offline}}\n", "")
    (tmp_path / "seeds.yaml").write_text(text)
    result = CliRunner().invoke(app, ["run", str(tmp_path / "seeds.yaml")])
    assert result.exit_code == 0, result.output
    assert result.output.count("(training seed ") == 6
    recorded = store.query(runs, "SELECT variant, seed FROM runs ORDER BY variant, seed")
    assert [(r["variant"], r["seed"]) for r in recorded] == [
        ("default", 1),
        ("default", 2),
        ("default", 3),
        ("frozen", 1),
        ("frozen", 2),
        ("frozen", 3),
    ]
    items = store.query(
        runs,
        """SELECT count(DISTINCT item) AS n, count(DISTINCT run_id) AS runs FROM eval_samples
           WHERE eval = 'ppl' AND target = 'sft'""",
    )
    assert items[0]["runs"] == 6 and items[0]["n"] == 24  # one split for every seed
    base_evals = store.query(
        runs,
        """SELECT count(DISTINCT run_id) AS n FROM eval_results
           WHERE target = 'base' AND cached_from = ''""",
    )
    assert base_evals[0]["n"] == 1  # the base model scored by one run, the others reuse it
    cmp = compare_mod.compare(runs)
    assert [r.label for r in cmp.rows] == ["default ×3 seeds", "frozen ×3 seeds"]
    frozen = cmp.rows[1].cells["ppl.loss"]
    assert frozen.sd is not None and frozen.diff is not None
    assert frozen.diff.test == "two-level bootstrap" and frozen.diff.n == 24
