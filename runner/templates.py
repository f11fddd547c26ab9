"""Chat templates: resolution, and assistant masks for any template.

A template comes from the spec (`model.chat_template`: a name below or a `.jinja` file) or
from the checkpoint. trl can patch only the templates it ships into training templates
with `{% generation %}` markers; for any other template ftlab derives the assistant mask
itself by rendering the conversation turn by turn: the characters each assistant turn
adds after the generation prompt (its content and end-of-turn marker) are the ones the
loss sees. That needs a template that preserves prefixes (rendering the first k turns
gives the start of rendering k + 1); one that rewrites earlier turns cannot be masked and
is refused before training.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from ftlab.runner.spec.datapath import user_path

# ftlab's own templates, for checkpoints that ship none or a wrong one. Each renders a
# conversation exactly as the model family's reference template does for text messages.
OWN: dict[str, str] = {
    "chatml": (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
        "message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
    "llama2": (
        "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
        "{% set loop_messages = messages[1:] %}{% else %}{% set system = '' %}"
        "{% set loop_messages = messages %}{% endif %}"
        "{% for message in loop_messages %}"
        "{% if message['role'] == 'user' %}"
        "{% if loop.index0 == 0 and system %}"
        "{{ bos_token + '[INST] <<SYS>>\n' + system + '\n<</SYS>>\n\n' + message['content'] "
        "+ ' [/INST]' }}"
        "{% else %}{{ bos_token + '[INST] ' + message['content'] + ' [/INST]' }}{% endif %}"
        "{% elif message['role'] == 'assistant' %}"
        "{{ ' ' + message['content'] + ' ' + eos_token }}"
        "{% endif %}{% endfor %}"
    ),
    "mistral": (
        "{{ bos_token }}{% for message in messages %}"
        "{% if message['role'] == 'system' %}{{ '[SYSTEM_PROMPT]' + message['content'] + "
        "'[/SYSTEM_PROMPT]' }}"
        "{% elif message['role'] == 'user' %}{{ '[INST]' + message['content'] + '[/INST]' }}"
        "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
        "{% endif %}{% endfor %}"
    ),
    "zephyr": (
        "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] "
        "+ eos_token + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
    ),
    "alpaca": (
        "{% for message in messages %}"
        "{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
        "{% elif message['role'] == 'user' %}{{ '### Instruction:\n' + message['content'] "
        "+ '\n\n' }}"
        "{% elif message['role'] == 'assistant' %}{{ '### Response:\n' + message['content'] "
        "+ eos_token + '\n\n' }}"
        "{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '### Response:\n' }}{% endif %}"
    ),
}
# llama2 / mistral have no generation prompt: the user turn's closing [/INST] is where
# the reply starts, which is what `add_generation_prompt` would add.

SAMPLE = [  # a conversation every check renders: system, two exchanges
    {"role": "system", "content": "SYSTEM-TEXT"},
    {"role": "user", "content": "USER-ONE"},
    {"role": "assistant", "content": "ASSISTANT-ONE"},
    {"role": "user", "content": "USER-TWO"},
    {"role": "assistant", "content": "ASSISTANT-TWO"},
]


class TemplateError(ValueError):
    """A chat template that cannot be used as asked; the message names the fixes."""


@dataclass(frozen=True)
class Template:
    name: str  # a known name, a file path, or "checkpoint"
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]


def _trl_folder() -> Path:
    """trl's chat_templates folder, found without importing trl (seconds)."""
    import importlib.util

    spec = importlib.util.find_spec("trl")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "chat_templates"


@cache
def trl_templates() -> dict[str, str]:
    """The templates trl ships (the real models' originals), by file stem; training
    variants (`*_training`) are trl's patches, not names users pick."""
    folder = _trl_folder()
    return {
        p.stem: p.read_text()
        for p in sorted(folder.glob("*.jinja"))
        if not p.stem.endswith("_training")
    }


def names() -> list[str]:
    return sorted({*OWN, *trl_templates()})


def named(name: str, *, base_dir: Path | None = None) -> Template:
    """`model.chat_template`: a name (ftlab's own or one trl ships) or a .jinja file."""
    if name in OWN:
        return Template(name, OWN[name])
    if name in trl_templates():
        return Template(name, trl_templates()[name])
    path = user_path(name)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if path.suffix == ".jinja" and path.is_file():
        return Template(str(path), path.read_text(encoding="utf-8"))
    from ftlab.runner.registry import did_you_mean

    raise TemplateError(
        f"unknown chat template '{name}'.{did_you_mean(name, names())} Use a name "
        f"({', '.join(sorted(OWN))}, or one trl ships: {', '.join(sorted(trl_templates()))}) "
        "or a path to a .jinja file"
    )


def render(
    text: str, messages: list[dict[str, Any]], *, add_generation_prompt: bool, tokens: Any
) -> str:
    """Render with jinja as transformers does (`tokens`: bos/eos strings)."""
    from transformers.utils.chat_template_utils import _compile_jinja_template

    return str(
        _compile_jinja_template(text).render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=getattr(tokens, "bos_token", None) or "",
            eos_token=getattr(tokens, "eos_token", None) or "",
        )
    )


class _Placeholders:
    bos_token = "<BOS>"
    eos_token = "<EOS>"


def assistant_spans(
    text: str,
    messages: list[dict[str, Any]],
    *,
    tokens: Any = _Placeholders,
    last_only: bool = False,
) -> tuple[str, list[tuple[int, int]]]:
    """(the full rendering, [(start, end) of each assistant turn's characters]).

    An assistant turn's characters are what rendering it adds after the generation prompt
    of the turns before it: its content and end-of-turn marker. Raises TemplateError when
    the template does not preserve prefixes (a later turn rewrites an earlier one).
    `last_only`: the last assistant turn only (`train.train_on: last_assistant`)."""
    full = render(text, messages, add_generation_prompt=False, tokens=tokens)
    spans: list[tuple[int, int]] = []
    turns = [k for k, m in enumerate(messages) if m.get("role") == "assistant"]
    for k, message in enumerate(messages):
        if message.get("role") != "assistant" or (last_only and k != turns[-1]):
            continue
        before = render(text, messages[:k], add_generation_prompt=True, tokens=tokens)
        upto = render(text, messages[: k + 1], add_generation_prompt=False, tokens=tokens)
        if not upto.startswith(before) or not full.startswith(before):
            raise TemplateError(
                f"the chat template does not preserve prefixes at turn {k} (rendering the "
                "conversation so far is not the start of rendering one more turn), so "
                "ftlab cannot find the assistant's tokens"
            )
        # Up to where this turn's rendering and the whole conversation's agree: templates
        # that close the conversation with an extra EOS only at its very end keep it
        # out of every turn but the last.
        end = len(before)
        while end < min(len(upto), len(full)) and upto[end] == full[end]:
            end += 1
        if end == len(before):
            raise TemplateError(f"the chat template renders assistant turn {k} as nothing")
        spans.append((len(before), end))
    return full, spans


def check(
    template: Template, *, sample: list[dict[str, Any]] | None = None, last_only: bool = False
) -> None:
    """Can this template be masked? (No tokenizer needed: `ftlab validate` runs it.)"""
    sample = sample or SAMPLE
    try:
        full, spans = assistant_spans(template.text, sample, last_only=last_only)
    except TemplateError:
        raise
    except Exception as exc:  # noqa: BLE001 - jinja errors: a template that does not render
        raise TemplateError(
            f"the chat template does not render a plain text conversation "
            f"({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    masked = "".join(full[a:b] for a, b in spans)
    for turn in ("SYSTEM-TEXT", "USER-ONE", "USER-TWO"):
        if turn in masked and any(m["content"] == turn for m in sample):
            raise TemplateError(
                f"the chat template repeats the {turn.split('-')[0].lower()} "
                "turn inside an assistant turn"
            )
    for turn in ("ASSISTANT-TWO",) if last_only else ("ASSISTANT-ONE", "ASSISTANT-TWO"):
        if turn not in masked:
            raise TemplateError("the chat template drops an assistant turn's content")


def check_preference(template: Template) -> None:
    """DPO/KTO rows: trl cuts the reply off where the prompt (rendered with the generation
    prompt) stops being a prefix of prompt + reply. Reasoning templates whose generation
    prompt opens a think block that a rendered reply does not have cannot be cut right:
    the model would learn replies after a context it never sees."""
    for prompt in (SAMPLE[:2], SAMPLE[1:2]):  # with and without a system turn
        reply = [{"role": "assistant", "content": "ASSISTANT-ONE"}]
        try:
            alone = render(template.text, prompt, add_generation_prompt=True, tokens=_Placeholders)
            full = render(
                template.text, prompt + reply, add_generation_prompt=False, tokens=_Placeholders
            )
        except Exception:  # noqa: BLE001 - e.g. a template that refuses a system turn
            continue
        if not full.startswith(alone):
            end = alone[-24:]
            raise TemplateError(
                f"the chat template's generation prompt (ending {end!r}) is not how it "
                f"renders a reply in a conversation ({full[len(alone) - len(end) :][:40]!r}…), "
                "so trl cannot find where a preference row's reply starts (reasoning "
                "templates open a think block the replies do not have)"
            )


def encode(
    tokenizer: Any, text: str, messages: list[dict[str, Any]], *, last_only: bool = False
) -> dict[str, list[int]]:
    """input_ids and assistant_masks (1 = the loss sees this token) for one conversation;
    BOS is not added twice when the template writes it."""
    full, spans = assistant_spans(text, messages, tokens=tokenizer, last_only=last_only)
    bos = tokenizer.bos_token
    add_special = not (bos and full.startswith(bos))
    enc = tokenizer(full, add_special_tokens=add_special, return_offsets_mapping=True)
    mask = [
        int(any(a <= start < b for a, b in spans) and end > start)
        for start, end in enc["offset_mapping"]
    ]
    return {"input_ids": list(enc["input_ids"]), "assistant_masks": mask}


def generation_prompt(tokenizer: Any, text: str, messages: list[dict[str, Any]]) -> str:
    """What a model is given to reply to `messages` (the template's generation prompt)."""
    return render(text, messages, add_generation_prompt=True, tokens=tokenizer)


def trl_patchable(text: str) -> bool:
    """trl swaps in a training template for the templates it ships (exact text match)."""
    folder = _trl_folder()
    return any(
        text == body and (folder / f"{stem}_training.jinja").is_file()
        for stem, body in trl_templates().items()
    )


def has_generation_markers(text: str) -> bool:
    return "{% generation %}" in text or "{%- generation %}" in text


def usable_for_training(template: Template, *, last_only: bool = False) -> str:
    """How assistant-only loss will find the assistant's tokens with this template:
    `markers` (the template marks them), `trl` (trl patches it), `ftlab` (turn by turn;
    always for `last_only`, trl masks every turn); TemplateError when none can."""
    if has_generation_markers(template.text) and not last_only:
        return "markers"
    if trl_patchable(template.text) and not last_only:
        return "trl"
    try:
        check(template, last_only=last_only)
    except TemplateError as first:
        try:  # templates that refuse a system turn (gemma): a conversation without one
            no_system = [m for m in SAMPLE if m["role"] != "system"]
            check(template, sample=no_system, last_only=last_only)
        except TemplateError:
            raise first from None
    return "ftlab"


def for_model(model: str, chat_template: str) -> Template | None:
    """The template a run will use, when it can be known without loading anything: the
    spec's, or a local checkpoint's (`tokenizer_config.json` / `chat_template.jinja`).
    None for hub ids (checked when the SFT stage starts) and ftlab's own models."""
    import json

    if chat_template:
        return named(chat_template)
    folder = user_path(model)
    if not folder.is_dir():
        return None
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return Template("checkpoint", jinja.read_text(encoding="utf-8"))
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    text = config.get("chat_template")
    if isinstance(text, list):  # named variants: the default one
        text = next((t.get("template") for t in text if t.get("name") == "default"), None)
    return Template("checkpoint", text) if isinstance(text, str) else None
