"""Spec problems: collected during loading and reported together."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# keys whose values are secrets (a key ending in _env names a variable: not a secret)
SECRET_KEY = re.compile(
    r"(?:^|[_-])(api[_-]?key|token|secret|password|passwd|credentials?|auth)(?:$|[_-])", re.I
)  # a whole word of a snake_case key: hf_token, api_key (not max_new_tokens)
# values that are secrets wherever they are typed: provider key prefixes, user:pass@ in URLs
SECRET_VALUE = re.compile(
    r"^\s*(sk|pk|rk|hf|ghp|gho|ghs|glpat|xox[abprs])[-_][A-Za-z0-9_-]{8,}|^\s*Bearer\s|"
    r"://[^/\s@]*:[^/\s@]*@",
    re.I,
)


def secret(path: str | tuple[Any, ...], value: Any) -> bool:
    """Whether `value` (at dotted `path`) looks like a secret that must never be echoed."""
    parts = path.split(".") if isinstance(path, str) else [str(p) for p in path]
    if any(SECRET_KEY.search(p) and not p.endswith("_env") for p in parts):
        return True
    return isinstance(value, str) and bool(SECRET_VALUE.search(value))


HIDDEN = "(a value that looks like a secret: not shown)"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec, with everything a user needs to fix it."""

    file: str
    line: int
    path: str
    expected: str
    found: str
    hint: str = ""
    context: str = ""  # e.g. "variant 'qlora'"

    def format(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else (self.file or "<spec>")
        ctx = f" [{self.context}]" if self.context else ""
        key = self.path or "(top level)"
        text = f"{where}: {key}{ctx}\n    expected: {self.expected}\n    found:    {self.found}"
        if self.hint:
            text += f"\n    fix:      {self.hint}"
        return text


class SpecError(Exception):
    """A spec that cannot be run; `problems` lists every reason at once."""

    exit_code = 2

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__(self.format())

    def format(self) -> str:
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''} in the spec:"
        return "\n".join([head, *(p.format() for p in self.problems)])
