"""`ftlab export` and `ftlab merge-adapters` write folders plain transformers/peft load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ftlab.runner.artifacts import load_artifact
from ftlab.runner.export import ExportError, export, merge_adapters
from ftlab.runner.rundir import RunDir

from .test_runner import SPEC, _run

PROBE = torch.tensor([[2, 100, 200, 300, 400]])


def _logits(model) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=PROBE).logits


@pytest.fixture
def two_lora_runs(write, sft_data, tmp_path):
    path = write("spec.yaml", SPEC.format(steps=4, save=50, runs=tmp_path / "runs"))
    first = _run(path)
    second = _run(path, ["stages.sft.train.learning_rate=1e-2"])
    return RunDir(first.run_dir), RunDir(second.run_dir)


@pytest.mark.integration
def test_export_merged_and_adapter(two_lora_runs, tmp_path: Path) -> None:
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    run, _ = two_lora_runs
    trained, _ = load_artifact(run.stage_dir("sft") / "artifact")
    expected = _logits(trained)
    merged = export(run, tmp_path / "merged", merge=True)
    assert not (merged / "adapter_config.json").exists()
    plain = AutoModelForCausalLM.from_pretrained(merged)
    assert torch.allclose(_logits(plain), expected, atol=1e-4)
    adapter = export(run, tmp_path / "adapter")
    peft_model = AutoPeftModelForCausalLM.from_pretrained(adapter)
    assert torch.allclose(_logits(peft_model), expected, atol=1e-4)
    with pytest.raises(ExportError, match="already exists"):
        export(run, tmp_path / "adapter")
    with pytest.raises(ExportError, match="has no stage 'nope'"):
        export(run, tmp_path / "x", stage="nope")


@pytest.mark.integration
def test_weighted_merge_of_two_adapters(two_lora_runs, tmp_path: Path) -> None:
    from peft import AutoPeftModelForCausalLM

    a, b = (r.stage_dir("sft") / "artifact" for r in two_lora_runs)
    only_a = merge_adapters([(a, 1.0), (b, 0.0)], tmp_path / "only_a")
    model_a, _ = load_artifact(a)
    merged_a = AutoPeftModelForCausalLM.from_pretrained(only_a)
    assert torch.allclose(_logits(merged_a), _logits(model_a), atol=1e-4)
    ties = merge_adapters(
        [(a, 0.5), (b, 0.5)], tmp_path / "ties", combination="ties", density=0.5, merge=True
    )
    assert (ties / "model.safetensors").is_file()


def test_export_cli_errors_cleanly(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ftlab.cli",
            "export",
            "nope",
            str(tmp_path / "o"),
            "--dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "no run 'nope'" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.integration
def test_generate_and_chat_answer_with_the_runs_template(write, sft_data, tmp_path) -> None:
    """`ftlab generate RUN PROMPT` and `ftlab chat RUN` (driven through stdin) reply as
    the run's model does under its chat template: the same greedy text a direct
    apply_chat_template + generate gives, the second chat turn with the first in context."""
    from typer.testing import CliRunner

    from ftlab.cli.main import app

    run = RunDir(
        _run(write("spec.yaml", SPEC.format(steps=2, save=50, runs=tmp_path / "runs"))).run_dir
    )
    model, tok = load_artifact(run.stage_dir("sft") / "artifact")
    model.eval()

    def direct(messages: list[dict[str, str]]) -> str:
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tok(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(
                **ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id
            )
        return tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()

    system = {"role": "system", "content": "Be brief."}
    first = direct([system, {"role": "user", "content": "My parcel is late"}])
    args = ["--dir", str(tmp_path / "runs"), "--max-new-tokens", "12", "--system", "Be brief."]
    got = CliRunner().invoke(app, ["generate", run.run_id, "My parcel is late", *args])
    assert got.exit_code == 0, got.output
    assert "> My parcel is late" in got.output and first in got.output
    second = direct(
        [
            system,
            {"role": "user", "content": "My parcel is late"},
            {"role": "assistant", "content": first},
            {"role": "user", "content": "Thanks"},
        ]
    )
    chat = CliRunner().invoke(
        app, ["chat", run.run_id, *args], input="My parcel is late\nThanks\n/quit\n"
    )
    assert chat.exit_code == 0, chat.output
    assert f"model> {first}" in chat.output and f"model> {second}" in chat.output
    assert "you> My parcel is late" in chat.output  # piped lines are shown
    missing = CliRunner().invoke(app, ["chat", run.run_id, "--stage", "dpo", *args[:2]])
    assert missing.exit_code == 2 and "has no stage 'dpo'; it has sft" in missing.output
