"""Preference data as it really arrives: ratings or rankings of several responses per
prompt, duplicates, ties. Turns it into clean pairs (or unpaired feedback for KTO) and
reports how many rows each step dropped and why.

Input rows for `convert: ratings_to_pairs`:
  {"prompt": "...", "responses": [{"text": "...", "rating": 4}, ...]}   (score/response too)
  {"prompt": "...", "ranking": ["best reply", "second", ..., "worst"]}
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any, Literal


class PrefDataError(ValueError):
    """A row that cannot be converted; the message names it."""


@dataclass
class Report:
    """What each step kept and dropped, in order."""

    steps: list[dict[str, Any]] = field(default_factory=list)

    def add(self, step: str, before: int, after: int, reason: str) -> None:
        self.steps.append(
            {"step": step, "in": before, "out": after, "dropped": before - after, "reason": reason}
        )

    def lines(self) -> list[str]:
        return [
            f"{s['step']}: {s['in']} → {s['out']} rows ({s['dropped']} dropped: {s['reason']})"
            for s in self.steps
        ]


def _scored(row: dict[str, Any], where: str) -> list[tuple[str, float]]:
    if isinstance(row.get("ranking"), list):
        ranked = row["ranking"]
        if not all(isinstance(r, str) for r in ranked):
            raise PrefDataError(f"{where}: 'ranking' must be a list of response texts")
        n = len(ranked)
        return [(text, float(n - i)) for i, text in enumerate(ranked)]  # best first
    responses = row.get("responses")
    if not isinstance(responses, list):
        raise PrefDataError(
            f"{where}: expected 'responses' (a list of {{text, rating}}) or "
            f"'ranking' (texts, best first); keys: {sorted(row)}"
        )
    out = []
    for i, r in enumerate(responses):
        text = r.get("text", r.get("response")) if isinstance(r, dict) else None
        score = r.get("rating", r.get("score")) if isinstance(r, dict) else None
        if not isinstance(text, str) or not isinstance(score, int | float):
            raise PrefDataError(
                f"{where}: response {i} needs a string 'text' and a numeric 'rating'"
            )
        out.append((text, float(score)))
    return out


def ratings_to_pairs(
    rows: list[tuple[str, dict[str, Any]]],
    *,
    pairs: Literal["all", "best_vs_worst"] = "all",
    min_margin: float = 0.0,
    report: Report,
) -> list[tuple[str, dict[str, Any]]]:
    """Ratings/rankings → {prompt, chosen, rejected}: every pair whose ratings differ by
    more than `min_margin` (`all`), or only the best against the worst."""
    out = []
    candidates = 0
    for where, row in rows:
        prompt = row.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise PrefDataError(f"{where}: needs a non-empty string 'prompt'")
        scored = sorted(_scored(row, where), key=lambda x: -x[1])
        if pairs == "best_vs_worst":
            combos = [(scored[0], scored[-1])] if len(scored) >= 2 else []
        else:
            combos = list(itertools.combinations(scored, 2))
        candidates += len(combos)
        for (good, g), (bad, b) in combos:
            if g - b > min_margin:
                out.append((where, {"prompt": prompt, "chosen": good, "rejected": bad}))
    report.add(
        "ratings_to_pairs", candidates, len(out), f"rating margin ≤ {min_margin:g} (ties included)"
    )
    return out


def drop_identical(
    rows: list[tuple[str, dict[str, Any]]], report: Report
) -> list[tuple[str, dict[str, Any]]]:
    """Pairs whose chosen and rejected texts are the same teach nothing."""
    out = [(w, r) for w, r in rows if r["chosen"].strip() != r["rejected"].strip()]
    report.add("drop_chosen_equals_rejected", len(rows), len(out), "chosen == rejected")
    return out


def dedupe(
    rows: list[tuple[str, dict[str, Any]]], report: Report
) -> list[tuple[str, dict[str, Any]]]:
    """Identical rows (same prompt and responses) kept once."""
    seen: set[str] = set()
    out = []
    for where, row in rows:
        key = json.dumps(row, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append((where, row))
    report.add("dedupe", len(rows), len(out), "exact duplicates")
    return out


def pairs_to_unpaired(
    rows: list[tuple[str, dict[str, Any]]], report: Report
) -> list[tuple[str, dict[str, Any]]]:
    """Each pair → a desirable (chosen) and an undesirable (rejected) example for KTO;
    the same response under the same prompt is kept once."""
    out = []
    for where, row in rows:
        out.append((where, {"prompt": row["prompt"], "completion": row["chosen"], "label": True}))
        out.append(
            (where, {"prompt": row["prompt"], "completion": row["rejected"], "label": False})
        )
    before = len(out)
    seen: set[tuple[str, str]] = set()
    unique = []
    for where, row in out:
        key = (row["prompt"], row["completion"])
        if key not in seen:
            seen.add(key)
            unique.append((where, row))
    report.add(
        "pairs_to_unpaired", before, len(unique), "a response already used for the same prompt"
    )
    return unique


def group_key(row: dict[str, Any]) -> str:
    """What must not be split between train and validation: the prompt (or, for chats,
    everything but the assistant turns)."""
    if "messages" in row:
        return json.dumps([m for m in row["messages"] if m["role"] != "assistant"])
    return str(row.get("prompt", json.dumps(row, sort_keys=True)))
