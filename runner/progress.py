"""One progress display for a whole `ftlab run`/`sweep`/`eval`: run N/M → stage N/M →
steps with ETA, evals by name — ftlab's own bars only (library bars are off: tqdm's
`TQDM_DISABLE`, which ftlab's bars override explicitly).

Modes (`FTLAB_PROGRESS`, inherited by worker processes):
  live   a terminal: one tqdm bar at a time, redrawn in place
  plain  output to a file or pipe (CI logs): a line per milestone and a step line at each
         quarter of a long enough stage, never a carriage return
  quiet  `--quiet`: no progress; warnings, errors and the final summary only
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from typing import Any

_where: dict[str, str] = {"run": "", "stage": ""}
PLAIN_AFTER_S = 5.0  # plain mode: quarter lines only for work that has taken this long


def setup(quiet: bool = False) -> str:
    """Pick the mode for this process and its children; library bars off."""
    mode = "quiet" if quiet else os.environ.get("FTLAB_PROGRESS", "")
    if mode not in ("live", "plain", "quiet"):
        mode = "live" if sys.stderr.isatty() else "plain"
    os.environ["FTLAB_PROGRESS"] = mode
    os.environ["TQDM_DISABLE"] = "1"  # lm-eval's, datasets', transformers' bars
    return mode


def mode() -> str:
    return os.environ.get("FTLAB_PROGRESS") or ("live" if sys.stderr.isatty() else "plain")


def at(*, run: str | None = None, stage: str | None = None) -> None:
    """Where the display is: `run` "run 2/3 lora" or "trial 4 of 30", `stage` "stage 1/2
    sft (lora)" or "eval judge (sft)"."""
    if run is not None:
        _where["run"], _where["stage"] = run, ""
    if stage is not None:
        _where["stage"] = stage


def prefix() -> str:
    parts = [_where["run"], _where["stage"]]
    return " · ".join(p for p in parts if p)


def note(text: str) -> None:
    """A milestone line (not in quiet mode)."""
    if mode() != "quiet":
        print(text, flush=True)


def _clock(seconds: float) -> str:
    s = int(max(seconds, 0))
    return (
        f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


class Bar:
    """A progress bar: tqdm in a terminal, quarter lines in a log, nothing when quiet."""

    def __init__(
        self, total: int, what: str, *, initial: int = 0, unit: str = "step", quiet: bool = False
    ) -> None:
        self.total, self.n, self.what, self.unit = max(total, 0), initial, what, unit
        self.mode = "quiet" if quiet else mode()  # quiet: another rank's, or asked so
        self.started = time.monotonic()
        self.start_n = initial
        self.postfix = ""
        self.next_quarter = 1
        self._tqdm: Any = None
        if self.mode == "live":
            from tqdm.auto import tqdm

            size = shutil.get_terminal_size((0, 0))  # 0 × 0: a terminal that has no size,
            cols = size.columns  # where tqdm would draw nothing (`script`'s terminal)
            self._tqdm = tqdm(
                total=self.total,
                ncols=None if cols >= 40 else 100,
                nrows=None if size.lines > 0 else 24,
                initial=initial,
                desc=self.label(),
                disable=False,  # TQDM_DISABLE silences the libraries, not ftlab
                dynamic_ncols=cols >= 40,
                leave=False,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                "[{elapsed}, ETA {remaining}{postfix}]",
            )

    def label(self) -> str:
        return " · ".join(p for p in (prefix(), self.what) if p)

    def eta(self) -> str:
        done = self.n - self.start_n
        if done <= 0 or not self.total:
            return "?"
        rate = (time.monotonic() - self.started) / done
        return _clock(rate * (self.total - self.n))

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._tqdm is not None:
            self._tqdm.update(n)
        elif self.mode == "plain" and self.total:
            crossed = False
            while self.next_quarter <= 4 and self.n >= self.total * self.next_quarter / 4:
                self.next_quarter += 1
                crossed = True
            if crossed and time.monotonic() - self.started >= PLAIN_AFTER_S:  # quick: no lines
                self._line()

    def set_postfix(self, values: dict[str, str]) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())
        if self._tqdm is not None:
            self._tqdm.set_postfix(values, refresh=False)

    def _line(self) -> None:
        elapsed = _clock(time.monotonic() - self.started)
        tail = f" · ETA {self.eta()}" if self.n < self.total else ""
        extra = f" · {self.postfix}" if self.postfix else ""
        print(
            f"{self.label()}: {self.unit} {self.n}/{self.total}{extra} · {elapsed}{tail}",
            flush=True,
        )

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None
