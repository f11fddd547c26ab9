"""Chat templates (issue 16): assistant-only loss with any template — the ones trl ships
(read from the installed trl at test time, so a newer trl adds cases) and ftlab's own."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from ftlab.runner import models, templates
from ftlab.runner.spec.errors import SpecError
from ftlab.runner.spec.load import expand_runs

from .conftest import DATA

MULTIMODAL = re.compile(r"(vl|llava|idefics|smolvlm)", re.I)
TEXT_TEMPLATES = [n for n in templates.names() if not MULTIMODAL.search(n)]
SPECIAL = re.compile(r"<\|[^<>\s|]+\|>|<[A-Za-z_]+\|>|<\|?[a-z_]+>|\[/?[A-Z_]+\]|</?s>")
CONVERSATION = [
    {"role": "system", "content": "You answer cooking questions."},
    {"role": "user", "content": "How long do I boil an egg?"},
    {"role": "assistant", "content": "Nine minutes for a hard yolk."},
    {"role": "user", "content": "And a soft one?"},
    {"role": "assistant", "content": "Six minutes, then cold water."},
]


def _tokenizer(text: str) -> Any:
    """tiny's tokenizer with the template's special tokens added (as a checkpoint of that
    family would have them)."""
    tok = models.load_tokenizer(models.resolve("tiny"))
    found = sorted(set(SPECIAL.findall(text)))
    if found:
        tok.add_special_tokens({"additional_special_tokens": found})
    tok.chat_template = text
    return tok


def _conversation(template: templates.Template) -> list[dict[str, str]]:
    try:
        templates.check(template)
        return CONVERSATION
    except templates.TemplateError:
        return [m for m in CONVERSATION if m["role"] != "system"]  # e.g. gemma: no system


def _masked_runs(ids: list[int], mask: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for token, bit in zip(ids, mask, strict=True):
        if bit and (not runs or runs[-1] is None):
            runs.append([token])
        elif bit:
            runs[-1].append(token)
        elif runs and runs[-1] is not None:
            runs.append(None)  # type: ignore[arg-type]
    return [r for r in runs if r is not None]


@pytest.mark.parametrize("name", TEXT_TEMPLATES)
def test_assistant_labels_are_each_reply_and_its_end_of_turn(name: str) -> None:
    """The SFT labels decode to exactly each assistant turn (content + end-of-turn) and
    nothing of the system or user turns; BOS is never doubled; the generation prompt
    is the template's own."""
    template = templates.named(name)
    mode = templates.usable_for_training(template)
    tok = _tokenizer(template.text)
    messages = _conversation(template)
    if mode == "ftlab":
        enc = templates.encode(tok, template.text, messages)
        ids, mask = enc["input_ids"], enc["assistant_masks"]
    else:  # trl's own markers or its patched training template
        from trl.chat_template_utils import get_training_chat_template

        text = template.text if mode == "markers" else get_training_chat_template(tok)
        out = tok.apply_chat_template(
            messages,
            chat_template=text,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
    replies = [m["content"] for m in messages if m["role"] == "assistant"]
    runs = [tok.decode(r) for r in _masked_runs(ids, mask)]
    assert len(runs) == len(replies), (mode, runs)
    for run, reply in zip(runs, replies, strict=True):
        assert reply in run, (mode, run)
        after = run.split(reply, 1)[1]
        assert after.strip(), f"{name} ({mode}): no end-of-turn marker after the reply: {run!r}"
        for other in messages:
            if other["role"] != "assistant":
                assert other["content"] not in run
    if tok.bos_token_id is not None:
        assert ids[:2] != [tok.bos_token_id, tok.bos_token_id]
    prompt = templates.generation_prompt(tok, template.text, messages[:-1])
    rendered = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    assert prompt == rendered


def test_a_template_that_rewrites_earlier_turns_is_a_spec_error(tmp_path: Path) -> None:
    """A template whose later render changes an earlier turn cannot be masked: `validate`
    says so and names the fixes."""
    bad = tmp_path / "rewrites.jinja"
    bad.write_text(
        "{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}"
        "{{ '<|a|>(earlier reply)<|e|>' }}{% else %}{{ '<|' + m['role'] + '|>' + m['content'] "
        "+ '<|e|>' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}"
        "{% endif %}"
    )
    spec = tmp_path / "s.yaml"
    spec.write_text(
        f"name: t\nmodel: {{name: tiny, chat_template: rewrites.jinja}}\n"
        f"data:\n  sft: {{path: {DATA}/support_sft.jsonl}}\n"
        "stages: [{name: sft, method: lora}]\n"
    )
    with pytest.raises(SpecError) as err:
        expand_runs(spec)
    (p,) = err.value.problems
    assert p.path == "stages.0.train.completion_only_loss"
    assert "does not preserve prefixes" in p.found
    assert "model.chat_template" in p.hint and "completion_only_loss: false" in p.hint
    spec.write_text(
        spec.read_text().replace(
            "method: lora}", "method: lora, train: {completion_only_loss: false}}"
        )
    )
    assert expand_runs(spec)  # loss on every token needs no mask


def test_unknown_template_name_suggests(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(
        f"name: t\nmodel: {{name: tiny, chat_template: mistrall}}\n"
        f"data:\n  sft: {{path: {DATA}/support_sft.jsonl}}\nstages: [{{name: sft, method: lora}}]\n"
    )
    with pytest.raises(SpecError, match="Did you mean 'mistral'"):
        expand_runs(spec)


@pytest.mark.integration
@pytest.mark.parametrize("name", ["mistral", "llama2"])
def test_templates_trl_cannot_patch_train_with_assistant_only_loss(
    name: str, tmp_path: Path
) -> None:
    """Mistral- and Llama-2-style templates (no generation markers, unknown to trl) train
    with completion_only_loss: the loss falls, the run records how it masked."""
    from ftlab.runner import execute

    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(
        f"name: tpl\nmodel: {{name: tiny, chat_template: {name}}}\n"
        f"data:\n  sft: {{path: {DATA}/support_sft.jsonl, max_rows: 48, val_fraction: 0.25}}\n"
        "stages:\n  - name: sft\n    method: lora\n    adapter: {r: 8, dropout: 0.0}\n"
        "    train: {learning_rate: 5.0e-3, max_steps: 12, batch_size: 4, max_length: 128, "
        "precision: fp32}\n"
        f"output: {{dir: {tmp_path / 'runs'}}}\n"
    )
    ((variant, spec),) = expand_runs(spec_file)
    rd = execute.create_run(spec, variant=variant, spec_file=spec_file, overrides=[])
    result = execute.execute(rd, spec)
    summary = result.stages["sft"]["summary"]
    assert summary["chat_template"]["name"] == name
    assert summary["chat_template"]["assistant_mask"] == "ftlab"
    assert summary["eval_loss"] < summary["initial_eval_loss"]
    saved = models.load_tokenizer(result.stages["sft"]["artifact"]["path"])
    assert saved.chat_template == templates.named(name).text  # evals and exports use it
