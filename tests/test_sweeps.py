"""Sweeps: the search space is checked before a study starts; trials are normal runs;
stages are reused; the pruner stops a bad trial early; status/best; a killed worker's
trial is failed and retried when the sweep resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftlab.runner.rundir import RunDir
from ftlab.runner.spec.errors import SpecError
from ftlab.sweeps import study as study_mod

from .conftest import DATA

SPEC = """\
name: sweeptest
seed: 3
data:
  sft: {{path: {data}/support_sft.jsonl, overlong: truncate, max_rows: 48, val_fraction: 0.25}}
stages:
  - name: sft
    method: lora
    adapter: {{r: 4, alpha: 8, dropout: 0.0}}
    train: {{learning_rate: 5.0e-3, max_steps: {steps}, batch_size: 4, max_length: 64,
             eval_steps: 2, logging_steps: 2, save_steps: 10, precision: fp32}}
search:
  n_trials: {n}
  sampler: random
  pruner: median
  space:
    stages.sft.train.learning_rate: [5.0e-3, 1.0e-7]
    stages.sft.adapter.r: [4, 8]
output: {{dir: {runs}}}
"""


def _write(tmp_path: Path, n: int = 4, steps: int = 8, **replace: str) -> Path:
    text = SPEC.format(data=DATA, runs=tmp_path / "runs", n=n, steps=steps)
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def test_bad_space_key_fails_before_the_study_starts(tmp_path) -> None:
    path = _write(tmp_path, **{"stages.sft.train.learning_rate:": "stages.sft.train.learnin_rate:"})
    with pytest.raises(SpecError) as err:
        study_mod.load(path)
    text = err.value.format()
    assert "learnin_rate" in text and "sweep.yaml:" in text
    assert not (tmp_path / "runs" / "sweeps.db").exists()
    bad_value = _write(tmp_path, **{"[4, 8]": "[4, -8]"})
    with pytest.raises(SpecError, match="adapter.r"):
        study_mod.load(bad_value)


def test_startup_trials_reach_the_sampler(tmp_path) -> None:
    path = _write(tmp_path, **{"sampler: random": "sampler: tpe\n  startup_trials: 3"})
    assert study_mod._sampler(study_mod.load(path))._n_startup_trials == 3
    default = study_mod.load(_write(tmp_path, **{"sampler: random": "sampler: tpe"}))
    assert study_mod._sampler(default)._n_startup_trials == 10  # Optuna's
    with pytest.raises(SpecError, match="search.startup_trials"):
        study_mod.load(
            _write(tmp_path, **{"sampler: random": "sampler: random\n  startup_trials: 3"})
        )


def test_multi_objective_cannot_prune_and_objectives_must_exist(tmp_path) -> None:
    path = _write(
        tmp_path,
        **{
            "  pruner: median": "  pruner: median\n  objectives: "
            "[{metric: eval_loss}, {metric: wall_time_s}]"
        },
    )
    with pytest.raises(SpecError, match="cannot prune"):
        study_mod.load(path)
    path = _write(
        tmp_path,
        **{
            "  pruner: median": "  pruner: median\n  objectives: "
            "[{metric: judge.win_rate, direction: maximize}]"
        },
    )
    with pytest.raises(SpecError, match="search.objectives.0.metric"):
        study_mod.load(path)


@pytest.mark.integration
def test_trials_are_runs_reused_and_pruned(tmp_path) -> None:
    """Trials 0 and 1 learn (lr 5e-3); trial 2 barely moves (lr 1e-7) and the median
    pruner stops it at its first evaluation; trial 3 repeats trial 0's settings and
    reuses its trained stage."""
    from optuna.trial import TrialState
    from typer.testing import CliRunner

    from ftlab.cli.main import app
    from ftlab.reports import store

    tracked = "tracking: {wandb: {project: sweep-test, mode: offline}}\noutput:"
    path = _write(tmp_path, **{"output:": tracked})
    sweep = study_mod.load(path)
    study = study_mod.open_study(sweep)
    lr, r = "stages.sft.train.learning_rate", "stages.sft.adapter.r"
    for params in ({lr: 5e-3, r: 4}, {lr: 5e-3, r: 8}, {lr: 1e-7, r: 4}, {lr: 5e-3, r: 4}):
        study.enqueue_trial(params)
    study_mod.run_sweep(sweep)
    trials = study.get_trials()
    assert [t.state for t in trials] == [
        TrialState.COMPLETE,
        TrialState.COMPLETE,
        TrialState.PRUNED,
        TrialState.COMPLETE,
    ]
    pruned = RunDir(tmp_path / "runs" / trials[2].user_attrs["run_id"])
    assert pruned.status()["state"] == "pruned"
    steps = [m["step"] for m in pruned.metrics() if "loss" in m]
    assert max(steps) < 8  # stopped before max_steps
    assert trials[3].user_attrs["reused_stages"] == ["sft"]
    assert trials[3].value == trials[0].value
    rows = store.query(tmp_path / "runs", "SELECT study, trial, state FROM runs ORDER BY trial")
    assert [(r["study"], r["trial"], r["state"]) for r in rows] == [
        ("sweeptest", 0, "completed"),
        ("sweeptest", 1, "completed"),
        ("sweeptest", 2, "pruned"),
        ("sweeptest", 3, "completed"),
    ]
    result = CliRunner().invoke(app, ["sweep", "status", str(path)])
    assert result.exit_code == 0, result.output
    assert "pruned: 1" in result.output and "optuna-dashboard sqlite:///" in result.output
    assert "min in all" in result.output
    pruned_row = next(ln for ln in result.output.splitlines() if "│ pruned" in ln)
    cells = [c.strip() for c in pruned_row.split("│")[1:-1]]
    assert cells[0] == "2" and cells[5] == "2"  # last step: its first evaluation
    assert cells[6].endswith("s") and cells[6] != "-"  # its time
    out = tmp_path / "best.yaml"
    result = CliRunner().invoke(app, ["sweep", "best", str(path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    from ftlab.runner.spec.load import load_spec

    best = load_spec(out)
    assert best.stages[0].train.learning_rate == 5e-3
    assert best.stages[0].adapter.r == trials[int(study.best_trial.number)].params[r]
    # compare / report cover sweeps: one row per trial, the sweep section in the page
    from ftlab.reports import compare, html

    cmp = compare.compare(tmp_path / "runs")  # the latest sweep
    assert [row.label for row in cmp.rows] == ["trial 0", "trial 1", "trial 2", "trial 3"]
    page = html.build(tmp_path / "runs")
    assert "Optimisation history (eval_loss, min)" in page
    assert "Parameter importance" in page and "3 completed of 4 trials" in page
    # W&B: every trial is a run of the study's group; the pruned one says so (issue 20)
    from ftlab.runner import tracking

    (logged,) = [tracking.read_offline(f) for f in pruned.path.glob("wandb/offline-run-*")]
    assert logged["group"] == "sweeptest" and logged["summary"]["state"] == "pruned"
    # the W&B dashboard of the sweep: no grouping (trials are points), a sweep section
    shown = CliRunner().invoke(app, ["dashboard", "sweeptest", "--dir", str(tmp_path / "runs")])
    assert shown.exit_code == 0, shown.output
    spec = json.loads((tmp_path / "runs" / "dashboards" / "sweeptest.json").read_text())
    workspace = spec["workspace"]
    assert workspace["project"] == "sweep-test"
    assert workspace["runset_settings"]["filters"] == "Group == 'sweeptest'"
    assert workspace["runset_settings"]["groupby"] == []
    (sweep_section,) = [x for x in workspace["sections"] if x["name"] == "Sweep"]
    coords, importance = sweep_section["panels"]
    assert [c["metric"]["name"] for c in coords["columns"]] == [r, lr, "sft/eval_loss"]
    assert importance["with_respect_to"] == "sft/eval_loss"


@pytest.mark.integration
def test_killed_worker_trial_is_failed_and_retried_on_resume(tmp_path) -> None:
    path = _write(
        tmp_path,
        n=2,
        steps=60,
        **{
            "sampler: random": "sampler: grid",
            "[5.0e-3, 1.0e-7]": "[5.0e-3]",
            "pruner: median": "pruner: none",
        },
    )
    env = {**os.environ, "FTLAB_SWEEP_HEARTBEAT_S": "1"}
    cmd = [sys.executable, "-m", "ftlab.cli", "sweep", str(path)]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    runs = tmp_path / "runs"
    deadline = time.time() + 240
    while time.time() < deadline:  # wait until the first trial is training
        metrics = list(runs.glob("sweeptest-trial0-*/metrics.jsonl"))
        if metrics and metrics[0].read_text().count("\n") >= 3:
            break
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("the first trial never started training")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(4)  # past the heartbeat grace period (3 × 1 s)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    import optuna

    study = optuna.load_study(
        study_name="sweeptest",
        storage=study_mod.storage(study_mod.storage_url(study_mod.load(path).spec)),
    )
    states = [t.state.name for t in study.get_trials()]
    assert states[0] == "FAIL"  # the killed trial, failed by its stale heartbeat
    retried = [t for t in study.get_trials() if t.system_attrs.get("failed_trial") == 0]
    assert retried and retried[0].state.name == "COMPLETE"  # and run again once
    assert states.count("COMPLETE") >= 2
    killed = RunDir(next(runs.glob("sweeptest-trial0-*")))
    assert killed.status()["state"] == "interrupted"  # readable, not lost


@pytest.mark.integration
def test_two_workers_share_a_postgresql_study(tmp_path) -> None:
    """`--workers 2` against a real PostgreSQL server: every trial runs exactly once, both
    workers take trials, and each trial is one run directory."""
    import optuna

    from .pg_server import PostgresServer

    pg = PostgresServer()  # without Debian's postgresql package: an error saying so
    try:
        path = _write(
            tmp_path,
            n=4,
            steps=16,  # long enough that the second worker (a new process) gets trials
            **{
                "pruner: median": "pruner: none",
                "  n_trials: 4": f"  n_trials: 4\n  storage: {pg.url}",
            },
        )
        done = subprocess.run(
            [sys.executable, "-m", "ftlab.cli", "sweep", str(path), "--workers", "2"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        study = optuna.load_study(study_name="sweeptest", storage=pg.url)
        trials = study.get_trials()
        assert len(trials) >= 4 and all(t.state.name == "COMPLETE" for t in trials)
        run_ids = [t.user_attrs["run_id"] for t in trials]
        assert len(set(run_ids)) == len(run_ids)  # no trial ran twice
        dirs = sorted(p.name for p in (tmp_path / "runs").glob("sweeptest-trial*"))
        assert dirs == sorted(run_ids)  # no trial lost: one run directory each
        pids = {
            json.loads((tmp_path / "runs" / r / "status.json").read_text())["pid"] for r in run_ids
        }
        assert len(pids) == 2, done.stderr[-3000:]  # both workers took trials
    finally:
        pg.stop()


def test_shipped_sweep_quickstart_is_a_valid_sweep() -> None:
    sweep = study_mod.load(DATA.parent / "sweep_quickstart.yaml")
    assert sweep.spec.search.n_trials == 12 and sweep.spec.search.pruner == "hyperband"
    assert {p.path for p in sweep.params} == {
        "stages.sft.train.learning_rate",
        "stages.sft.adapter.r",
        "stages.dpo.params.beta",
    }


def test_pruner_params_reach_optuna_and_are_checked() -> None:
    """search.pruner_params go to Optuna's pruner as written — e.g. a warm-up: in the sweep
    benchmark hyperband judged trials at DPO's first evaluation (step 4 of 17) and pruned,
    at a margin of 0.42, settings that finished at 9.126 in the naive sweep, second best of
    30. A misspelt keyword or a value Optuna refuses is a spec error naming the key."""
    spec = DATA.parent / "sweep_quickstart.yaml"
    median = study_mod.load(
        spec, ["search.pruner=median", "search.pruner_params={n_warmup_steps: 8}"]
    )
    pruner = study_mod._pruner(median)
    assert (pruner._n_warmup_steps, pruner._n_startup_trials) == (8, 2)  # ours kept, theirs set
    hb = study_mod.load(
        spec, ["search.pruner=hyperband", "search.pruner_params={reduction_factor: 2}"]
    )
    assert (study_mod._pruner(hb)._min_resource, study_mod._pruner(hb)._reduction_factor) == (4, 2)
    with pytest.raises(SpecError) as err:
        study_mod.load(spec, ["search.pruner=hyperband", "search.pruner_params={min_resorce: 8}"])
    assert "search.pruner_params.min_resorce" in str(err.value)
    assert "Did you mean 'min_resource'?" in str(err.value)
    with pytest.raises(SpecError, match="Number of warmup steps cannot be negative"):
        study_mod.load(spec, ["search.pruner=median", "search.pruner_params={n_warmup_steps: -1}"])
    # switching pruning off on the command line leaves the spec's params unused, not an error
    assert not study_mod.prunes(study_mod.load(spec, ["search.pruner=none"]))


def _finished_study(tmp_path: Path) -> Path:
    """A sweep spec and its study (real SQLite storage) holding two finished trials,
    added without training."""
    import optuna

    path = _write(tmp_path, n=2)
    study = study_mod.open_study(study_mod.load(path))
    dists = {
        "stages.sft.train.learning_rate": optuna.distributions.CategoricalDistribution(
            [5e-3, 1e-7]
        ),
        "stages.sft.adapter.r": optuna.distributions.CategoricalDistribution([4, 8]),
    }
    for number, (value, r) in enumerate([(2.5, 4), (2.1, 8)]):
        study.add_trial(
            optuna.trial.create_trial(
                params={"stages.sft.train.learning_rate": 5e-3, "stages.sft.adapter.r": r},
                distributions=dists,
                value=value,
                intermediate_values={2: value + 0.5},
                user_attrs={"run_id": f"sweeptest-trial{number}"},
            )
        )
    return path


def test_sweep_status_and_best_print_no_warning_and_load_no_torch(tmp_path) -> None:
    """`ftlab sweep FILE` (a study already at n_trials: nothing to train), `sweep status`
    and `sweep best`, each a real CLI process on a real study: no Optuna
    ExperimentalWarning on stderr; status and best import no torch or transformers (they
    made status take seconds); the dashboard line says how to get optuna-dashboard."""
    import importlib.util

    path = _finished_study(tmp_path)
    best = tmp_path / "best.yaml"
    for args in ([str(path)], ["status", str(path)], ["best", str(path), "-o", str(best)]):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "ftlab.cli", "sweep", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        timings = [ln for ln in done.stderr.splitlines() if ln.startswith("import time:")]
        printed = "\n".join(ln for ln in done.stderr.splitlines() if ln not in timings)
        assert "Warning" not in printed, printed
        imported = {ln.rsplit("|", 1)[1].strip() for ln in timings}
        if args[0] in ("status", "best"):
            assert not imported & {"torch", "transformers", "trl", "peft"}, args[0]
        if args[0] != "best":
            assert "best: trial 1 eval_loss (minimize) = 2.1000" in done.stdout  # names it
            assert "optuna-dashboard sqlite:///" in done.stdout
            if importlib.util.find_spec("optuna_dashboard") is None:
                assert "pip install 'ftlab[dashboard]'" in done.stdout
    assert "r: 8" in best.read_text()


@pytest.mark.integration
def test_a_failing_trial_is_recorded_and_the_study_goes_on(tmp_path) -> None:
    """A trial whose settings break at run time (LoRA on a module the model does not
    have) fails with its error recorded; the next trial runs."""
    from optuna.trial import TrialState

    path = _write(
        tmp_path,
        n=2,
        steps=2,
        **{
            "    stages.sft.adapter.r: [4, 8]": "    stages.sft.adapter.r: [4, 8]\n"
            "    stages.sft.adapter.target_modules: {value: [no_such_proj], "
            "when: {stages.sft.adapter.r: 8}}",
            "[5.0e-3, 1.0e-7]": "[5.0e-3]",
            "pruner: median": "pruner: none",
            "output:": "tracking: {wandb: {mode: offline}, mlflow: {}}\noutput:",
        },
    )
    sweep = study_mod.load(path)
    study = study_mod.open_study(sweep)
    study.enqueue_trial({"stages.sft.adapter.r": 8})
    study.enqueue_trial({"stages.sft.adapter.r": 4})
    study_mod.run_sweep(sweep)
    first, second = study.get_trials()[:2]
    assert first.state == TrialState.FAIL and "no_such_proj" in first.user_attrs["error"]
    failed = RunDir(tmp_path / "runs" / first.user_attrs["run_id"])
    assert failed.status()["state"] == "failed"
    assert second.state == TrialState.COMPLETE
    # the trackers carry the state (issue 20): W&B's summary, MLflow's status and tag
    from mlflow import MlflowClient

    from ftlab.runner import tracking

    (logged,) = [tracking.read_offline(f) for f in failed.path.glob("wandb/offline-run-*")]
    assert logged["summary"]["state"] == "failed"
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sweeptest")
    assert exp is not None
    states = {
        r.data.tags["ftlab.run_id"]: (r.info.status, r.data.tags["ftlab.state"])
        for r in client.search_runs([exp.experiment_id])
    }
    assert states[failed.run_id] == ("FAILED", "failed")
    assert states[second.user_attrs["run_id"]] == ("FINISHED", "completed")


@pytest.mark.integration
def test_pruner_sees_the_objective_measured_during_training(tmp_path) -> None:
    """With an objective the runner can measure in the training loop (perplexity on the
    held-out rows), the pruner gets that objective at every evaluation, not the eval loss:
    the value at the last step is the one the run's final eval reports. An objective it
    cannot measure cheaply (eval_loss itself here) falls back to the signed eval loss."""
    path = _write(
        tmp_path,
        n=1,
        steps=4,
        **{
            "search:": "evals:\n  - {name: ppl, kind: perplexity, data: sft}\nsearch:",
            "  pruner: median": "  pruner: median\n  objectives: [{metric: ppl.loss}]",
            "[5.0e-3, 1.0e-7]": "[5.0e-3]",
            "[4, 8]": "[4]",
        },
    )
    sweep = study_mod.load(path)
    from ftlab.runner import execute

    _, datasets = execute.preflight(sweep.spec, spec_dir=tmp_path)
    assert study_mod.objective_probe(sweep.spec, datasets) is not None
    study = study_mod.run_sweep(sweep)
    trial = study.get_trials()[0]
    assert sorted(trial.intermediate_values) == [2, 4]  # the judged stage's steps
    assert trial.intermediate_values[4] == pytest.approx(trial.value, rel=1e-3)
    assert trial.intermediate_values[2] > trial.intermediate_values[4]  # it learned

    loss_sweep = study_mod.load(_write(tmp_path, n=1, steps=4))
    assert study_mod.objective_probe(loss_sweep.spec, datasets) is None


TWO_STAGES = """\
name: twostage
seed: 3
data:
  sft: {{path: {data}/support_sft.jsonl, overlong: truncate, max_rows: 24, val_fraction: 0.25}}
  prefs: {{path: {data}/support_prefs.jsonl, overlong: truncate, format: preference, max_rows: 40,
          val_fraction: 0.2}}
stages:
  - name: sft
    method: lora
    adapter: {{r: 4, alpha: 8, dropout: 0.0}}
    train: {{learning_rate: 5.0e-3, max_steps: 3, batch_size: 4, max_length: 64,
             eval_steps: 1, precision: fp32}}
  - name: dpo
    method: dpo
    from: sft
    data: prefs
    adapter: {{r: 4, alpha: 8, dropout: 0.0}}
    train: {{learning_rate: 5.0e-3, max_steps: 4, batch_size: 4, max_length: 64,
             eval_steps: 2, precision: fp32}}
evals:
  - {{name: prefs_eval, kind: preference, data: prefs}}
search:
  n_trials: 2
  sampler: random
  pruner: median
  objectives: [{{metric: prefs_eval.margin, direction: maximize}}]
  space:
    stages.dpo.params.beta: [0.1, 0.5]
output: {{dir: {runs}}}
"""


@pytest.mark.integration
def test_pruner_judges_the_last_stage_at_its_own_steps(tmp_path) -> None:
    """In an SFT → DPO recipe only DPO reports to the pruner (an SFT value is not
    comparable with a DPO one), at DPO's own steps: the trial that trains SFT and the trial
    that reuses it report at the same steps, and Hyperband's least resource is DPO's first
    evaluation."""
    path = tmp_path / "two.yaml"
    path.write_text(TWO_STAGES.format(data=DATA, runs=tmp_path / "runs"))
    sweep = study_mod.load(path)
    assert study_mod.judged_stage(sweep.spec).name == "dpo"
    study = study_mod.open_study(sweep)
    for beta in (0.1, 0.5):
        study.enqueue_trial({"stages.dpo.params.beta": beta})
    study_mod.run_sweep(sweep)
    first, second = study.get_trials()
    assert first.user_attrs["reused_stages"] == [] and second.user_attrs["reused_stages"] == ["sft"]
    assert sorted(first.intermediate_values) == sorted(second.intermediate_values) == [2, 4]
    assert first.intermediate_values[4] == pytest.approx(first.value, rel=1e-3)
    # the reference log-probs (SFT model, same rows) are computed once, then read back
    dpo = [
        RunDir(tmp_path / "runs" / t.user_attrs["run_id"]).stage("dpo")["summary"]
        for t in (first, second)
    ]
    assert dpo[0]["ref_logps"] == {"train": "computed", "eval": "computed"}
    assert dpo[1]["ref_logps"] == {"train": "cached", "eval": "cached"}
    assert len(list((tmp_path / "runs" / "cache" / "reflogps").glob("*.pt"))) == 2
    # and give the same training as computing them afresh (`output.reuse: false`)
    from typer.testing import CliRunner

    from ftlab.cli.main import app

    fresh_dir = tmp_path / "fresh"
    args = ["run", str(path), "stages.dpo.params.beta=0.5", "output.reuse=false"]
    result = CliRunner().invoke(app, [*args, f"output.dir={fresh_dir}"])
    assert result.exit_code == 0, result.output
    fresh = RunDir(next(fresh_dir.glob("twostage-*"))).stage("dpo")["summary"]
    assert fresh["ref_logps"] == {"train": "computed", "eval": "computed"}
    assert not (fresh_dir / "cache" / "reflogps").exists()
    assert fresh["eval_loss"] == pytest.approx(dpo[1]["eval_loss"], rel=1e-4)
    assert fresh["train_loss_mean"] == pytest.approx(dpo[1]["train_loss_mean"], rel=1e-4)

    hb = study_mod.load(path, ["search.pruner=hyperband"])
    assert study_mod._pruner(hb)._min_resource == 2  # DPO's eval_steps, not SFT's 1
    by_stage = study_mod.load(path, ["search.objectives=[{metric: stage.sft.eval_loss}]"])
    assert study_mod.judged_stage(by_stage.spec).name == "sft"


def test_space_steps_are_checked_before_the_study(tmp_path) -> None:
    """Issue 15.9: `step: -0.1` (or a step wider than the range) is a spec problem."""
    from ftlab.runner.spec.load import load_spec

    for step in ("-0.1", "0", "5.0"):
        path = _write(
            tmp_path,
            **{
                "stages.sft.adapter.r: [4, 8]": "stages.sft.adapter.r: [4, 8]\n"
                f"    stages.sft.train.warmup_ratio: {{low: 0.0, high: 0.5, step: {step}}}"
            },
        )
        with pytest.raises(SpecError) as err:
            load_spec(path)
        assert any("a step > 0" in p.expected for p in err.value.problems), step


@pytest.mark.integration
def test_a_sweep_whose_every_trial_failed_exits_non_zero(tmp_path) -> None:
    """Issue 15.9: every trial failing is a failed `ftlab sweep` (exit 1, the first error)."""
    spec = tmp_path / "rl.yaml"
    spec.write_text(
        f"name: allfail\ndata:\n  p: {{path: {DATA}/support_eval.jsonl, format: prompts, "
        "max_rows: 8, val_fraction: 0.0}\n"
        "stages:\n  - name: rl\n    method: grpo\n    data: p\n"
        "    params: {rewards: [{name: length}], num_generations: 2, max_completion_length: 4}\n"
        "    train: {max_steps: 1, batch_size: 2, precision: fp32}\n"
        "search:\n  n_trials: 2\n  sampler: random\n  pruner: none\n"
        "  space: {stages.rl.adapter.r: [2, 4]}\n"  # objective eval_loss: GRPO has none
        f"output: {{dir: {tmp_path / 'runs'}}}\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "ftlab.cli", "sweep", str(spec)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert "every one of the 2 trials failed" in out.stderr
    assert "objective eval_loss" in out.stderr
