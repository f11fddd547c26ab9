"""What the judge is asked and how its answers are read: the prompt templates, the rubric
file, and the strict verdict parser (one line, no guessing)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ftlab.evals.backends import BackendError
from ftlab.evals.base import EvalError

TEMPLATE_VERSION = 2  # part of the cache key: bump when a template below changes

PAIRWISE = """You are an impartial judge comparing two replies to the same customer message.
{rubric}

Customer message:
{prompt}

Reply A:
{a}

Reply B:
{b}

Which reply meets the criteria better? Answer with exactly one line and nothing else:
Verdict: A
Verdict: B
Verdict: tie"""

SINGLE = """You are an impartial judge scoring a reply to a customer message.
{rubric}

Customer message:
{prompt}

Reply:
{a}
{reference}
Score the reply from 1 to 10. Answer with exactly one line and nothing else:
Score: <1-10>"""

REMINDER = {
    "pairwise": "Your answer did not follow the format. Reply with exactly one line: "
    "Verdict: A, Verdict: B or Verdict: tie.",
    "single": "Your answer did not follow the format. Reply with exactly one line: "
    "Score: followed by a whole number from 1 to 10.",
}
VERDICT = re.compile(r"^\s*verdict:\s*(a|b|tie)\s*\.?\s*$", re.IGNORECASE | re.MULTILINE)
SCORE = re.compile(r"^\s*score:\s*(10|[1-9])\s*(/\s*10)?\s*\.?\s*$", re.IGNORECASE | re.MULTILINE)


BUILTIN_RUBRICS = Path(__file__).resolve().parent / "rubrics"
DEFAULT_RUBRIC = "general"


def rubric_text(name: str, base_dir: Path) -> str:
    """The rubric as text for the judge prompt, from `rubrics/<name>.yaml` or a path."""
    from ruamel.yaml import YAML

    path = Path(name)
    candidates = [base_dir / path, base_dir / "rubrics" / f"{name}.yaml", path]
    candidates.append(BUILTIN_RUBRICS / f"{name}.yaml")  # a spec's own rubric wins
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        builtin = ", ".join(sorted(p.stem for p in BUILTIN_RUBRICS.glob("*.yaml")))
        raise EvalError(
            f"no rubric '{name}': looked for {', '.join(str(c) for c in candidates[:2])} "
            f"(built in: {builtin}); write one (see experiments/rubrics/support_reply.yaml)"
        )
    try:
        data = YAML(typ="safe", pure=True).load(found.read_text())
    except Exception as exc:  # noqa: BLE001 - any YAML error: name the file and the line
        mark = getattr(exc, "problem_mark", None)
        where = f"{found}:{mark.line + 1}" if mark is not None else str(found)
        raise EvalError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    criteria = data.get("criteria") if isinstance(data, dict) else None
    if not isinstance(criteria, list) or not criteria:
        raise EvalError(
            f"{found}: a rubric needs a non-empty criteria: list (and description, scale); "
            "see experiments/rubrics/support_reply.yaml"
        )
    lines = [f"Context: {data.get('description', '')}", "Criteria:"]
    lines += [f"- {_criterion(c)}" for c in data["criteria"]]
    if data.get("scale"):
        lines.append(f"Scale: {data['scale']}")
    return "\n".join(lines)


def _criterion(item: object) -> str:
    """`- name: what it means` (YAML reads that line as a mapping) as the same line."""
    if isinstance(item, dict) and len(item) == 1:
        ((name, text),) = item.items()
        return f"{name}: {text}"
    return item if isinstance(item, str) else json.dumps(item)


def judge_conversations(pairs: list[dict[str, Any]], rubric: str) -> list[dict[str, Any]]:
    """Preference pairs as judge training conversations: the pairwise prompt (exactly as
    the judge eval asks it) with the chosen reply as A, then as B; the verdict answers."""
    out = []
    for pair in pairs:
        prompt = pair["prompt"]
        if isinstance(prompt, list):  # chat turns: the last user message is the question
            prompt = next(m["content"] for m in reversed(prompt) if m["role"] == "user")
        for first, second, verdict in (
            (pair["chosen"], pair["rejected"], "A"),
            (pair["rejected"], pair["chosen"], "B"),
        ):
            text = PAIRWISE.format(rubric=rubric, prompt=prompt, a=first, b=second)
            out.append(
                {
                    "messages": [
                        {"role": "user", "content": text},
                        {"role": "assistant", "content": f"Verdict: {verdict}"},
                    ]
                }
            )
    return out


def _parse(answer: str | BackendError, pattern: re.Pattern[str]) -> str:
    if isinstance(answer, BackendError):
        return "error"
    found = pattern.findall(answer)
    values = {(f[0] if isinstance(f, tuple) else f).lower() for f in found}
    if len(values) != 1:  # none, or contradictory lines: never guess
        return "unparsable"
    value = values.pop()
    return {"a": "A", "b": "B"}.get(value, value)
