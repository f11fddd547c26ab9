"""Online RL (GRPO, RLOO) with reward functions, and the reward-function registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ftlab.runner import models, rewards
from ftlab.runner.methods import METHODS
from ftlab.runner.methods.base import StageContext
from ftlab.runner.spec.schema import Spec

from .conftest import DATA
from .helpers import Snapshot, stage_ctx


def test_builtin_rewards_score_as_documented() -> None:
    (kw,), _ = rewards.build([rewards.RewardSpec(name="keywords")])
    good = (
        "Hi Ann, I am sorry for the trouble. I have issued a refund. You should see it "
        "within 3 days. Kind regards, Support."
    )
    assert kw([good, "No."]) == [1.0, 0.0]
    assert kw([[{"role": "assistant", "content": "I have done it."}]]) == [0.25]
    (js,), _ = rewards.build([rewards.RewardSpec(name="json_valid")])
    assert js(['{"a": 1}', "{a"]) == [1.0, 0.0]
    (ln,), _ = rewards.build([rewards.RewardSpec(name="length", params={"target_words": 4})])
    assert ln(["a b c d", "a b", "a b c d e f g h"]) == [0.0, -0.5, -1.0]
    (rx,), w = rewards.build(
        [rewards.RewardSpec(name="regex", weight=2, params={"pattern": r"#\d+"})]
    )
    assert rx(["order #12", "order"]) == [1.0, 0.0] and w == [2]


def test_user_reward_module_registers(tmp_path: Path) -> None:
    (tmp_path / "my_rewards.py").write_text(
        "from ftlab.runner.rewards import reward, text_of\n"
        "@reward('shouts')\n"
        "def shouts(*, mark='!'):\n"
        "    return lambda completions, **kw: [float(mark in text_of(c)) for c in completions]\n"
    )
    rewards.load_module("my_rewards.py", tmp_path)
    (fn,), _ = rewards.build([rewards.RewardSpec(name="shouts")])
    assert fn(["hey!", "hey"]) == [1.0, 0.0]
    with pytest.raises(KeyError, match="Did you mean 'shouts'"):
        rewards.build([rewards.RewardSpec(name="shout")])


def _ctx(method: str, tmp_path: Path, records: list, upstream, snap=None) -> StageContext:
    spec = Spec.model_validate(
        {
            "name": "rl",
            "data": {
                "p": {
                    "path": str(DATA / "support_eval.jsonl"),
                    "format": "prompts",
                    "max_rows": 32,
                    "val_fraction": 0.0,
                }
            },
            "stages": [
                {
                    "name": "rl",
                    "method": method,
                    "data": "p",
                    "adapter": {"r": 8, "dropout": 0.0},
                    # the SFT'd model opens with "I am sorry" in about half of its replies
                    # (two of the four acknowledgements it learnt): one early choice that
                    # RL can shift in a few steps
                    "params": {
                        "rewards": [{"name": "keywords", "params": {"groups": [["sorry"]]}}],
                        "num_generations": 4,
                        "max_completion_length": 24,
                    },
                    "train": {
                        "learning_rate": 3e-3,
                        "max_steps": 12,
                        "batch_size": 8,
                        "logging_steps": 1,
                        "precision": "fp32",
                    },
                }
            ],
        }
    )
    return stage_ctx(
        spec,
        spec.stages[0],
        "p",
        tmp_path,
        upstream=upstream,
        log=records.append,
        extra_callbacks=[snap] if snap else [],
    )


@pytest.mark.integration
@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_online_method_raises_the_reward(method: str, tmp_path: Path, sft_model) -> None:
    torch.manual_seed(0)
    tok = models.load_tokenizer(models.resolve("tiny"))
    snap = Snapshot(tok("Hello", return_tensors="pt")["input_ids"])
    records: list[dict] = []
    result = METHODS.get(method).train(_ctx(method, tmp_path, records, sft_model, snap))
    rewards_logged = [r["reward"] for r in records if "reward" in r]
    assert len(rewards_logged) == 12
    first, last = sum(rewards_logged[:3]) / 3, sum(rewards_logged[-3:]) / 3
    assert last > first, rewards_logged
    for name in snap.trainable:
        assert not torch.equal(snap.before[name], snap.after[name]), name
    for name in set(snap.before) - snap.trainable:
        assert torch.equal(snap.before[name], snap.after[name]), name
    assert result.summary["reward_last"] == rewards_logged[-1]


def test_generations_must_divide_the_batch(tmp_path: Path) -> None:
    ctx = _ctx("grpo", tmp_path, [], None)
    ctx.stage.params["num_generations"] = 3
    with pytest.raises(ValueError, match="must divide batch_size"):
        METHODS.get("grpo").train(ctx)


def test_reward_module_loads_twice_and_resolves_from_the_spec(tmp_path: Path, write) -> None:
    """Issue 14.3: a second load of the same reward file (second run, variant or trial)
    does not fail 'already registered'; the path is relative to the spec file, not to
    the data file's folder."""
    from ftlab.runner.spec.load import load_spec

    (tmp_path / "my_rewards2.py").write_text(
        "from ftlab.runner.rewards import reward\n"
        "@reward('twice_ok')\n"
        "def twice_ok():\n"
        "    return lambda completions, **kw: [1.0 for _ in completions]\n"
    )
    write("data/p.jsonl", '{"prompt": "hi"}\n{"prompt": "ho"}\n')
    spec = load_spec(
        write(
            "s.yaml",
            "name: t\ndata:\n  p: {path: data/p.jsonl, format: prompts}\n"
            "stages:\n  - name: g\n    method: grpo\n    data: p\n"
            "    params: {reward_module: my_rewards2.py, rewards: [{name: twice_ok}]}\n",
        )
    )
    module = spec.stages[0].params["reward_module"]
    assert Path(module) == tmp_path / "my_rewards2.py"  # anchored to the spec's folder
    rewards.load_module(module, Path("/nonexistent"))
    rewards.load_module(module, Path("/nonexistent"))  # again: no error
    assert rewards.REWARDS.get("twice_ok")()(["a"]) == [1.0]


def test_registry_decorator_replaces_its_lazy_placeholder() -> None:
    """Issue 14.3: `@register("x")` in the module a lazy "module:attr" entry names
    replaces the placeholder (as lm-eval's registry does) instead of raising."""
    from ftlab.runner.registry import Registry

    reg: Registry[object] = Registry("thing")
    reg.register("x", f"{__name__}:_thing")

    @reg.register("x")
    def _thing() -> None: ...

    assert reg.get("x") is _thing
    import json

    with pytest.raises(ValueError, match="already registered"):
        reg.register("x")(json.dumps)  # another module's object under a taken name
    reg.register("y", "json:dumps")
    with pytest.raises(ValueError, match="lazily, as json:dumps"):
        reg.register("y")(_thing)


@pytest.mark.integration
def test_reward_module_spec_runs_variants_and_a_sweep_in_one_process(tmp_path: Path) -> None:
    """Issue 14.3 (done when): a spec naming `params.reward_module` (next to the spec;
    its data elsewhere) runs two variants and a 2-trial sweep in one process."""
    from ftlab.runner import execute
    from ftlab.runner.spec.load import expand_runs
    from ftlab.sweeps import study as study_mod

    (tmp_path / "my_rules.py").write_text(
        "from ftlab.runner.rewards import reward, text_of\n"
        "@reward('short_reply')\n"
        "def short_reply(*, words=12):\n"
        "    return lambda completions, **kw: [\n"
        "        -abs(len(text_of(c).split()) - words) / words for c in completions]\n"
    )
    spec_file = tmp_path / "rl.yaml"
    spec_file.write_text(
        f"name: rltest\ndata:\n  p: {{path: {DATA}/support_eval.jsonl, format: prompts, "
        "max_rows: 16, val_fraction: 0.0}\n"
        "stages:\n  - name: rl\n    method: grpo\n    data: p\n    adapter: {r: 4}\n"
        "    params: {reward_module: my_rules.py, rewards: [{name: short_reply}],\n"
        "             num_generations: 2, max_completion_length: 8}\n"
        "    train: {max_steps: 1, batch_size: 4, precision: fp32, learning_rate: 1.0e-3}\n"
        "variants:\n  fast: {stages.rl.train.learning_rate: 5.0e-3}\n"
        "search:\n  n_trials: 2\n  sampler: random\n  pruner: none\n"
        "  objectives: [{metric: stage.rl.reward_last, direction: maximize}]\n"
        "  space: {stages.rl.adapter.r: [2, 8]}\n"
        f"output: {{dir: {tmp_path / 'runs'}}}\n"
    )
    states = []
    for name, spec in expand_runs(spec_file):
        rd = execute.create_run(spec, variant=name, spec_file=spec_file, overrides=[])
        states.append(execute.execute(rd, spec).state)
    assert states == ["completed", "completed"]
    sweep = study_mod.load(spec_file)
    study_mod.run_sweep(sweep)
    trials = study_mod.open_study(sweep).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]


GRPO_OPTIONS = {
    "loss_type": "dr_grpo",
    "importance_sampling_level": "sequence",  # GSPO
    "scale_rewards": "none",
    "epsilon": 0.1,
    "epsilon_high": 0.28,
    "mask_truncated_completions": True,
    "num_iterations": 2,
    "top_entropy_quantile": 0.5,
    "beta": 0.01,
}


@pytest.mark.integration
def test_grpo_options_reach_trls_config(tmp_path: Path, sft_model) -> None:
    """Issue 21: each GRPO setting trl 1.16 offers is passed through as written; RLOO
    gets the ones its config has."""
    from transformers import TrainerCallback

    class Args(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
            self.args = args

    seen = Args()
    records: list[dict] = []
    ctx = _ctx("grpo", tmp_path, records, sft_model, seen)
    ctx.stage.params.update(GRPO_OPTIONS, log_completions=2)
    # an eval-only reward: computed and logged at every step, weight 0 in the sum
    ctx.stage.params["rewards"].append({"name": "length", "log_only": True, "weight": 3.0})
    ctx.stage.train.max_steps = 2
    ctx.snapshot_every = (1,)  # an `every: 1` eval on this stage: a snapshot per step
    result = METHODS.get("grpo").train(ctx)
    assert sorted(result.summary["snapshots"]) == ["1", "2"]  # step 2 is the artifact
    assert Path(result.summary["snapshots"]["1"], "ftlab_artifact.json").is_file()
    assert type(seen.args).__name__ == "GRPOConfig"
    assert {k: getattr(seen.args, k) for k in GRPO_OPTIONS} == GRPO_OPTIONS
    assert seen.args.reward_weights == [1.0, 0.0]
    # log_completions: 2 → the first two completions of each generation, with each term
    logged = [json.loads(line) for line in (tmp_path / "completions.jsonl").open()]
    assert [r["step"] for r in logged] == [1, 1] and all(r["completion"] for r in logged)
    assert all(set(r["rewards"]) == {"keywords", "length"} for r in logged)
    steps = [r for r in records if "reward" in r]
    # num_iterations 2: the second step reuses the first's generations, no new rewards
    assert len(steps) == 1 and all("rewards/length/mean" in r for r in steps)
    for r in steps:  # the optimised reward is the keyword term alone
        assert r["reward"] == pytest.approx(r["rewards/keywords/mean"], abs=1e-6)

    seen = Args()
    ctx = _ctx("rloo", tmp_path / "rloo", [], sft_model, seen)
    ctx.stage.params.update(epsilon_high=0.3, num_iterations=2, mask_truncated_completions=True)
    ctx.stage.train.max_steps = 1
    METHODS.get("rloo").train(ctx)
    assert (seen.args.epsilon_high, seen.args.num_iterations) == (0.3, 2)
    assert seen.args.mask_truncated_completions is True


@pytest.mark.parametrize(
    ("method", "line", "says"),
    [
        ("grpo", "loss_type: dr-grpo", "Did you mean 'dr_grpo'"),
        ("grpo", "importance_sampling_level: sequnce", "Did you mean 'sequence'"),
        ("grpo", "scale_rewards: true", "'group', 'batch' or 'none'"),
        ("grpo", "top_entropy_quantile: 1.5", "less than or equal to 1"),
        ("rloo", "loss_type: dapo", "stages.0.params.loss_type"),
        ("grpo", "epsilon_high: 0", "greater than 0"),
    ],
)
def test_bad_grpo_option_is_a_spec_error(method: str, line: str, says: str, write) -> None:
    from typer.testing import CliRunner

    from ftlab.cli.main import app

    write("data/p.jsonl", '{"prompt": "hi"}\n{"prompt": "ho"}\n')
    path = write(
        "s.yaml",
        "name: t\ndata:\n  p: {path: data/p.jsonl, format: prompts}\n"
        f"stages:\n  - name: g\n    method: {method}\n    data: p\n"
        f"    params:\n      rewards: [{{name: keywords}}]\n      {line}\n",
    )
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code != 0
    assert says in result.output, result.output
    assert "Traceback" not in result.output


def test_a_stage_whose_every_reward_is_log_only_is_a_spec_error(write) -> None:
    from typer.testing import CliRunner

    from ftlab.cli.main import app

    write("data/p.jsonl", '{"prompt": "hi"}\n')
    path = write(
        "s.yaml",
        "name: t\ndata:\n  p: {path: data/p.jsonl, format: prompts}\n"
        "stages:\n  - name: g\n    method: grpo\n    data: p\n"
        "    params: {rewards: [{name: keywords, log_only: true}]}\n",
    )
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code != 0
    assert "nothing is optimised" in result.output and "stages.0.params.rewards" in result.output


@pytest.mark.integration
def test_full_parameter_grpo_changes_every_weight(tmp_path: Path, sft_model) -> None:
    tok = models.load_tokenizer(models.resolve("tiny"))
    snap = Snapshot(tok("Hello", return_tensors="pt")["input_ids"])
    ctx = _ctx("grpo", tmp_path, [], sft_model, snap)
    ctx.stage.params["full"] = True
    ctx.stage.train.max_steps = 2
    ctx.stage.train.learning_rate = 1e-3
    result = METHODS.get("grpo").train(ctx)
    assert snap.trainable == set(snap.before)
    changed = [n for n in snap.trainable if not torch.equal(snap.before[n], snap.after[n])]
    assert len(changed) == len(snap.trainable)
    assert result.artifact.kind == "full"


@pytest.mark.integration
def test_online_dpo_trains_on_tiny(tmp_path: Path, sft_model) -> None:
    """Issue 21: online DPO (trl.experimental) — two sampled replies per prompt ranked by
    the reward functions; the loss moves and every adapter weight changes."""
    tok = models.load_tokenizer(models.resolve("tiny"))
    snap = Snapshot(tok("Hello", return_tensors="pt")["input_ids"])
    records: list[dict] = []
    ctx = _ctx("online_dpo", tmp_path, records, sft_model, snap)
    ctx.stage.params.pop("num_generations")
    ctx.stage.train.max_steps = 6
    ctx.stage.train.batch_size = 4
    result = METHODS.get("online_dpo").train(ctx)
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 6 and len(set(losses)) > 1, losses
    assert snap.trainable
    for name in snap.trainable:
        assert not torch.equal(snap.before[name], snap.after[name]), name
    for name in set(snap.before) - snap.trainable:
        assert torch.equal(snap.before[name], snap.after[name]), name
    assert result.artifact.kind == "adapter"


def test_plan_steps_of_a_grpo_stage_with_grpo_only_options() -> None:
    """Fresh-eyes find: `ftlab plan` crashed (ValidationError) on a GRPO stage with
    loss_type / scale_rewards: its steps were read with RLOO's params model."""
    from ftlab.runner.spec.schema import StageSpec

    stage = StageSpec.model_validate(
        {
            "name": "rl",
            "method": "grpo",
            "data": "p",
            "params": {"rewards": [{"name": "keywords"}], **GRPO_OPTIONS},
            "train": {"batch_size": 8, "max_steps": 0},
        }
    )
    steps = METHODS.get("grpo").steps(stage, [10] * 32, 1)
    assert steps.total > 0
