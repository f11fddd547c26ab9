"""The LLM judge: verdict parsing, position swap and the tie rule, length-controlled win
rate, the judge-call cache, the OpenAI backend against a real HTTP server on 127.0.0.1
(timeouts, 429s, malformed replies, the API key never stored), and the judge in a run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ftlab.evals.backends import BackendError, OpenAIBackend
from ftlab.evals.base import EvalError, EvalInput
from ftlab.evals.judge import JUDGE, SCORE, VERDICT, Judge, JudgeParams, _parse
from ftlab.reports.stats import length_controlled_win_rate, length_feature
from ftlab.runner import models

from .conftest import EXPERIMENTS
from .openai_server import ChatServer

RUBRIC = "Context: support\nCriteria:\n- polite"


class Scripted:
    """A judge that answers from a function of the judged pair (fixed verdicts), counting
    calls like the real backends do."""

    identity = "scripted"

    def __init__(self, answer) -> None:
        self.answer = answer
        self.calls = 0

    def complete(self, conversations):
        self.calls += len(conversations)
        return [self.answer(c) for c in conversations]


def _replies(conversation) -> tuple[str, str]:
    text = conversation[0]["content"]
    a = text.split("Reply A:\n", 1)[1].split("\n\nReply B:", 1)[0]
    b = text.split("Reply B:\n", 1)[1].split("\n\nWhich reply", 1)[0]
    return a, b


def test_verdicts_are_parsed_strictly() -> None:
    assert _parse("Verdict: A", VERDICT) == "A"
    assert _parse("  verdict: b.\n", VERDICT) == "B"
    assert _parse("Verdict: tie", VERDICT) == "tie"
    assert _parse("I think A is better", VERDICT) == "unparsable"
    assert _parse("Verdict: A\nVerdict: B", VERDICT) == "unparsable"  # contradictory
    assert _parse("Verdict: A or B", VERDICT) == "unparsable"
    assert _parse(BackendError("down"), VERDICT) == "error"
    assert _parse("Score: 7", SCORE) == "7" and _parse("Score: 7/10", SCORE) == "7"
    assert _parse("Score: 11", SCORE) == "unparsable"


def test_rubric_criteria_read_as_written() -> None:
    """`- relevance: addresses …` is a mapping to YAML: the judge saw it as JSON braces."""
    from ftlab.evals.judge_prompts import rubric_text

    text = rubric_text("support_reply", EXPERIMENTS)
    assert "\n- relevance: addresses the customer's actual problem" in text
    assert "{" not in text


def test_position_swap_and_the_tie_rule(tmp_path) -> None:
    """Item 'good' wins in both orders; 'first' is a judge that always prefers position A
    (the verdict flips with the order → a tie, inconsistent); 'tie' is a real tie."""

    def answer(conversation):
        a, b = _replies(conversation)
        if "good" in (a, b):
            return "Verdict: A" if a == "good" else "Verdict: B"
        if a.startswith("tie"):
            return "Verdict: tie"
        return "Verdict: A"  # position bias

    judge = Judge(JudgeParams(), Scripted(answer), RUBRIC, tmp_path)
    rows = [{"prompt": str(i)} for i in range(3)]
    out = judge.pairwise(
        ["q1", "q2", "q3"], ["good", "first", "tie"], ["bad", "second", "tie2"], rows, seed=0
    )
    win = [s["scores"]["win"] for s in out.samples]
    consistent = [s["scores"]["consistent"] for s in out.samples]
    assert win == [1.0, 0.5, 0.5]
    assert consistent == [1.0, 0.0, 1.0]
    assert out.metrics["win_rate"].value == pytest.approx(2 / 3)
    assert out.metrics["position_consistency"].value == pytest.approx(2 / 3)
    assert out.metrics["tie_rate"].value == pytest.approx(2 / 3)


def test_unparsable_gets_one_reminder_then_is_recorded(tmp_path) -> None:
    def answer(conversation):
        if len(conversation) > 1:  # the reminder turn
            return "Verdict: B" if "fixable" in conversation[0]["content"] else "still chatty"
        return "Hmm, hard to say."

    backend = Scripted(answer)
    judge = Judge(JudgeParams(swap=False), backend, RUBRIC, tmp_path)
    out = judge.pairwise(
        ["q1", "q2"], ["fixable", "hopeless"], ["x", "y"], [{"p": 1}, {"p": 2}], seed=0
    )
    assert backend.calls == 4  # two questions, each reminded once
    assert out.samples[0]["scores"]["win"] == 0.0  # "Verdict: B" after the reminder
    assert out.samples[0]["verdict_ab"]["retried"]
    assert "win" not in out.samples[1]["scores"]
    assert out.samples[1]["verdict_ab"]["verdict"] == "unparsable"
    assert out.metrics["unparsable_rate"].value == 0.5


def test_length_controlled_win_rate_matches_hand_computed() -> None:
    # x = +1: 8 of 10 won; x = −1: 4 of 10 won. The MLE fits each group exactly:
    # b0 = (logit 0.8 + logit 0.4) / 2 = 0.49041, so LC = σ(b0) = 0.62020 (raw: 0.6)
    outcomes = [1.0] * 8 + [0.0] * 2 + [1.0] * 4 + [0.0] * 6
    x = [1.0] * 10 + [-1.0] * 10
    b0 = (math.log(0.8 / 0.2) + math.log(0.4 / 0.6)) / 2
    assert length_controlled_win_rate(outcomes, x) == pytest.approx(
        1 / (1 + math.exp(-b0)), abs=1e-6
    )
    assert length_controlled_win_rate(outcomes, x) == pytest.approx(0.62020, abs=1e-5)
    # balanced lengths: nothing to correct; ties count half
    assert length_controlled_win_rate([1.0, 0.5, 0.0, 1.0], [0.0] * 4) == pytest.approx(0.625)
    # a judge that only rewards length: the raw win rate flatters, LC goes to ~0.5
    lengths = list(range(20))
    others = [10] * 20
    won = [1.0 if n > 10 else 0.0 if n < 10 else 0.5 for n in lengths]
    lc = length_controlled_win_rate(won, length_feature(lengths, others))
    assert abs(lc - 0.5) < 0.05


def test_cache_hit_makes_zero_judge_calls(tmp_path) -> None:
    backend = Scripted(lambda c: "Verdict: A")
    args = (["q1", "q2"], ["a1", "a2"], ["b1", "b2"], [{"r": 1}, {"r": 2}])
    first = Judge(JudgeParams(), backend, RUBRIC, tmp_path).pairwise(*args, seed=0)
    assert backend.calls == 4
    again = Scripted(lambda c: "Verdict: A")
    second = Judge(JudgeParams(), again, RUBRIC, tmp_path).pairwise(*args, seed=0)
    assert again.calls == 0
    assert [s["scores"] for s in second.samples] == [s["scores"] for s in first.samples]
    other_rubric = Scripted(lambda c: "Verdict: A")
    Judge(JudgeParams(), other_rubric, RUBRIC + "\n- concise", tmp_path).pairwise(*args, seed=0)
    assert other_rubric.calls == 4  # a different rubric is a different question


@pytest.fixture(scope="module")
def server():
    srv = ChatServer(models.resolve("tiny").path, slow_s=2.0)
    yield srv
    srv.close()


def _backend(server, **kw) -> OpenAIBackend:
    return OpenAIBackend(
        base_url=server.url,
        model="tiny-judge",
        **{"timeout_s": 10.0, "max_retries": 2, "backoff_s": 0.0, **kw},
    )


@pytest.mark.integration
def test_openai_backend_serves_real_completions(server) -> None:
    server.script, server.fixed, server.requests[:] = [], None, []
    out = _backend(server).complete([[{"role": "user", "content": "Hello, my parcel is late."}]])
    assert isinstance(out[0], str)
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions"
    assert req["body"]["model"] == "tiny-judge" and req["body"]["temperature"] == 0.0
    assert req["body"]["messages"][0]["content"] == "Hello, my parcel is late."


@pytest.mark.integration
def test_openai_backend_retries_429_timeouts_and_malformed_replies(server) -> None:
    server.fixed, server.requests[:] = "Verdict: A", []
    server.script = ["429", "slow", "malformed"]
    backend = _backend(server, timeout_s=0.5, max_retries=3, concurrency=1)
    (answer,) = backend.complete([[{"role": "user", "content": "x"}]])
    assert answer == "Verdict: A"
    assert backend.calls == 4 and len(server.requests) == 4
    server.script = ["malformed"] * 3
    (answer,) = _backend(server, max_retries=2).complete([[{"role": "user", "content": "y"}]])
    assert isinstance(answer, BackendError) and "malformed" in str(answer)
    server.script = ["500"] * 3
    (answer,) = _backend(server, max_retries=2).complete([[{"role": "user", "content": "z"}]])
    assert isinstance(answer, BackendError) and "HTTP 500" in str(answer)
    server.script = []


@pytest.mark.integration
def test_openai_judge_eval_keeps_the_key_out_of_everything(server, tmp_path, monkeypatch) -> None:
    secret = "sk-test-" + "x" * 24
    monkeypatch.setenv("FTLAB_TEST_JUDGE_KEY", secret)
    server.script, server.requests[:] = [], []
    server.fixed = lambda messages: (
        "Verdict: A"
        if "longer" in messages[0]["content"].split("Reply A:", 1)[1].split("Reply B:", 1)[0]
        else "Verdict: B"
    )
    params = JudgeParams(
        backend="openai",
        base_url=server.url,
        judge_model="tiny-judge",
        api_key_env="FTLAB_TEST_JUDGE_KEY",
        backoff_s=0.0,
    )
    rows = [{"prompt": f"message {i}"} for i in range(4)]
    out = JUDGE.run(
        EvalInput(
            None,
            None,
            rows,
            params,
            base_dir=EXPERIMENTS,
            cache_dir=tmp_path / "cache",
            responses=[f"a longer reply {i}" for i in range(4)],
            other_responses=[f"short {i}" for i in range(4)],
        )
    )
    assert out.metrics["win_rate"].value == 1.0  # the judge prefers "longer" in both orders
    assert out.metrics["position_consistency"].value == 1.0
    assert all(r["headers"].get("Authorization") == f"Bearer {secret}" for r in server.requests)
    assert len(server.requests) == 8  # 4 items × 2 orders
    stored = json.dumps(out.samples) + json.dumps([m.as_dict() for m in out.metrics.values()])
    for f in (tmp_path / "cache").rglob("*"):
        if f.is_file():
            stored += f.read_bytes().decode("utf-8", "replace")
    assert secret not in stored and "FTLAB_TEST_JUDGE_KEY" not in json.dumps(out.samples)


@pytest.mark.integration
def test_judge_in_a_run_with_stand_in_label_and_calibration(tmp_path) -> None:
    from ftlab.runner import execute
    from ftlab.runner.spec.load import expand_runs

    data = EXPERIMENTS / "data"
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(f"""\
name: judged
data:
  sft: {{path: {data}/support_sft.jsonl, overlong: truncate, max_rows: 48, val_fraction: 0.125}}
  prompts: {{path: {data}/support_eval.jsonl, format: prompts, val_fraction: 0.0}}
  prefs: {{path: {data}/support_prefs.jsonl, overlong: truncate, format: preference,
           max_rows: 60, val_fraction: 0.2}}
stages:
  - name: sft
    method: lora
    adapter: {{r: 4, alpha: 8, dropout: 0.0}}
    train: {{learning_rate: 3.0e-2, max_steps: 8, batch_size: 4, max_length: 96, precision: fp32}}
evals:
  - name: vs_base
    kind: judge
    data: prompts
    split: all
    limit: 6
    on: [last]
    params: {{against: base, verdicts: logprob, rubric: {EXPERIMENTS}/rubrics/support_reply.yaml,
              calibration: prefs, generation: {{max_new_tokens: 12}}}}
output: {{dir: {tmp_path / "runs"}}}
""")
    ((name, spec),) = expand_runs(spec_file)
    rd = execute.create_run(spec, variant=name, spec_file=spec_file, overrides=[])
    res = execute.execute(rd, spec)
    summary = json.loads((res.run_dir / "evals/vs_base/summary.json").read_text())
    assert summary["against"] == "base"
    assert any("stands in" in n for n in summary["notes"])
    m = summary["targets"]["sft"]["metrics"]
    assert m["win_rate"]["n"] == 6 and m["calibration_agreement"]["n"] == 12
    assert 0.0 <= m["position_consistency"]["value"] <= 1.0
    lines = (res.run_dir / "evals/vs_base/samples.jsonl").read_text().splitlines()
    sample = json.loads(lines[0])
    assert sample["response"] != sample["other"] or sample["response"] == ""
    assert "logP(A)" in sample["verdict_ab"]["raw"]
    # generations are cached: a second eval of the same models generates nothing
    cached = list((tmp_path / "runs/cache/generations").glob("*.json"))
    assert len(cached) == 2  # base's and the stage's replies


def test_judge_verdicts_are_indexed(tmp_path) -> None:
    """Both orders' verdicts of every item land in DuckDB's judge_verdicts table."""
    from ftlab.reports import store

    run = tmp_path / "runs" / "exp-base-20260101-000000-abcd"
    (run / "evals" / "j").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"experiment": "exp", "variant": "base"}))
    (run / "evals/j/summary.json").write_text(
        json.dumps(
            {
                "eval": "j",
                "kind": "judge",
                "headline": "win_rate",
                "last": "sft",
                "targets": {
                    "sft": {
                        "metrics": {"win_rate": {"value": 0.5, "low": 0.1, "high": 0.9, "n": 2}}
                    }
                },
            }
        )
    )
    samples = [
        {
            "target": "sft",
            "item": f"i{i}",
            "scores": {"win": 0.5},
            "verdict_ab": {"verdict": "A", "raw": "Verdict: A"},
            "verdict_ba": {"verdict": "A", "raw": "Verdict: A", "retried": True},
        }
        for i in range(2)
    ]
    (run / "evals/j/samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    store.ingest_runs(tmp_path / "runs", [run])
    rows = store.query(
        tmp_path / "runs",
        "SELECT position, verdict, retried FROM judge_verdicts ORDER BY item, position",
    )
    assert [(r["position"], r["verdict"], r["retried"]) for r in rows] == [
        ("ab", "A", False),
        ("ba", "A", True),
    ] * 2


SECRET_KEY = "sk-test-" + "s3cr3t" * 4


@pytest.mark.parametrize(
    ("where", "override"),
    [
        ("base_url: http://user:{key}@127.0.0.1:9/v1", []),
        ("api_key_env: {key}", []),
        ("api_key: {key}", []),
        ("headers: {{Authorization: 'Bearer {key}'}}", []),
        ("rubric: support_reply", ["tracking.wandb.api_key={key}"]),
        ("rubric: support_reply", ["evals.0.params.api_key_env={key}"]),
        ("rubric: support_reply", ["description={key}"]),
    ],
)
def test_a_key_typed_anywhere_is_refused_and_never_echoed(
    tmp_path: Path, where: str, override: list[str]
) -> None:
    """Issue 15.4: a key in a URL, in api_key_env, under api_key/headers, in W&B settings
    or on the command line: exit 2, the key in no output, nothing written."""
    import subprocess
    import sys

    spec = tmp_path / "s.yaml"
    spec.write_text(
        f"name: keyed\ndata:\n  sft: {{path: {EXPERIMENTS}/data/support_sft.jsonl}}\n"
        f"  prompts: {{path: {EXPERIMENTS}/data/support_eval.jsonl, format: prompts}}\n"
        "stages: [{name: sft, method: lora, train: {max_steps: 1}}]\n"
        "evals:\n  - kind: judge\n    data: prompts\n"
        "    params: {backend: openai, base_url: 'http://127.0.0.1:9/v1', "
        + where.format(key=SECRET_KEY).replace("base_url: ", "base_url2: ")
        + "}\n"
        f"output: {{dir: {tmp_path / 'runs'}}}\n"
    )
    if where.startswith("base_url"):  # the URL itself carries the key
        spec.write_text(
            spec.read_text().replace("base_url: 'http://127.0.0.1:9/v1', base_url2: ", "base_url: ")
        )
    args = [o.format(key=SECRET_KEY) for o in override]
    for command in (["validate", str(spec)], ["run", str(spec), *args]):
        if command[0] == "validate" and args:
            continue
        out = subprocess.run(
            [sys.executable, "-m", "ftlab.cli", *command],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert out.returncode == 2, out.stdout + out.stderr
        assert SECRET_KEY not in out.stdout + out.stderr
        assert "s3cr3t" not in out.stdout + out.stderr
        assert "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()


def test_a_judge_whose_every_call_failed_fails_its_eval(tmp_path: Path) -> None:
    """Issue 15.4: every judge call failing is an error, not a 0.5 win rate."""
    params = JudgeParams(
        backend="openai", base_url="http://127.0.0.1:9/v1", max_retries=0, timeout_s=2.0
    )
    rows = [{"prompt": f"message {i}"} for i in range(2)]
    with pytest.raises(EvalError, match="every one of 2 judge calls failed"):
        JUDGE.run(
            EvalInput(
                None,
                None,
                rows,
                params,
                base_dir=EXPERIMENTS,
                cache_dir=tmp_path / "cache",
                responses=["a", "b"],
                other_responses=["c", "d"],
            )
        )


@pytest.mark.integration
def test_a_run_with_a_keyed_judge_and_wandb_writes_the_key_nowhere(
    server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 15.4: the key reaches the server and no file ftlab writes — run directory,
    caches, DuckDB, the W&B folder."""
    from ftlab.runner import execute
    from ftlab.runner.spec.load import expand_runs

    monkeypatch.setenv("FTLAB_TEST_JUDGE_KEY", SECRET_KEY)
    monkeypatch.setenv("WANDB_MODE", "offline")
    server.script, server.requests[:], server.fixed = [], [], "Verdict: A"
    data = EXPERIMENTS / "data"
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(
        f"name: keyed\ndata:\n  sft: {{path: {data}/support_sft.jsonl, max_rows: 24,"
        " overlong: truncate}\n"
        f"  prompts: {{path: {data}/support_eval.jsonl, format: prompts, val_fraction: 0.0}}\n"
        "stages: [{name: sft, method: lora, train: {max_steps: 2, max_length: 64, "
        "precision: fp32}}]\n"
        "evals:\n  - kind: judge\n    data: prompts\n    split: all\n    limit: 3\n"
        f"    params: {{backend: openai, base_url: '{server.url}', judge_model: j, "
        f"api_key_env: FTLAB_TEST_JUDGE_KEY, rubric: {EXPERIMENTS}/rubrics/support_reply.yaml, "
        "generation: {max_new_tokens: 8}}\n"
        "tracking: {wandb: {mode: offline, project: keyed}}\n"
        f"output: {{dir: {tmp_path / 'runs'}}}\n"
    )
    ((name, spec),) = expand_runs(spec_file)
    rd = execute.create_run(spec, variant=name, spec_file=spec_file, overrides=[])
    assert execute.execute(rd, spec).state == "completed"
    assert server.requests and all(
        r["headers"].get("Authorization") == f"Bearer {SECRET_KEY}" for r in server.requests
    )
    written = [f for f in (tmp_path / "runs").rglob("*") if f.is_file()]
    assert any(f.name == "ftlab.duckdb" for f in written)
    assert any("wandb" in f.parts for f in written)
    for f in written:
        assert SECRET_KEY.encode() not in f.read_bytes(), f
