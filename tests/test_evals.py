"""Evals: the log-prob scorer against the model's own loss, interval maths against
hand-computed values, and the eval pipeline end to end (run directory, eval cache,
DuckDB rows, `ftlab eval`, spec errors)."""

from __future__ import annotations

import json
import math
import os

import pytest

from ftlab.evals.base import EvalInput
from ftlab.reports import store
from ftlab.reports.stats import bootstrap_mean, mcnemar, wilson
from ftlab.runner import execute, models
from ftlab.runner.spec.errors import SpecError
from ftlab.runner.spec.load import expand_runs, load_spec

from .conftest import DATA


def test_wilson_matches_hand_computed_intervals() -> None:
    # p = 0.8, n = 10, z = 1.96: centre 0.7167, half-width 0.2266 (Wilson 1927)
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    lo, hi = wilson(0, 10)  # never below 0, and not a zero-width interval at 0
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    assert wilson(10, 10)[1] == 1.0
    assert all(math.isnan(v) for v in wilson(0, 0))


def test_bootstrap_mean_is_seeded_and_brackets_the_mean() -> None:
    values = [0.0, 1.0, 2.0, 3.0, 10.0, -4.0, 5.5, 2.5]
    a, b = bootstrap_mean(values, seed=3), bootstrap_mean(values, seed=3)
    assert a == b
    mean = sum(values) / len(values)
    assert a[0] < mean < a[1]
    assert bootstrap_mean([2.0, 2.0, 2.0]) == (2.0, 2.0)
    assert bootstrap_mean([5.0]) == (5.0, 5.0)


def test_response_logprobs_equal_the_models_own_loss() -> None:
    """Batched, padded scoring of response tokens = the causal-LM loss with the prompt
    masked out, computed one sequence at a time."""
    import torch
    from transformers import AutoModelForCausalLM

    from ftlab.evals.scoring import prompt_response, response_logprobs

    ref = models.resolve("tiny")
    model = AutoModelForCausalLM.from_pretrained(ref.path, dtype=torch.float32).eval()
    tok = models.load_tokenizer(ref)
    rows = [
        {"prompt": "My parcel is late. - Ana", "completion": "Hi Ana, I am sorry."},
        {"prompt": "Refund?", "completion": "Hello, I have issued the refund today, " * 3},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"}]},
    ]
    pairs = [prompt_response(tok, row) for row in rows]
    assert pairs[0][0].endswith("<|im_start|>assistant\n")  # the chat template's prompt
    got = response_logprobs(model, tok, pairs, batch_size=3)
    for (prompt, response), (logp, n) in zip(pairs, got, strict=True):
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        r = tok(response, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p + r])
        labels = torch.tensor([[-100] * len(p) + r])
        with torch.no_grad():
            loss = model(input_ids=ids, labels=labels).loss
        assert n == len(r)
        assert logp == pytest.approx(-float(loss) * len(r), rel=1e-4)


SPEC = """\
name: evaltest
seed: 7
model: tiny
data:
  sft: {{path: {data}/support_sft.jsonl, overlong: truncate, val_fraction: 0.1}}
  prefs: {{path: {data}/support_prefs.jsonl, overlong: truncate, format: preference, max_rows: 120,
           val_fraction: 0.25}}
stages:
  - name: sft
    method: full
    train: {{learning_rate: 2.0e-3, epochs: 2, batch_size: 8, max_length: 128,
             precision: fp32}}
  - name: rm
    method: reward_model
    from: sft
    data: prefs
    train: {{max_steps: 2, batch_size: 4, max_length: 96, precision: fp32}}
  - name: align
    method: dpo
    from: sft
    data: prefs
    adapter: {{r: 8, alpha: 16, dropout: 0.0}}
    train: {{learning_rate: 5.0e-3, max_steps: 16, batch_size: 8, max_length: 96,
             precision: fp32}}
variants:
  ipo: {{stages.align.method: ipo}}
evals:
  - {{name: heldout, kind: preference, data: prefs, on: [sft, last]}}
output: {{dir: {runs}}}
"""


@pytest.fixture(scope="module")
def eval_runs(tmp_path_factory):
    """Two runs (dpo, ipo) of one spec: the SFT stage and its eval are shared."""
    tmp = tmp_path_factory.mktemp("evals")
    spec_file = tmp / "spec.yaml"
    spec_file.write_text(SPEC.format(data=DATA, runs=tmp / "runs"))
    results = []
    for name, spec in expand_runs(spec_file):
        rd = execute.create_run(spec, variant=name, spec_file=spec_file, overrides=[])
        results.append(execute.execute(rd, spec))
    return spec_file, results


@pytest.mark.integration
def test_preference_eval_shows_what_dpo_changed(eval_runs) -> None:
    _, (dpo, ipo) = eval_runs
    assert "rm" not in dpo.stages  # no stage or eval of this run needs the reward model
    summary = json.loads((dpo.run_dir / "evals/heldout/summary.json").read_text())
    sft, last = summary["targets"]["sft"]["metrics"], summary["targets"]["align"]["metrics"]
    assert sft["accuracy"]["n"] == last["accuracy"]["n"] == 30  # the held-out pairs
    # DPO pushes log p(chosen) − log p(rejected) up on pairs it never saw
    assert last["margin"]["value"] > sft["margin"]["value"] + 1.0
    # the SFT model of the pretrained tiny already prefers most chosen replies (0.97)
    assert last["accuracy"]["value"] >= sft["accuracy"]["value"]
    lo, hi = last["accuracy"]["low"], last["accuracy"]["high"]
    assert lo <= last["accuracy"]["value"] <= hi
    lines = (dpo.run_dir / "evals/heldout/samples.jsonl").read_text().splitlines()
    samples = [json.loads(line) for line in lines]
    assert len(samples) == 60 and {s["target"] for s in samples} == {"sft", "align"}
    mine = [s for s in samples if s["target"] == "align"]
    correct = sum(s["scores"]["correct"] for s in mine)
    assert correct / len(mine) == pytest.approx(last["accuracy"]["value"])
    # the second run reuses the SFT stage and the SFT model's eval result
    ipo_summary = json.loads((ipo.run_dir / "evals/heldout/summary.json").read_text())
    assert ipo_summary["targets"]["sft"]["cached_from"] == dpo.run_dir.name
    assert ipo_summary["targets"]["sft"]["metrics"] == summary["targets"]["sft"]["metrics"]
    assert ipo_summary["targets"]["align"]["cached_from"] == ""
    run_summary = json.loads((dpo.run_dir / "summary.json").read_text())
    assert run_summary["evals"]["heldout"]["align"]["accuracy"] == last["accuracy"]["value"]


@pytest.mark.integration
def test_eval_results_and_samples_are_indexed(eval_runs) -> None:
    spec_file, (dpo, _) = eval_runs
    root = spec_file.parent / "runs"
    rows = store.query(
        root,
        "SELECT target, metric, value, ci_low, n, headline, is_last FROM eval_results "
        "WHERE run_id = ? ORDER BY target, metric",
        [dpo.run_dir.name],
    )
    by_key = {(r["target"], r["metric"]): r for r in rows}
    assert by_key[("align", "accuracy")]["headline"] and by_key[("align", "accuracy")]["is_last"]
    assert not by_key[("sft", "accuracy")]["is_last"]
    (paired,) = store.query(
        root,
        """SELECT count(*) AS items, avg(a.value) AS acc_align, avg(s.value) AS acc_sft
           FROM eval_samples a JOIN eval_samples s USING (run_id, eval, item, metric)
           WHERE a.run_id = ? AND a.metric = 'correct' AND a.target = 'align'
             AND s.target = 'sft'""",
        [dpo.run_dir.name],
    )
    assert paired["items"] == 30  # the same items, paired by content id
    assert paired["acc_align"] == pytest.approx(by_key[("align", "accuracy")]["value"])
    assert paired["acc_sft"] == pytest.approx(by_key[("sft", "accuracy")]["value"])
    (item,) = store.query(
        root, "SELECT record_json FROM eval_items WHERE run_id = ? LIMIT 1", [dpo.run_dir.name]
    )
    assert set(json.loads(item["record_json"])) == {"prompt", "chosen", "rejected"}


@pytest.mark.integration
def test_ftlab_eval_adds_evals_to_a_finished_run_without_training(eval_runs, tmp_path) -> None:
    from typer.testing import CliRunner

    from ftlab.cli.main import app

    spec_file, (dpo, _) = eval_runs
    stage_json = (dpo.run_dir / "stages/align/stage.json").read_text()
    extra = tmp_path / "more_evals.yaml"
    extra.write_text(
        f"data:\n  held: {{path: {DATA}/support_sft.jsonl, overlong: truncate, max_rows: 40,"
        " val_fraction: 0.25}\n"
        "evals:\n  - {kind: perplexity, data: held, on: [base, last], limit: 6}\n"
    )
    result = CliRunner().invoke(
        app, ["eval", dpo.run_dir.name, "--evals", str(extra), "--dir", str(dpo.run_dir.parent)]
    )
    assert result.exit_code == 0, result.output
    assert "perplexity loss" in result.output
    assert "full → dpo" in result.output  # issue 14.11: spec order (was "dpo → full")
    summary = json.loads((dpo.run_dir / "evals/perplexity/summary.json").read_text())
    base, last = summary["targets"]["base"]["metrics"], summary["targets"]["align"]["metrics"]
    assert base["loss"]["n"] == 6
    assert last["loss"]["value"] < base["loss"]["value"]  # trained beats the random init
    assert last["perplexity"]["value"] == pytest.approx(math.exp(last["loss"]["value"]))
    assert (dpo.run_dir / "stages/align/stage.json").read_text() == stage_json  # no retraining
    (row,) = store.query(
        spec_file.parent / "runs",
        "SELECT count(*) AS n FROM eval_results WHERE run_id = ? AND eval = 'perplexity'",
        [dpo.run_dir.name],
    )
    assert row["n"] == 4  # loss and perplexity, on base and last


def _errors(write, body: str) -> str:
    path = write("bad.yaml", body)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    return err.value.format()


BAD_BASE = f"""\
name: bad
data:
  sft: {{path: {DATA}/support_sft.jsonl}}
  prefs: {{path: {DATA}/support_prefs.jsonl, format: preference}}
  prompts: {{path: {DATA}/support_eval.jsonl, format: prompts, val_fraction: 0.0}}
stages:
  - {{name: sft, method: full}}
  - {{name: rm, method: reward_model, from: sft, data: prefs}}
"""


@pytest.mark.parametrize(
    ("evals", "expected"),
    [
        ("- {kind: preferense, data: prefs}", "Did you mean 'preference'"),
        ("- {kind: preference}", "a dataset under data: in one of the formats preference"),
        ("- {kind: preference, data: sft}", "'sft' (messages)"),
        ("- {kind: preference, data: prefz}", "Did you mean 'prefs'"),
        ("- {kind: preference, data: prefs, on: [rm]}", "a reward_model stage"),
        ("- {kind: preference, data: prefs, on: [sfd]}", "Did you mean 'sft'"),
        ("- {kind: perplexity, data: prompts}", "'prompts' (prompts)"),
        ("- {kind: perplexity, data: sft, params: {batch_sise: 2}}", "evals.0.params.batch_sise"),
        (
            "- {kind: perplexity, data: sft}\n  - {kind: perplexity, data: sft}",
            "a name no other eval uses",
        ),
    ],
)
def test_eval_spec_errors_name_the_line_and_the_fix(write, evals, expected) -> None:
    text = _errors(write, BAD_BASE + "evals:\n  " + evals + "\n")
    assert expected in text
    assert "bad.yaml:" in text


def test_eval_on_a_split_without_rows_is_an_error(write) -> None:
    body = BAD_BASE.replace("val_fraction: 0.0", "val_fraction: 0.0, max_rows: 5")
    body = body.replace("format: prompts", "format: prompt_completion")
    text = _errors(write, body + "evals:\n  - {kind: perplexity, data: prompts}\n")
    assert "val_fraction 0" in text and "split: all" in text


def test_reward_stage_must_exist_and_come_first(write) -> None:
    body = BAD_BASE + (
        "  - name: rl\n    method: ppo\n    from: sft\n    data: prompts\n"
        "    params: {rewards: [{name: reward_model, params: {stage: rmm}}]}\n"
    )
    text = _errors(write, body)
    assert "stages.2.params.rewards" in text and "Did you mean 'rm'" in text


def test_runs_train_only_the_stages_they_need(write) -> None:
    body = BAD_BASE + (
        "  - name: align\n    method: dpo\n    from: sft\n    data: prefs\n"
        "variants:\n  ppo:\n    stages.align.method: ppo\n    stages.align.data: prompts\n"
        "    stages.align.params: {rewards: [{name: reward_model, params: {stage: rm}}]}\n"
    )
    runs = dict(expand_runs(write("ok.yaml", body)))
    assert [s.name for s in runs["default"].needed_stages()] == ["sft", "align"]
    assert [s.name for s in runs["ppo"].needed_stages()] == ["sft", "rm", "align"]
    assert runs["ppo"].stage("align").depends_on() == ["sft", "rm"]


def test_eval_kinds_are_listed() -> None:
    from typer.testing import CliRunner

    from ftlab.cli.main import app

    out = CliRunner().invoke(app, ["evals"]).output
    assert "preference" in out and "perplexity" in out


def test_shipped_align_compare_spec_is_valid() -> None:
    runs = dict(expand_runs(DATA.parent / "align_compare.yaml"))
    assert set(runs) == {"dpo", "ipo", "simpo", "orpo", "kto", "ppo", "grpo"}
    assert [s.method for s in runs["ppo"].needed_stages()] == ["full", "reward_model", "ppo"]
    assert runs["kto"].stage("align").data == "feedback"


@pytest.mark.slow
@pytest.mark.integration
def test_align_compare_end_to_end(tmp_path) -> None:
    """The shipped comparison: seven alignment methods after one SFT stage, each with the
    held-out preference eval on its policy and on the SFT model (about 2 min on 2 cores)."""
    from typer.testing import CliRunner

    from ftlab.cli.main import app

    runs = tmp_path / "runs"
    spec = DATA.parent / "align_compare.yaml"
    result = CliRunner().invoke(app, ["run", str(spec), f"output.dir={runs}"])
    assert result.exit_code == 0, result.output
    out = result.output
    table = out[out.index("Runs") :]
    for variant, chain in [
        ("dpo", "full → dpo"),
        ("kto", "full → kto"),
        ("ppo", "full → reward_model → ppo"),
        ("grpo", "full → grpo"),
    ]:
        assert any(
            line.split("│")[1].strip() == variant and chain in line
            for line in table.splitlines()
            if line.count("│") > 5
        ), variant
    assert "heldout_prefs accuracy" in table and "peak mem" in table
    assert out.count("skipping stage(s) rm") == 6  # only the ppo run trains the reward model
    rows = store.query(
        runs,
        """SELECT r.variant, e.target, e.value FROM eval_results e JOIN runs r USING (run_id)
           WHERE e.metric = 'accuracy'""",
    )
    acc = {(r["variant"], r["target"]): r["value"] for r in rows}
    assert len({v for (_, t), v in acc.items() if t == "sft"}) == 1  # one SFT model, scored once
    # DPO raises held-out preference accuracy over its SFT start, significantly (McNemar,
    # paired by item): half the pairs prefer a timeline SFT has no preference between
    correct = store.query(
        runs,
        """SELECT s.target, s.item, s.value FROM eval_samples s JOIN runs r USING (run_id)
           WHERE r.variant = 'dpo' AND s.metric = 'correct' ORDER BY s.item""",
    )
    by_target: dict[str, list[float]] = {}
    for row in correct:
        by_target.setdefault(row["target"], []).append(row["value"])
    up, down, p = mcnemar(by_target["align"], by_target["sft"])
    print(f"DPO vs SFT held-out accuracy: {up} pairs won, {down} lost, McNemar p = {p:.2g}")
    assert acc[("dpo", "align")] > acc[("dpo", "sft")] and p < 0.01, (up, down, p)
    cached = store.query(
        runs, "SELECT count(*) AS n FROM eval_results WHERE target = 'sft' AND cached_from <> ''"
    )
    assert cached[0]["n"] > 0


def _tiny() -> tuple:
    import torch
    from transformers import AutoModelForCausalLM

    ref = models.resolve("tiny")
    model = AutoModelForCausalLM.from_pretrained(ref.path, dtype=torch.float32).eval()
    return model, models.load_tokenizer(ref)


@pytest.mark.integration
def test_lm_eval_in_process_rows_match_the_aggregate() -> None:
    """The shipped local tasks run in-process on a loaded model; every metric equals the
    mean of its per-sample rows (the kind refuses to report otherwise)."""
    from ftlab.evals.base import EvalInput
    from ftlab.evals.harness import LM_EVAL, HarnessParams

    model, tok = _tiny()
    params = HarnessParams(tasks=["support_intent_mc", "support_intent_gen"])
    out = LM_EVAL.run(
        EvalInput(model, tok, [], params, base_dir=DATA.parent, limit=12, target="base")
    )
    assert out.headline == "support_intent_mc.acc"
    acc = out.metrics["support_intent_mc.acc"]
    mc = [s for s in out.samples if s["task"] == "support_intent_mc"]
    gen = [s for s in out.samples if s["task"] == "support_intent_gen"]
    assert len(mc) == len(gen) == 12 == acc.n
    assert acc.value == pytest.approx(sum(s["scores"]["support_intent_mc.acc"] for s in mc) / 12)
    assert acc.low <= acc.value <= acc.high
    # a multiple-choice row keeps every choice's log-likelihood and the model's pick
    assert len(mc[0]["choice_logliks"]) == 8
    assert mc[0]["response"] == max(range(8), key=mc[0]["choice_logliks"].__getitem__)
    assert mc[0]["prompt"].startswith("Customer message:")
    assert "support_intent_gen.exact_match" in out.metrics
    assert len({s["item"] for s in mc}) == 12


@pytest.mark.integration
def test_shipped_tasks_run_in_the_lm_eval_cli_from_any_folder(tmp_path) -> None:
    """`lm_eval --include_path experiments/tasks` works from another working directory
    (the CLI resolves `data_files` against the cwd, not the YAML's folder), with no ftlab
    step in between, and scores each choice as ftlab's in-process path does."""
    import subprocess
    import sys

    from ftlab.evals.harness import LM_EVAL, HarnessParams

    limit = 6
    out_dir = tmp_path / "out"
    cmd = [
        *(sys.executable, "-m", "lm_eval", "run", "--model", "hf"),
        *("--model_args", f"pretrained={models.resolve('tiny').path},dtype=float32"),
        *("--tasks", "support_intent_mc", "--include_path", str(DATA.parent / "tasks")),
        *("--device", "cpu", "--batch_size", "4", "--limit", str(limit)),
        *("--log_samples", "--output_path", str(out_dir)),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    (samples_file,) = out_dir.rglob("samples_support_intent_mc_*.jsonl")
    cli_rows = [json.loads(line) for line in samples_file.read_text().splitlines()]
    cli = {r["doc_id"]: [float(resp[0]) for resp in r["filtered_resps"]] for r in cli_rows}

    model, tok = _tiny()
    params = HarnessParams(tasks=["support_intent_mc"], batch_size=4)
    ours = LM_EVAL.run(EvalInput(model, tok, [], params, base_dir=DATA.parent, limit=limit))
    assert len(cli) == len(ours.samples) == limit
    for sample in ours.samples:
        assert cli[sample["doc_id"]] == pytest.approx(sample["choice_logliks"], abs=1e-3)


def test_lm_eval_outside_a_git_checkout_prints_no_git_error(tmp_path, monkeypatch, capfd) -> None:
    """lm-eval records `git describe` of the working directory and let git print
    "fatal: not a git repository" into the user's run output outside a checkout."""
    from ftlab.evals.harness import LM_EVAL, HarnessParams

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    model, tok = _tiny()
    params = HarnessParams(tasks=["support_intent_mc"], batch_size=4)
    out = LM_EVAL.run(EvalInput(model, tok, [], params, base_dir=DATA.parent, limit=2))
    assert len(out.samples) == 2
    assert "not a git repository" not in capfd.readouterr().err


def test_lm_eval_fingerprint_ignores_bytecode_of_the_task_loader(tmp_path) -> None:
    """Running the `lm_eval` CLI on a task folder leaves `__pycache__/local_files.*.pyc`
    there; that must not change the eval cache key."""
    import shutil

    from ftlab.evals.harness import LM_EVAL, HarnessParams

    shutil.copytree(DATA.parent / "tasks", tmp_path / "tasks")
    params = HarnessParams(tasks=["support_intent_mc"])
    before = LM_EVAL.fingerprint(params, tmp_path)
    (tmp_path / "tasks" / "__pycache__").mkdir()
    (tmp_path / "tasks" / "__pycache__" / "local_files.cpython-311.pyc").write_bytes(b"\0")
    assert LM_EVAL.fingerprint(params, tmp_path) == before
    (tmp_path / "tasks" / "support_intent_mc.yaml").write_text("task: changed\n")
    assert LM_EVAL.fingerprint(params, tmp_path) != before


def test_lm_eval_unknown_task_names_the_local_ones() -> None:
    from ftlab.evals.base import EvalError, EvalInput
    from ftlab.evals.harness import LM_EVAL, HarnessParams

    model, tok = _tiny()
    with pytest.raises(EvalError, match="support_intent_mc"):
        LM_EVAL.run(
            EvalInput(
                model,
                tok,
                [],
                HarnessParams(tasks=["support_intnet_mc"]),
                base_dir=DATA.parent,
                limit=2,
            )
        )


def test_lm_eval_task_that_needs_a_download_says_so() -> None:
    from ftlab.evals.base import EvalError, EvalInput
    from ftlab.evals.harness import LM_EVAL, HarnessParams

    model, tok = _tiny()
    with pytest.raises(EvalError, match="Offline alternative") as err:
        LM_EVAL.run(
            EvalInput(
                model, tok, [], HarnessParams(tasks=["arc_easy"]), base_dir=DATA.parent, limit=2
            )
        )
    assert "support_intent_mc.yaml" in str(err.value)


def test_format_adherence_checks() -> None:
    from ftlab.evals.checks import FORMAT, FormatParams, _adheres

    assert _adheres('{"a": 1}', FormatParams())[0]
    assert _adheres('```json\n{"a": 1}\n```', FormatParams())[0]
    assert not _adheres("{'a': 1}", FormatParams())[0]
    schema = FormatParams(
        check="json_schema",
        schema={
            "type": "object",
            "required": ["intent"],
            "properties": {"intent": {"type": "string"}},
        },
    )
    assert _adheres('{"intent": "refund"}', schema)[0]
    ok, why = _adheres('{"intent": 3}', schema)
    assert not ok and "schema" in why
    assert _adheres("Ticket #123 opened", FormatParams(check="regex", pattern=r"#\d+"))[0]
    with pytest.raises(ValueError, match="regular expression"):
        FormatParams(check="regex", pattern="(")
    rows = [{"prompt": str(i)} for i in range(4)]
    out = FORMAT.run(
        EvalInput(None, None, rows, FormatParams(), responses=['{"x": 1}', "nope", "[1, 2]", "{"])
    )
    assert out.metrics["adherence"].value == 0.25  # an array is not an object
    assert [s["scores"]["adheres"] for s in out.samples] == [1.0, 0.0, 0.0, 0.0]


def test_format_json_wants_an_object_by_default() -> None:
    """Issue 14.4: a bare number parses as JSON but is not what "answer in JSON" asks."""
    from ftlab.evals.checks import FormatParams, _adheres

    ok, why = _adheres("959137137", FormatParams())
    assert not ok and "JSON number, expected object" in why
    assert not _adheres('"text"', FormatParams())[0]
    assert not _adheres("[1, 2]", FormatParams())[0]
    either = FormatParams(json_types=["object", "array"])
    assert _adheres("[1, 2]", either)[0] and _adheres('{"a": 1}', either)[0]
    assert _adheres("3", FormatParams(json_types=["number"]))[0]
    with pytest.raises(ValueError):
        FormatParams(json_types=["dict"])


def test_contamination_flags_eval_items_seen_in_training() -> None:
    from ftlab.evals.checks import CONTAMINATION, ContaminationParams
    from ftlab.runner import data as data_mod
    from ftlab.runner.spec.schema import DataSource

    sft = data_mod.load(
        DataSource(path=str(DATA / "support_sft.jsonl"), val_fraction=0.1), base_dir=DATA, seed=1
    )
    leaked = sft.train[:5] + [
        {
            "prompt": "completely unrelated words about astronomy "
            "telescopes galaxies nebulae and distant quasars"
        }
    ]
    out = CONTAMINATION.run(
        EvalInput(None, None, leaked, ContaminationParams(), train_rows=sft.train)
    )
    flags = [s["scores"]["contaminated"] for s in out.samples]
    assert flags == [1.0] * 5 + [0.0]
    assert out.metrics["contaminated_rate"].value == pytest.approx(5 / 6)
    assert out.notes and "warning" in out.notes[0] and "8-grams" in out.notes[0]
    clean = CONTAMINATION.run(
        EvalInput(None, None, leaked[-1:], ContaminationParams(), train_rows=sft.train)
    )
    assert clean.metrics["contaminated_rate"].value == 0.0 and not clean.notes
