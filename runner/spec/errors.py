"""Spec problems: collected during loading and reported together."""

from __future__ import annotations

from dataclasses import dataclass


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
