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
from .helpers import run_spec

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
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(
        f"name: tpl\nmodel: {{name: tiny, chat_template: {name}}}\n"
        f"data:\n  sft: {{path: {DATA}/support_sft.jsonl, overlong: truncate, max_rows: 48,"
        " val_fraction: 0.25}\n"
        "stages:\n  - name: sft\n    method: lora\n    adapter: {r: 8, dropout: 0.0}\n"
        "    train: {learning_rate: 5.0e-3, max_steps: 12, batch_size: 4, max_length: 128, "
        "precision: fp32}\n"
        f"output: {{dir: {tmp_path / 'runs'}}}\n"
    )
    rd, result = run_spec(spec_file)
    summary = result.stages["sft"]["summary"]
    assert summary["chat_template"]["name"] == name
    assert summary["chat_template"]["assistant_mask"] == "ftlab"
    assert summary["eval_loss"] < summary["initial_eval_loss"]
    saved = models.load_tokenizer(result.stages["sft"]["artifact"]["path"])
    assert saved.chat_template == templates.named(name).text  # evals and exports use it


def _pairs_row(template: templates.Template) -> dict[str, Any]:
    """A preference row as ftlab hands it to trl (`data.<name>.system_prompt` included)."""
    from ftlab.runner.data import with_system

    row = {"prompt": "How long do I boil an egg?", "chosen": "Nine minutes.", "rejected": "Two."}
    messages = _conversation(template)
    return with_system(row, messages[0]["content"]) if messages[0]["role"] == "system" else row


# GLM-4 ends a reply by starting the next turn (`<|user|>`, an EOS id of its generation
# config): its last assistant turn renders no end marker of its own.
NO_END_MARKER = {"glm4moe"}


def _dpo_spec(tmp_path: Path, name: str) -> Path:
    spec = tmp_path / "dpo.yaml"
    spec.write_text(
        f"name: t\nmodel: {{name: tiny, chat_template: {name}}}\n"
        f"data:\n  prefs: {{path: {DATA}/support_prefs.jsonl, format: preference}}\n"
        "stages: [{name: dpo, method: dpo, data: prefs}]\n"
    )
    return spec


@pytest.mark.parametrize("name", TEXT_TEMPLATES)
def test_preference_prompt_ends_where_the_reply_begins(name: str, tmp_path: Path) -> None:
    """DPO and KTO (trl's tokenisation of ftlab's rows): the tokenised prompt is a prefix of
    prompt + reply, so trl cuts nothing off the prompt, and the completion is exactly the
    reply and its end-of-turn marker. A template where that cannot hold (a reasoning
    template whose generation prompt opens a think block) is refused at `validate`."""
    from trl.data_utils import _tokenize, common_prefix_length

    from ftlab.runner.methods.preference import _conversational

    template = templates.named(name)
    try:
        templates.check_preference(template)
    except templates.TemplateError:
        with pytest.raises(SpecError) as err:
            expand_runs(_dpo_spec(tmp_path, name))
        (p,) = err.value.problems
        assert p.path == "stages.0.method" and "think block" in p.found
        assert "model.chat_template" in p.hint
        return
    tok = _tokenizer(template.text)
    (row,) = _conversational([_pairs_row(template)], tok)
    if "system" in _pairs_row(template):
        assert row["prompt"][0] == {"role": "system", "content": CONVERSATION[0]["content"]}
    prompt = _tokenize(tok, row["prompt"], add_generation_prompt=True)["input_ids"]
    for key in ("chosen", "rejected"):
        full = _tokenize(tok, row["prompt"] + row[key])["input_ids"]
        assert common_prefix_length(prompt, full) == len(prompt), tok.decode(prompt)
        completion = tok.decode(full[len(prompt) :])
        reply = row[key][0]["content"]
        assert reply in completion, completion
        assert name in NO_END_MARKER or completion.split(reply, 1)[1].strip(), completion
        assert "boil an egg" not in completion
        if tok.bos_token_id is not None:
            assert full[:2] != [tok.bos_token_id, tok.bos_token_id]


@pytest.mark.parametrize("name", TEXT_TEMPLATES)
def test_train_on_last_assistant_labels_only_the_last_reply(name: str, tmp_path: Path) -> None:
    """`train.train_on: last_assistant`: earlier replies are context, only the last one
    and its end-of-turn marker are labels (ftlab masks it). Reasoning templates that
    render the generation prompt unlike a reply are refused at `validate`."""
    template = templates.named(name)
    try:
        assert templates.usable_for_training(template, last_only=True) == "ftlab"
    except templates.TemplateError:
        spec = tmp_path / "s.yaml"
        spec.write_text(
            f"name: t\nmodel: {{name: tiny, chat_template: {name}}}\n"
            f"data:\n  sft: {{path: {DATA}/support_sft.jsonl}}\n"
            "stages: [{name: sft, method: lora, train: {train_on: last_assistant}}]\n"
        )
        with pytest.raises(SpecError, match="preserve prefixes"):
            expand_runs(spec)
        return
    tok = _tokenizer(template.text)
    messages = _conversation(template)
    enc = templates.encode(tok, template.text, messages, last_only=True)
    (run,) = [tok.decode(r) for r in _masked_runs(enc["input_ids"], enc["assistant_masks"])]
    assert run.startswith(messages[-1]["content"]) or messages[-1]["content"] in run
    assert messages[2]["content"] not in run and "boil an egg" not in run


def test_system_prompt_goes_first_where_there_is_none(tmp_path: Path) -> None:
    """`data.<name>.system_prompt`: a conversation without a system turn gets it first;
    one with its own keeps it; string prompts carry it to their chat turns. It is part of
    the data hash (a new system prompt retrains). prompt_completion rows (plain text) say
    why they cannot have one."""
    from ftlab.runner.data import chat_prompt, load
    from ftlab.runner.spec.schema import DataSource

    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        '{"messages": [{"role": "user", "content": "Hi"}, '
        '{"role": "assistant", "content": "Yo"}]}\n'
        '{"messages": [{"role": "system", "content": "Own."}, {"role": "user", "content": "Q"}, '
        '{"role": "assistant", "content": "A"}]}\n'
    )
    plain = load(DataSource(path=str(rows), val_fraction=0.0), base_dir=tmp_path, seed=0)
    source = DataSource(path=str(rows), val_fraction=0.0, system_prompt="You are terse.")
    ds = load(source, base_dir=tmp_path, seed=0)
    firsts = sorted(r["messages"][0]["content"] for r in ds.train)
    assert firsts == ["Own.", "You are terse."]
    assert ds.content_hash != plain.content_hash
    prefs = tmp_path / "p.jsonl"
    prefs.write_text('{"prompt": "Q", "chosen": "A", "rejected": "B"}\n')
    source = DataSource(path=str(prefs), format="preference", val_fraction=0.0, system_prompt="S")
    (row,) = load(source, base_dir=tmp_path, seed=0).train
    assert chat_prompt(row) == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q"},
    ]
    spec = tmp_path / "s.yaml"
    spec.write_text(
        f"name: t\ndata:\n  sft: {{path: {rows}, format: prompt_completion, system_prompt: S}}\n"
        "stages: [{name: sft, method: lora}]\n"
    )
    with pytest.raises(SpecError, match="prompt_completion rows train as plain text"):
        expand_runs(spec)


LLAMA3_SPECIAL = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|finetune_right_pad_id|>",
]


def _llama3_checkpoint(folder: Path) -> Path:
    """A local checkpoint shaped like Llama-3.1: its special tokens, its chat template, EOS
    `<|eot_id|>`, and no pad token (tiny's weights, embeddings resized)."""
    from transformers import AutoModelForCausalLM

    ref = models.resolve("tiny")
    tok = models.load_tokenizer(ref)
    tok.add_special_tokens({"additional_special_tokens": LLAMA3_SPECIAL})
    tok.bos_token, tok.eos_token = "<|begin_of_text|>", "<|eot_id|>"
    tok.pad_token = None
    tok.chat_template = templates.named("llama3").text
    model = AutoModelForCausalLM.from_pretrained(ref.path)
    model.resize_token_embeddings(len(tok))
    model.config.pad_token_id = None
    model.config.bos_token_id, model.config.eos_token_id = tok.bos_token_id, tok.eos_token_id
    model.generation_config.pad_token_id = None
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_without_a_pad_token_eos_stays_a_label() -> None:
    """No pad token and no reserved one: pad = EOS, and trl's collator still labels every
    reply's EOS (it pads labels by position, never by token id)."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    tok = _tokenizer(templates.named("mistral").text)
    tok.pad_token = tok.eos_token  # pad_token_for's last resort
    rows = [CONVERSATION[1:3], CONVERSATION[1:]]
    encoded = [templates.encode(tok, templates.named("mistral").text, r) for r in rows]
    batch = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(
        [{"input_ids": e["input_ids"]} for e in encoded]
    )
    short = len(encoded[0]["input_ids"])
    assert batch["input_ids"][0, short - 1] == tok.eos_token_id  # the reply's own EOS
    assert batch["labels"][0, short - 1] == tok.eos_token_id  # … is learned
    assert (batch["labels"][0, short:] == -100).all()  # the padding is not


@pytest.mark.integration
def test_llama3_checkpoint_without_pad_token_trains_sft_dpo_and_evaluates(tmp_path: Path) -> None:
    """Issue 16: a Llama-3-style tokenizer with no pad token: SFT → DPO → evals complete;
    the run records the pad token it chose (the checkpoint's reserved one), the SFT labels
    end each reply with <|eot_id|>, and no sequence starts with a doubled BOS."""
    ckpt = _llama3_checkpoint(tmp_path / "llama3ish")
    tok = models.load_tokenizer(str(ckpt))
    assert tok.pad_token == "<|finetune_right_pad_id|>"
    enc = templates.encode(tok, tok.chat_template, CONVERSATION)
    ids = enc["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id
    labelled = [i for i, m in zip(ids, enc["assistant_masks"], strict=True) if m]
    assert labelled.count(tok.convert_tokens_to_ids("<|eot_id|>")) == 2
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(
        f"name: l3\nmodel: {ckpt}\n"
        f"data:\n  sft: {{path: {DATA}/support_sft.jsonl, max_rows: 24}}\n"
        f"  prefs: {{path: {DATA}/support_prefs.jsonl, format: preference, max_rows: 16}}\n"
        "stages:\n"
        "  - {name: sft, method: lora, train: {max_steps: 4, batch_size: 4, max_length: 160,"
        " precision: fp32}}\n"
        "  - {name: dpo, method: dpo, from: sft, data: prefs, train: {max_steps: 2, batch_size: 2,"
        " max_length: 160, precision: fp32}}\n"
        "evals:\n"
        "  - {kind: perplexity, data: sft, limit: 4}\n"
        "  - {kind: format, data: sft, limit: 4, params: {generation: {max_new_tokens: 8}}}\n"
        f"output: {{dir: {tmp_path / 'runs'}}}\n"
    )
    rd, result = run_spec(spec_file)
    assert rd.status()["state"] == "completed"
    for stage in ("sft", "dpo"):
        assert result.stages[stage]["summary"]["pad_token"] == "<|finetune_right_pad_id|>"
    assert result.stages["sft"]["summary"]["chat_template"]["assistant_mask"] == "trl"
    evals = {f.parent.name for f in (rd.path / "evals").glob("*/summary.json")}
    assert evals == {"perplexity", "format"}
