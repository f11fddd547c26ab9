"""Log-likelihood of responses given prompts, batched, formatted as the model was trained
(the chat template when the tokenizer has one)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ftlab.runner.data import chat_prompt


class ScoringParams(BaseModel):
    """Settings of the evals that score reference text by log-likelihood."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(8, ge=1)
    """Sequences per forward pass."""
    max_length: int = Field(1024, ge=8)
    """Longest prompt + response in tokens (the prompt is cut from the left)."""


def prompt_response(
    tokenizer: Any, row: dict[str, Any], response: str | None = None
) -> tuple[str, str]:
    """(prompt text, response text) for one normalised row.

    `messages` rows: everything before the last assistant turn is the prompt. Rows with a
    `prompt` field: a user turn. `response` overrides the row's own completion.
    """
    template = getattr(tokenizer, "chat_template", None)
    if "messages" in row:
        msgs = row["messages"]
        cut = (
            max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
            if any(m["role"] == "assistant" for m in msgs)
            else len(msgs)
        )
        history, answer = msgs[:cut], response if response is not None else msgs[cut]["content"]
    else:
        history = chat_prompt(row)
        answer = response if response is not None else row.get("completion", "")
    if not template:
        prompt = "\n".join(m["content"] for m in history) + "\n"
        return prompt, answer + (tokenizer.eos_token or "")
    prompt = tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(
        [*history, {"role": "assistant", "content": answer}], tokenize=False
    )
    if full.startswith(prompt):
        return prompt, full[len(prompt) :]
    return prompt, answer + (tokenizer.eos_token or "")


def response_logprobs(
    model: Any,
    tokenizer: Any,
    pairs: list[tuple[str, str]],
    *,
    batch_size: int = 8,
    max_length: int = 1024,
    desc: str = "scoring",
    quiet: bool = False,
) -> list[tuple[float, int]]:
    """(sum of log p over the response tokens, number of response tokens) per pair.

    Sequences longer than `max_length` lose tokens from the left of the prompt, so the
    response is always scored whole where it fits.
    """
    import torch

    from ftlab.runner.progress import Bar

    device = next(model.parameters()).device
    encoded = []
    for prompt, response in pairs:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        r = tokenizer(response, add_special_tokens=False)["input_ids"][: max_length - 1]
        p = p[-(max_length - len(r)) :] if len(p) + len(r) > max_length else p
        encoded.append((p, r))
    order = sorted(range(len(encoded)), key=lambda i: -sum(map(len, encoded[i])))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    bar = Bar(len(encoded), desc, unit="sequence", quiet=quiet)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            seqs = [encoded[i][0] + encoded[i][1] for i in idx]
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for row, seq in enumerate(seqs):  # right padding: positions stay 0..len-1
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            logits = logits[:, -width:]  # prompt tuning prepends virtual-token positions
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            token_logp = logp.gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
            for row, i in enumerate(idx):
                p_len, r_len = len(encoded[i][0]), len(encoded[i][1])
                span = token_logp[row, p_len - 1 : p_len - 1 + r_len]
                out[i] = (float(span.sum()), r_len)
            bar.update(len(idx))
    bar.close()
    return out
