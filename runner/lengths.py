"""Token lengths of a stage's rows with the chat template applied, and what happens to the
rows longer than `train.max_length` (`data.<name>.overlong`: drop, truncate or error).

A row cut at max_length loses the end of its reply — the end-of-turn token included, so
the model learns not to stop — which is why the default drops such rows and says so. The
decision is recorded in the stage's `data_report` (a step `overlong` with the length
distribution) and shown by `ftlab plan` before anything trains.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ftlab.runner.data import DataError, Dataset, chat_prompt


@dataclass(frozen=True)
class Tokens:
    """What counts a stage's tokens: the model's tokenizer, or none (estimates)."""

    tokenizer: Any  # None when no tokenizer loads from `where`
    where: str  # the folder (or hub id) the tokenizer was looked for in


@dataclass(frozen=True)
class Length:
    """One row's tokens: the prompt (template markers included) and its longest reply."""

    prompt: int
    completion: int

    @property
    def total(self) -> int:
        return self.prompt + self.completion


def row_lengths(rows: list[dict[str, Any]], tokens: Tokens) -> tuple[list[Length], str]:
    """Every row's length and, when they are estimates, why: without a tokenizer,
    characters / 4; without a chat template, conversations as plain text."""
    tok = tokens.tokenizer
    if tok is None:
        note = (
            f"≈ tokens estimated as characters / 4: no tokenizer in {tokens.where} "
            "(copy the model's tokenizer files there for exact counts)"
        )
        return [_estimate(r) for r in rows], note
    templated = bool(getattr(tok, "chat_template", None))
    lengths = [_templated(tok, r) if templated else _plain(tok, r) for r in rows]
    if templated or not any("messages" in r for r in rows):
        return lengths, ""
    return lengths, (
        f"≈ the tokenizer in {tokens.where} has no chat template: messages counted as "
        "plain text (role: content), without the template's markers"
    )


def _ids(tok: Any, messages: list[dict[str, str]], *, generation: bool = False) -> int:
    ids = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return len(ids)


def _replies(row: dict[str, Any]) -> list[str]:
    return [str(row[k]) for k in ("completion", "chosen", "rejected") if k in row]


def _templated(tok: Any, row: dict[str, Any]) -> Length:
    """As the trainers see the row: a conversation through the template; a string prompt
    as a user turn (preference and unpaired rows train so), a prompt_completion row as
    plain text (SFT trains it so)."""
    if "messages" in row:
        msgs = row["messages"]
        last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        total = _ids(tok, msgs)
        prompt = min(_ids(tok, msgs[:last], generation=True), total) if last else 0
        return Length(prompt, total - prompt)
    if "completion" in row and "label" not in row:  # prompt_completion: plain text in SFT
        return _plain(tok, row)
    head = chat_prompt(row)
    prompt = _ids(tok, head, generation=True)
    longest = max(
        (_ids(tok, [*head, {"role": "assistant", "content": r}]) for r in _replies(row)),
        default=prompt,
    )
    return Length(prompt, max(longest - prompt, 0))


def _plain(tok: Any, row: dict[str, Any]) -> Length:
    if "messages" in row:
        return Length(0, len(tok(plain_text(row))["input_ids"]))
    prompt = len(tok(str(row.get("prompt", "")))["input_ids"])
    replies = [len(tok(r, add_special_tokens=False)["input_ids"]) + 1 for r in _replies(row)]
    return Length(prompt, max(replies, default=0))  # + 1: the end-of-sequence token


def _estimate(row: dict[str, Any]) -> Length:
    if "messages" in row:
        return Length(0, -(-len(plain_text(row)) // 4))
    replies = [-(-len(r) // 4) for r in _replies(row)]
    return Length(-(-len(str(row.get("prompt", ""))) // 4), max(replies, default=0))


def plain_text(row: dict[str, Any]) -> str:
    if "messages" in row:
        return "\n".join(f"{m['role']}: {m['content']}" for m in row["messages"])
    if "completion" in row:
        return str(row["prompt"]) + str(row["completion"])
    return str(row.get("prompt", "")) + str(row.get("chosen", ""))


def distribution(values: list[int]) -> dict[str, int]:
    """min, median, 95th percentile and max (nearest rank)."""
    if not values:
        return {"min": 0, "p50": 0, "p95": 0, "max": 0}
    v = sorted(values)
    at = lambda q: v[min(len(v) - 1, int(q * len(v)))]  # noqa: E731
    return {"min": v[0], "p50": at(0.5), "p95": at(0.95), "max": v[-1]}


def fit(
    ds: Dataset, *, data: str, tokens: Tokens, max_length: int, policy: str, applies: bool = True
) -> Dataset:
    """`ds` with the `overlong` policy applied to train and validation rows, and a data
    report step saying what it found and did. `applies` False (online methods, where
    max_length does not bound the rows): lengths reported, no row touched."""
    train, train_note = row_lengths(ds.train, tokens)
    val, _ = row_lengths(ds.val, tokens)
    over_train = [i for i, n in enumerate(train) if n.total > max_length]
    over_val = [i for i, n in enumerate(val) if n.total > max_length]
    n_over = len(over_train) + len(over_val) if applies else 0
    step: dict[str, Any] = {
        "step": "overlong",
        "in": len(ds.train) + len(ds.val),
        "out": len(ds.train) + len(ds.val),
        "dropped": 0,
        "reason": "",
        "rows": {"train": len(ds.train), "val": len(ds.val)},
        "max_length": max_length,
        "policy": policy if applies else "not applied",
        "over": {"train": len(over_train), "val": len(over_val)} if applies else {},
        "tokens": {
            part: distribution([getattr(n, part) for n in train + val])
            for part in ("prompt", "completion", "total")
        },
        "estimated": train_note,
    }
    if not n_over:
        return replace(ds, report=[*ds.report, step])
    longest = max(n.total for n in train + val)
    what = (
        f"data.{data}: {n_over} of {step['in']} rows ({len(over_train)} train, "
        f"{len(over_val)} validation) are longer than train.max_length {max_length} tokens "
        f"(longest {longest})"
    )
    if policy == "error":
        raise DataError(
            f"{what}. Raise train.max_length, or set data.{data}.overlong: drop (leave them "
            "out) or truncate (keep them cut at the end)"
        )
    if policy == "truncate":
        no_reply = sum(1 for n in train if n.prompt >= max_length)
        if no_reply == len(train):
            raise DataError(
                f"{what}, and every training prompt alone reaches it: cut there, no reply "
                "token is left to learn from. Raise train.max_length"
            )
        step["reason"] = "kept, cut at max_length (their replies lose the end)"
        step["no_reply"] = no_reply  # cut before the reply began: nothing to learn
        return replace(ds, report=[*ds.report, step])
    keep_train = [r for i, r in enumerate(ds.train) if i not in set(over_train)]
    keep_val = [r for i, r in enumerate(ds.val) if i not in set(over_val)]
    if not keep_train:
        raise DataError(f"{what}: no training row is left. Raise train.max_length")
    step |= {
        "out": len(keep_train) + len(keep_val),
        "rows": {"train": len(keep_train), "val": len(keep_val)},
        "dropped": n_over,
        "reason": f"longer than train.max_length {max_length} tokens",
    }
    return replace(ds, train=keep_train, val=keep_val, report=[*ds.report, step])


def describe(report: list[dict[str, Any]], *, data: str) -> tuple[str, str]:
    """(summary line, warning or '') for a data report ending in its `overlong` step."""
    step = report[-1]
    t = step["tokens"]
    approx = "≈" if step.get("estimated") else ""
    drawn = [s for s in report if s["step"].startswith("mix ")]
    mix = ", ".join(
        f"{s['step'][4:]} {s['out']}" + (f" ({s['repeated']} repeated)" if s["repeated"] else "")
        for s in drawn
    )
    line = (
        f"data {data}: {step['rows']['train']} train{f' (mix drew {mix})' if mix else ''} / "
        f"{step['rows']['val']} validation rows; "
        f"tokens{approx} prompt {t['prompt']['p50']}/"
        f"{t['prompt']['max']}, reply {t['completion']['p50']}/{t['completion']['max']}, "
        f"total {t['total']['p50']}/{t['total']['max']} (median/max), max_length "
        f"{step['max_length']}"
    )
    dropped = [
        f"{s['step']} {s['dropped']}"
        for s in report[:-1]
        if s["dropped"] > 0 and not s["step"].startswith("mix ")
    ]
    if dropped:
        line += f"; dropped before the split: {', '.join(dropped)}"
    over = sum(step["over"].values()) if step["over"] else 0
    if not over:
        return line, ""
    head = (
        f"{over} of {step['in']} rows of data {data} are longer than train.max_length "
        f"{step['max_length']}"
    )
    if step["policy"] == "truncate":
        lost = step.get("no_reply", 0)
        return line, (
            f"{head}: kept and cut at {step['max_length']} tokens (data.{data}.overlong: "
            "truncate) — their replies lose the end, end-of-turn included, so the model "
            "learns not to stop"
            + (f"; {lost} lose the whole reply" if lost else "")
            + "; `overlong: drop` leaves them out"
        )
    return line, (
        f"{head}: dropped (data.{data}.overlong: drop; `truncate` keeps them cut at the "
        "end, `error` stops the run; or raise train.max_length)"
    )


def for_stage(spec: Any, stage: Any, ds: Dataset, *, tokenizer_from: Any) -> Dataset:
    """The rows a stage trains on: `fit` with its tokenizer (the spec's chat template
    applied), its max_length and its data's `overlong`; online methods only report."""
    from ftlab.runner import models
    from ftlab.runner.methods import METHODS

    tok = models.load_tokenizer(tokenizer_from, chat_template=spec.model.chat_template)
    return fit(
        ds,
        data=stage.data,
        tokens=Tokens(tok, str(getattr(tokenizer_from, "path", tokenizer_from))),
        max_length=stage.train.max_length,
        policy=spec.data[stage.data].overlong,
        applies=not METHODS.get(stage.method).footprint(stage).generated,
    )
