"""Issue 17: a plugin is one file. The eval kind and the method below are defined here,
with only their decorator and base class; a spec that uses them validates, trains, caches
the stage, evaluates, stores per-item rows, compares (a paired test on the kind's item
scores) and renders in the report — with no other file of ftlab edited."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field
from typer.testing import CliRunner

from ftlab.evals import EVALS
from ftlab.evals.base import EvalInput, EvalKind, EvalOutput, Metric, item_id
from ftlab.evals.generate import GenerationParams
from ftlab.reports.stats import bootstrap_mean, wilson
from ftlab.runner.methods import METHODS
from ftlab.runner.methods.base import LORA_KEYS, Method, StageContext, StageResult


class ReplyLengthParams(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    max_chars: int = Field(40, ge=1)
    """A reply this short or shorter counts as short."""
    generation: GenerationParams = GenerationParams()
    """How the runner generates the replies this kind scores."""


@EVALS.register("reply_length")
class ReplyLength(EvalKind):
    """How long the model's replies are: the share of short ones, and the mean length."""

    data_formats = ("messages",)
    params_model = ReplyLengthParams
    headline = "short_rate"
    needs_responses = True  # the runner generates (and caches) the replies
    item_scores = {"short_rate": "short", "mean_length": "length"}
    details = (("mean_length", "mean reply length"),)

    def run(self, inp: EvalInput) -> EvalOutput:
        replies = inp.responses or []
        samples = [
            {
                "item": item_id(row),
                "scores": {"short": float(len(r) <= inp.params.max_chars), "length": len(r)},
                "reply": r,
                "verdict_chars": {"verdict": "short" if len(r) <= inp.params.max_chars else "long"},
            }
            for row, r in zip(inp.rows, replies, strict=True)
        ]
        k, n = sum(int(s["scores"]["short"]) for s in samples), len(samples)
        lengths = [float(s["scores"]["length"]) for s in samples]
        lo, hi = bootstrap_mean(lengths, seed=inp.seed)
        mean = sum(lengths) / n
        return EvalOutput(
            metrics={
                "short_rate": Metric(k / n, *wilson(k, n), n=n),
                "mean_length": Metric(mean, lo, hi, n=n),
            },
            samples=samples,
        )


@METHODS.register("tagged_lora")
class TaggedLoRA(Method):
    """A user's own method: LoRA SFT through ftlab's supervised recipe, plus a figure of
    its own in the stage summary (shown in the run table)."""

    data_formats = ("messages",)
    adapter_keys = LORA_KEYS
    figures = (("adapter_rank", "rank"),)

    def train(self, ctx: StageContext) -> StageResult:
        from ftlab.runner.methods.sft import train_supervised

        result = train_supervised(ctx, method="lora")
        result.summary["adapter_rank"] = float(ctx.stage.adapter.r)
        return result


class HeldOutParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reference: str = ""  # a dataset read besides `data:`


@EVALS.register("held_out_count")
class HeldOutCount(EvalKind):
    """Counts the held-out rows of a second dataset: a kind that needs no model and reads
    a dataset of its own (as a judge's calibration pairs)."""

    headline = "rows"
    needs_model = False
    params_model = HeldOutParams

    def datasets(self, params: HeldOutParams) -> dict[str, str]:
        return {"reference": params.reference}

    def run(self, inp: EvalInput) -> EvalOutput:
        return EvalOutput({"rows": Metric(float(len(inp.datasets["reference"])))})


SPEC = """\
name: gardening
model: tiny
data:
  tips: {{path: {data}, val_fraction: 0.25}}
stages:
  - name: tune
    method: tagged_lora
    data: tips
    adapter: {{r: 4, alpha: 8, dropout: 0.0}}
    train: {{learning_rate: 2.0e-2, max_steps: 4, batch_size: 4, max_length: 96,
             logging_steps: 2, precision: fp32}}
variants:
  calm: {{stages.tune.train.learning_rate: 1.0e-6}}
evals:
  - name: brevity
    kind: reply_length
    data: tips
    on: [base, last]
    params: {{max_chars: 30, generation: {{max_new_tokens: 12}}}}
output: {{dir: {runs}}}
"""


def _gardening(path: Path) -> None:
    rng = random.Random(7)
    plants = ["tomatoes", "basil", "roses", "lettuce", "mint", "peppers", "ferns", "tulips"]
    verbs = ["water", "prune", "feed", "repot", "mulch", "shade"]
    with path.open("w") as f:
        for i in range(32):
            plant, verb = rng.choice(plants), rng.choice(verbs)
            messages = [
                {"role": "user", "content": f"When should I {verb} my {plant}? ({i})"},
                {"role": "assistant", "content": f"{verb.title()} {plant} in the early morning."},
            ]
            f.write(json.dumps({"messages": messages}) + "\n")


@pytest.fixture(scope="module")
def gardening(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("plugins")
    _gardening(tmp / "tips.jsonl")
    spec = tmp / "gardening.yaml"
    spec.write_text(SPEC.format(data=tmp / "tips.jsonl", runs=tmp / "runs"))
    return spec, tmp / "runs"


def _cli(*args: str) -> Any:
    from ftlab.cli.main import app

    return CliRunner().invoke(app, list(args))


def test_plugins_defined_in_a_test_file_are_listed_and_validated(
    gardening: tuple[Path, Path],
) -> None:
    spec, _ = gardening
    assert _cli("validate", str(spec)).exit_code == 0
    listed = _cli("evals", "reply_length")
    assert listed.exit_code == 0 and "params.max_chars: int = 40" in listed.output
    assert "A reply this short" in listed.output
    assert "tagged_lora" in _cli("methods").output
    bad = spec.with_name("bad.yaml")
    bad.write_text(spec.read_text().replace("max_chars: 30", "max_char: 30"))
    out = _cli("validate", str(bad))
    assert out.exit_code == 2
    assert "unknown key 'max_char'" in out.output and "Did you mean 'max_chars'?" in out.output


@pytest.fixture(scope="module")
def trained(gardening: tuple[Path, Path]) -> str:
    first = _cli("run", str(gardening[0]))
    assert first.exit_code == 0, first.output
    return str(first.output)


@pytest.mark.integration
def test_a_toy_eval_kind_and_method_run_compare_and_render(
    gardening: tuple[Path, Path], trained: str
) -> None:
    from ftlab.reports import compare as compare_mod
    from ftlab.reports import html as html_mod
    from ftlab.reports import store

    spec, runs = gardening
    first = trained
    assert "rank 4.000" in first  # the method's own figure, in the run table
    assert "mean reply length" in first  # the kind's details line
    again = _cli("run", str(spec))  # same recipe: the stage is reused, the evals cached
    assert again.exit_code == 0, again.output
    assert "reusing the result of run" in again.output
    with store.connect(runs, write=False) as con:
        reused = con.execute("SELECT count(*) FROM stages WHERE reused_from != ''").fetchone()
        items = con.execute(
            "SELECT count(DISTINCT item) FROM eval_samples WHERE eval = 'brevity' "
            "AND metric = 'length'"
        ).fetchone()
        graded = con.execute(
            "SELECT DISTINCT position FROM judge_verdicts WHERE eval = 'brevity'"
        ).fetchall()
    assert graded == [("chars",)]  # a grader's verdicts, by the record's convention
    assert reused is not None and reused[0] == 2  # both variants' second run
    assert items is not None and items[0] == 8  # the validation rows, one score each

    cmp = compare_mod.compare(runs, metrics=["brevity.short_rate", "brevity.mean_length"])
    calm = next(r for r in cmp.rows if not r.baseline)
    cell = calm.cells["brevity.mean_length"]
    assert cell.diff is not None and cell.diff.n == 8  # paired on the per-item 'length'
    assert cell.p_adjusted is not None
    assert len(calm.items["brevity.mean_length"]) == 8
    page = html_mod.build(runs)
    assert "short_rate" in page and "brevity" in page  # its headline in the leaderboard
    assert '"length"' in page  # its per-item scores in the explorer


@pytest.mark.integration
def test_a_dataset_an_eval_reads_besides_data_is_part_of_its_cache_key(
    gardening: tuple[Path, Path], trained: str, tmp_path: Path
) -> None:
    """The eval cache keyed a judge's results without its calibration data: editing the
    calibration pairs reused the old agreement. A kind's `datasets()` now enter the key."""
    spec, runs = gardening
    reference = tmp_path / "reference.jsonl"
    _gardening(reference)
    evals = tmp_path / "evals.yaml"
    evals.write_text(
        f"data:\n  ref: {{path: {reference}, val_fraction: 0.25}}\n"
        "evals:\n  - {name: count, kind: held_out_count, params: {reference: ref}}\n"
    )
    run_dir = sorted(p for p in runs.iterdir() if (p / "run.json").is_file())[0]

    def count() -> tuple[float, str]:
        out = _cli("eval", str(run_dir), "--evals", str(evals), "--dir", str(runs))
        assert out.exit_code == 0, out.output
        summary = json.loads((run_dir / "evals" / "count" / "summary.json").read_text())
        last = summary["targets"][summary["last"]]
        return last["metrics"]["rows"]["value"], last["cached_from"]

    assert count() == (8.0, "")
    assert count()[1]  # unchanged: from the cache
    lines = reference.read_text().splitlines()
    reference.write_text("\n".join(lines[:16]) + "\n")  # half the rows
    assert count() == (4.0, "")  # a new reference dataset: computed anew


@pytest.mark.integration
def test_reuse_false_turns_every_cache_off(
    gardening: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`output.reuse: false` promised to train and compute everything afresh, but only the
    stage and reference-log-prob caches obeyed it: evals and generated replies came from
    the cache. Now every cache helper reads nothing when it is off."""
    from ftlab.evals import generate

    spec, _ = gardening
    fresh = tmp_path / "fresh.yaml"
    fresh.write_text(
        spec.read_text().replace(
            f"dir: {spec.parent / 'runs'}", f"dir: {tmp_path / 'runs'}, reuse: false"
        )
    )
    calls: list[int] = []
    real = generate.generate
    monkeypatch.setattr(generate, "generate", lambda *a, **k: calls.append(1) or real(*a, **k))
    for _ in range(2):
        out = _cli("run", str(fresh), "-v", "default")
        assert out.exit_code == 0, out.output
        assert "reusing" not in out.output
    assert len(calls) == 4  # base and last, generated anew in each run
    monkeypatch.undo()
    out = _cli("cache", "ls", "--dir", str(tmp_path / "runs"))
    assert out.exit_code == 0 and "evals" in out.output and "generations" in out.output
    cleared = _cli("cache", "clear", "--dir", str(tmp_path / "runs"))
    assert cleared.exit_code == 0 and "removed" in cleared.output
    assert not any((tmp_path / "runs" / "cache").glob("*/*"))


WORD_COUNT = """
from pydantic import BaseModel, ConfigDict

from ftlab.evals import EVALS
from ftlab.evals.base import EvalInput, EvalKind, EvalOutput, Metric, item_id


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    longer_than: int = 3


@EVALS.register("long_prompts")
class LongPrompts(EvalKind):
    data_formats = ("messages",)
    params_model = Params
    headline = "long_rate"
    needs_model = False
    item_scores = {"long_rate": "long"}

    def run(self, inp: EvalInput) -> EvalOutput:
        words = [len(r["messages"][0]["content"].split()) for r in inp.rows]
        samples = [
            {"item": item_id(r), "scores": {"long": float(w > inp.params.longer_than)}}
            for r, w in zip(inp.rows, words)
        ]
        rate = sum(s["scores"]["long"] for s in samples) / len(samples)
        return EvalOutput({"long_rate": Metric(rate, n=len(samples))}, samples)
"""


@pytest.mark.integration
def test_a_spec_names_its_own_plugin_file_and_every_process_loads_it(tmp_path: Path) -> None:
    """A user's eval kind in their own file, named by `plugins:` (as Axolotl's), works from
    the command line in a fresh process; an edited plugin is never answered from the
    cache; a broken one is a spec error naming `plugins.0`."""
    import subprocess
    import sys

    (tmp_path / "plugins").mkdir()
    plugin = tmp_path / "plugins" / "long_prompts.py"
    plugin.write_text(WORD_COUNT)
    _gardening(tmp_path / "tips.jsonl")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        SPEC.format(data=tmp_path / "tips.jsonl", runs=tmp_path / "runs")
        .replace("method: tagged_lora", "method: lora")
        .replace("variants:\n  calm: {stages.tune.train.learning_rate: 1.0e-6}\n", "")
        .replace(
            "    kind: reply_length\n    data: tips\n    on: [base, last]\n"
            "    params: {max_chars: 30, generation: {max_new_tokens: 12}}",
            "    kind: long_prompts\n    data: tips",
        )
        + "plugins: [plugins/long_prompts.py]\n"
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ftlab.cli", *args], capture_output=True, text=True
        )

    first = cli("run", str(spec))
    assert first.returncode == 0, first.stderr
    assert "long_rate" in first.stdout
    plugin.write_text(WORD_COUNT.replace("longer_than: int = 3", "longer_than: int = 9"))
    second = cli("run", str(spec))
    assert second.returncode == 0, second.stderr
    assert "reusing cached lora artifact" in second.stdout  # an eval's code: no retraining
    assert "reusing the result" not in second.stdout  # new plugin code: computed anew
    listed = cli("evals", "long_prompts", "--spec", str(spec))
    assert listed.returncode == 0 and "params.longer_than: int = 9" in listed.stdout
    plugin.write_text("def broken(:\n")
    broken = cli("validate", str(spec))
    assert broken.returncode == 2
    assert "plugins.0" in broken.stderr and "SyntaxError" in broken.stderr
    assert "Traceback" not in broken.stderr
    spec.write_text(spec.read_text().replace("plugins/long_prompts.py", "plugins/nope.py"))
    missing = cli("validate", str(spec))
    assert missing.returncode == 2 and "plugins.0" in missing.stderr


def test_a_plugin_without_its_one_required_method_is_refused_when_it_registers() -> None:
    """`run` (eval kind) and `train` (method) are abstract: a plugin that forgets them
    fails at its decorator, naming itself, not later in a run."""
    from ftlab.runner.registry import Registry

    kinds: Registry[EvalKind] = Registry("eval kind", base=EvalKind)
    with pytest.raises(TypeError, match="NoRun"):

        @kinds.register("no_run")
        class NoRun(EvalKind):
            headline = "x"

    methods: Registry[Method] = Registry("method", base=Method)
    with pytest.raises(TypeError, match="NoTrain"):

        @methods.register("no_train")
        class NoTrain(Method):
            data_formats = ("messages",)
