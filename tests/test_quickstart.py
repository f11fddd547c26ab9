"""What the quickstart answers, asserted on the embedded `tiny` model's deterministic build.

`tiny` is pretrained (runner/models.py) and the shipped data is learnable by it, so the
quickstart's LoRA / QLoRA / full comparison measures something. The margins below are the
ones measured on this build (README states them); a change that makes LoRA, QLoRA or the
intent task stop learning fails here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from scipy.stats import binomtest

from ftlab.reports import store

from .conftest import EXPERIMENTS

# Measured on this build (2 CPU cores; README), held-out loss in nats per reply token:
# full 0.612, LoRA 0.980 (+0.367), QLoRA 0.983 (+0.003 over LoRA); untrained 3.523.
LORA_VS_FULL = 0.45
QLORA_VS_LORA = 0.10


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import subprocess
    import sys

    runs = tmp_path_factory.mktemp("quickstart") / "runs"
    spec = EXPERIMENTS / "quickstart.yaml"
    log = runs.parent / "run.log"  # a file, as in CI: no terminal
    with log.open("w") as out:
        result = subprocess.run(
            [sys.executable, "-m", "ftlab.cli", "run", str(spec), f"output.dir={runs}"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    output = log.read_text()
    assert result.returncode == 0, output[-3000:]
    # the judge stage trains once, every other variant reuses it, and no table lists it
    assert output.count("stage judge: reusing cached full artifact") == 2
    table = output[output.index("Runs") :]
    assert "full → " not in table and "lora" in table
    return runs


@pytest.mark.slow
@pytest.mark.integration
def test_quickstart_log_in_a_file_is_one_line_per_milestone(quickstart: Path) -> None:
    """No carriage-return progress soup and no library bars in a CI log (issue 22)."""
    log = (quickstart.parent / "run.log").read_text()
    assert "\r" not in log
    for noise in ("it/s", "Running loglikelihood", "Tokenizing inputs", "0%|"):
        assert noise not in log, noise
    assert "run 1/3 lora · stage 1/2 judge (full) · training: step 136/136" in log
    assert "run 3/3 full · stage 2/2 sft (full)" in log
    assert "run 1/3 lora · eval lm_eval (sft)" in log
    assert log.rstrip().splitlines()[-1].startswith("done: 3 run(s) completed in ")


def _per_item(runs: Path, eval_name: str, metric: str) -> dict[tuple[str, str], list[float]]:
    rows = store.query(
        runs,
        f"""SELECT r.variant, s.target, s.item, s.value FROM eval_samples s
            JOIN runs r USING (run_id) WHERE s.eval = '{eval_name}' AND s.metric = '{metric}'
            ORDER BY s.item""",
    )
    out: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        out.setdefault((row["variant"], row["target"]), []).append(row["value"])
    return out


@pytest.mark.slow
@pytest.mark.integration
def test_sft_teaches_the_intent_task(quickstart: Path) -> None:
    """Every SFT method raises intent accuracy significantly above chance (1/8)."""
    acc = _per_item(quickstart, "lm_eval", "support_intent_mc.acc")
    for variant in ("lora", "qlora", "full"):
        hits = acc[(variant, "sft")]
        assert len(hits) == 120
        test = binomtest(int(sum(hits)), len(hits), 1 / 8, alternative="greater")
        print("intent", variant, sum(hits), test.pvalue)
        assert test.pvalue < 0.01, (variant, sum(hits))
    base_model = acc[("lora", "base")]
    assert binomtest(int(sum(base_model)), 120, 1 / 8, alternative="greater").pvalue > 0.01


@pytest.mark.slow
@pytest.mark.integration
def test_lora_qlora_and_full_learn_within_measured_margins(quickstart: Path) -> None:
    loss = {
        variant: sum(values) / len(values)
        for (variant, target), values in _per_item(quickstart, "perplexity", "loss").items()
        if target == "sft"
    }
    before = _per_item(quickstart, "perplexity", "loss")[("lora", "base")]
    print("held-out loss", loss, "untrained", sum(before) / len(before))
    assert max(loss.values()) < sum(before) / len(before) / 2  # every method learns
    assert loss["full"] < loss["lora"]
    assert loss["lora"] - loss["full"] <= LORA_VS_FULL, loss  # LoRA (the spec as written)
    assert loss["qlora"] - loss["lora"] <= QLORA_VS_LORA, loss


@pytest.mark.slow
@pytest.mark.integration
def test_the_trained_judge_agrees_with_held_out_human_pairs(quickstart: Path) -> None:
    rows = store.query(
        quickstart,
        """SELECT r.variant, e.target, e.metric, e.value FROM eval_results e
           JOIN runs r USING (run_id) WHERE e.eval = 'judge_vs_base'""",
    )
    got = {(r["variant"], r["target"], r["metric"]): r["value"] for r in rows}
    print({k: round(v, 3) for k, v in got.items() if k[2] != "judge_calls"})
    # measured 0.85 and 0.77 on the 30 held-out pairs (README); the judge never trained
    # on them
    assert got[("lora", "sft", "calibration_agreement")] >= 0.70
    assert got[("lora", "sft", "calibration_consistency")] >= 0.70


@pytest.mark.slow
@pytest.mark.integration
def test_the_trained_judge_prefers_sft_replies_over_the_base_models(quickstart: Path) -> None:
    """Each SFT method's replies against the base model's, in both orders: the judge's
    wins outnumber its losses significantly (sign test on the items with a verdict that
    survived the swap; a flip is a tie). Measured: LoRA 30 won / 1 lost / 29 tied of 60,
    QLoRA 34/2/24, full 53/0/7 (README)."""
    wins = _per_item(quickstart, "judge_vs_base", "win")
    for variant in ("lora", "qlora", "full"):
        outcomes = wins[(variant, "sft")]
        assert len(outcomes) == 60
        won, lost = outcomes.count(1.0), outcomes.count(0.0)
        p = binomtest(won, won + lost, 0.5, alternative="greater").pvalue
        print("judge vs base", variant, won, lost, p)
        assert p < 0.01, (variant, won, lost)


@pytest.mark.slow
@pytest.mark.integration
def test_quickstart_report_leaderboard_fits_and_is_the_readme_screenshot(
    quickstart: Path,
) -> None:
    """`ftlab report` of the quickstart in headless Chromium: one leaderboard row per run,
    named by label (`lora`, not `base`), the whole table inside its box at 1280 px. The
    screenshot (test-artifacts/quickstart-report.png) is README's docs/report.png."""
    from playwright.sync_api import sync_playwright

    from ftlab.reports import html as html_mod

    from .conftest import ROOT, chromium

    out = html_mod.write(quickstart, ["quickstart"], None)
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(out.resolve().as_uri())
        rows = page.locator("#leaderboard tbody tr")
        labels = [rows.nth(i).locator("td").first.inner_text() for i in range(rows.count())]
        assert labels == ["lora (baseline)", "qlora", "full"], labels
        fits = page.evaluate(
            "() => { const t = document.querySelector('#leaderboard');"
            " return [t.scrollWidth, t.parentElement.clientWidth]; }"
        )
        assert fits[0] <= fits[1], f"leaderboard {fits[0]} px wide in a {fits[1]} px box"
        page.locator("#leaderboard").scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts / "quickstart-report.png"), full_page=False)
        browser.close()


@pytest.mark.slow
@pytest.mark.integration
def test_quickstart_in_the_mlflow_ui_is_the_readme_screenshot(
    quickstart: Path, mlflow_server: str
) -> None:
    """Issue 20: the quickstart's runs logged to a real `mlflow server` (`ftlab mlflow log`,
    the backfill path) and compared in MLflow's own UI in headless Chromium; the
    screenshot (test-artifacts/mlflow-quickstart.png) is README's docs/mlflow.png."""
    import json
    import subprocess
    import sys
    import urllib.request

    from playwright.sync_api import sync_playwright

    from .conftest import ROOT, chromium

    latest = {
        r["variant"]: r["run_id"]
        for r in store.query(quickstart, "SELECT variant, run_id FROM runs ORDER BY created")
    }
    logged = subprocess.run(
        [
            sys.executable,
            "-m",
            "ftlab.cli",
            "mlflow",
            "log",
            *latest.values(),
            "--uri",
            mlflow_server,
            "--dir",
            str(quickstart),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert logged.returncode == 0, logged.stdout[-2000:] + logged.stderr[-2000:]
    api = mlflow_server + "/api/2.0/mlflow"
    with urllib.request.urlopen(f"{api}/experiments/get-by-name?experiment_name=quickstart") as r:
        exp = json.loads(r.read())["experiment"]["experiment_id"]
    # `ftlab report` puts the HTML report beside each run logged to MLflow
    reported = subprocess.run(
        [sys.executable, "-m", "ftlab.cli", "report", "--dir", str(quickstart)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert reported.returncode == 0, reported.stdout[-2000:] + reported.stderr[-2000:]
    assert "logged to MLflow as report/latest.html of 3 run(s)" in reported.stdout
    query = json.dumps({"experiment_ids": [exp]}).encode()
    search = urllib.request.Request(
        f"{api}/runs/search", query, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(search) as r:
        mlflow_runs = json.loads(r.read())["runs"]
    for mlflow_run in mlflow_runs:
        rid = mlflow_run["info"]["run_id"]
        url = f"{mlflow_server}/api/2.0/mlflow/artifacts/list?run_id={rid}&path=report"
        with urllib.request.urlopen(url) as r:
            files = [f["path"] for f in json.loads(r.read()).get("files", [])]
        assert files == ["report/latest.html"], files
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{mlflow_server}/#/experiments/{exp}/runs?compareRunsMode=CHART")
        search = page.get_by_placeholder("Search metric charts")
        search.wait_for(timeout=60_000)
        for close in page.locator("button[aria-label*='lose']").all():  # the assistant panel
            close.click(timeout=2000)
        search.fill("eval/perplexity")
        page.wait_for_timeout(2000)
        body = page.inner_text("body")
        assert all(run_id in body for run_id in latest.values()), body[:2000]
        assert "eval/perplexity/loss" in body
        page.screenshot(path=str(artifacts / "mlflow-quickstart.png"), full_page=False)
        browser.close()
