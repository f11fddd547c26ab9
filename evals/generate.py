"""Replies of a loaded model to prompts, batched, formatted as in training (chat template
when the tokenizer has one). Greedy by default, so the same model gives the same text."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ftlab.runner.data import chat_prompt

# dataset formats whose rows have a prompt a model can reply to (see runner.data)
PROMPT_FORMATS = (
    "prompts",
    "messages",
    "sharegpt",
    "alpaca",
    "prompt_completion",
    "preference",
    "unpaired",
)


class GenerationParams(BaseModel):
    """Generation settings of an eval (stored with its results)."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(64, ge=1)
    """Longest reply in tokens."""
    temperature: float = Field(0.0, ge=0.0)
    """0 = greedy (deterministic)."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling (with temperature > 0)."""
    seed: int = 0
    """Sampling seed (with temperature > 0)."""
    batch_size: int = Field(8, ge=1)
    """Prompts per generate call."""


def prompt_text(tokenizer: Any, row: dict[str, Any]) -> str:
    """The prompt of a normalised row as the model sees it before its reply."""
    if "messages" in row:
        msgs = row["messages"]
        last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=len(msgs))
        history = msgs[:last]
    else:
        history = chat_prompt(row)
    if getattr(tokenizer, "chat_template", None):
        text: str = tokenizer.apply_chat_template(
            history, tokenize=False, add_generation_prompt=True
        )
        return text
    return "\n".join(m["content"] for m in history) + "\n"


def user_prompt(row: dict[str, Any]) -> str:
    """The customer's message (what a judge is shown)."""
    if "messages" in row:
        users = [m["content"] for m in row["messages"] if m["role"] == "user"]
        return users[-1] if users else ""
    return str(row["prompt"])


def reference(row: dict[str, Any]) -> str | None:
    """A row's reference reply, if it has one."""
    if "messages" in row:
        replies = [m["content"] for m in row["messages"] if m["role"] == "assistant"]
        return replies[-1] if replies else None
    for key in ("completion", "chosen", "reference", "response"):
        if isinstance(row.get(key), str):
            return str(row[key])
    return None


def generate(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    params: GenerationParams,
    desc: str,
    *,
    progress: bool = True,
) -> list[str]:
    import torch

    from ftlab.runner.progress import Bar

    device = next(model.parameters()).device
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues from the last real token
    if tokenizer.pad_token is None:
        from ftlab.runner.models import pad_token_for

        tokenizer.pad_token = pad_token_for(tokenizer)
    out: list[str] = []
    try:
        bar = Bar(len(rows), desc, unit="reply", quiet=not progress)
        for start in range(0, len(rows), params.batch_size):
            batch = [prompt_text(tokenizer, r) for r in rows[start : start + params.batch_size]]
            enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
            sample = params.temperature > 0
            if sample:
                torch.manual_seed(params.seed + start)
            with torch.no_grad():
                ids = model.generate(
                    **enc.to(device),
                    max_new_tokens=params.max_new_tokens,
                    do_sample=sample,
                    temperature=params.temperature if sample else None,
                    top_p=params.top_p if sample else None,
                    pad_token_id=tokenizer.pad_token_id,
                )
            new = ids[:, enc["input_ids"].shape[1] :]
            out += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
            bar.update(len(batch))
        bar.close()
    finally:
        tokenizer.padding_side = side
    return out
