"""One dataset of a spec (`data.<name>`): where it is, its row layout, how it is split
and what it is converted from."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from ftlab.runner.spec.strict import Strict

DataFormat = Literal[
    "messages", "sharegpt", "alpaca", "prompt_completion", "preference", "unpaired", "prompts"
]


Part = Literal["reply", "prompt", "all"]


class LengthFilter(Strict):
    """Keep rows whose text (`of`: the reply, the prompt or all of it) is within bounds in
    words and characters; 0 = no bound. Token bounds: `train.max_length` and `overlong`."""

    kind: Literal["length"]
    of: Part = "reply"
    min_words: int = Field(0, ge=0)
    max_words: int = Field(0, ge=0)
    min_chars: int = Field(0, ge=0)
    max_chars: int = Field(0, ge=0)


class NearDedupe(Strict):
    """Drop rows whose text is a near-duplicate of an earlier row's: MinHash over word
    n-grams (datasketch's MinHashLSH), estimated Jaccard similarity ≥ `threshold`."""

    kind: Literal["near_dedupe"]
    of: Part = "all"
    threshold: float = Field(0.8, gt=0.0, le=1.0)
    ngram: int = Field(3, ge=1, le=16)
    num_perm: int = Field(128, ge=16, le=1024)


class RegexFilter(Strict):
    """Drop the rows whose text matches `pattern` (Python `re`, searched), or with
    `action: keep` keep only those."""

    kind: Literal["regex"]
    pattern: str
    of: Part = "all"
    action: Literal["drop", "keep"] = "drop"

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"a Python regular expression ({exc})") from None
        return value


Filter = Annotated[LengthFilter | NearDedupe | RegexFilter, Field(discriminator="kind")]


class MixPart(Strict):
    """One source of a mixture: another dataset of `data:` and its weight."""

    source: str
    weight: float = Field(gt=0.0)


class DataSource(Strict):
    """One dataset: a local file, a hub dataset name, or a mixture of other datasets."""

    @model_validator(mode="after")
    def _path_or_mix(self) -> DataSource:
        if bool(self.path) == bool(self.mix):
            raise ValueError(
                "a dataset is a path (a file or hub id) or a mix: of other datasets; "
                + ("give one of them" if not self.path else "keep one of them")
            )
        if self.size and not self.mix:
            raise ValueError("size: is the row count of a mix:; use max_rows for a file")
        own = {"filters", "convert", "system_prompt", "val_fraction", "max_rows", "split"}
        if self.mix and (given := sorted(own & self.model_fields_set)):
            raise ValueError(
                "a mix: draws training rows from its sources' training splits and takes "
                f"their validation rows; set {', '.join(given)} on its sources"
            )
        sources = [p.source for p in self.mix]
        if dup := sorted({s for s in sources if sources.count(s) > 1}):
            raise ValueError(f"mix: names {', '.join(dup)} twice; give each source once")
        return self

    @model_validator(mode="after")
    def _convert_matches_format(self) -> DataSource:
        need = {
            "ratings_to_pairs": "preference",
            "pairs_to_unpaired": "unpaired",
            "pairs_to_judge": "messages",
        }
        if self.convert in need and self.format != need[self.convert]:
            raise ValueError(
                f"convert: {self.convert} produces format "
                f"{need[self.convert]}; set format: {need[self.convert]}"
            )
        if self.rubric and self.convert != "pairs_to_judge":
            raise ValueError(
                "rubric: is the rubric convert: pairs_to_judge puts in the judge prompts; "
                "add convert: pairs_to_judge or drop rubric"
            )
        if self.convert == "pairs_to_judge" and not self.rubric:
            self.rubric = "general"  # the judge eval's default: trained as it is asked
        if self.system_prompt and self.format == "prompt_completion":
            raise ValueError(
                "system_prompt needs chat turns, and prompt_completion rows train as plain "
                "text; use format: messages (or alpaca), or drop system_prompt"
            )
        return self

    path: str = ""
    """A .jsonl/.json/.csv/.parquet file (relative to the spec file) or a hub dataset id."""
    mix: list[MixPart] = Field([], max_length=32)
    """A mixture instead of a file: other datasets of `data:` (same format) with weights,
    e.g. [{source: chat, weight: 0.7}, {source: code, weight: 0.3}]. Training rows are
    sampled from each source's training split with the seed in those proportions; the
    validation rows are every source's validation split. Weights are search-space paths
    (`data.<name>.mix.0.weight`)."""
    size: int = Field(0, ge=0)
    """mix: training rows to draw; 0 = as many as the sources give without repeating a row
    (a larger size repeats rows of the sources that run short, and says so)."""
    filters: list[Filter] = Field([], max_length=32)
    """Quality filters, in order, after conversion and exact deduplication and before the
    split: {kind: length, …}, {kind: near_dedupe, …}, {kind: regex, …}; each step's
    dropped rows are in the data report."""
    format: DataFormat = "messages"
    """Row layout: messages, sharegpt, alpaca, prompt_completion, preference, unpaired,
    prompts (a `prompt` plus any columns: online RL, judged replies, and with `reference`
    the reference-answer evals)."""
    split: str = "train"
    """Split to read when `path` is a hub dataset."""
    system_prompt: str = ""
    """A system message put first in every conversation (and prompt) that has none."""
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    """Fraction of rows held out for validation, drawn reproducibly from the seed."""
    max_rows: int = Field(0, ge=0)
    """Use at most this many rows (after shuffling with the seed); 0 = all rows."""
    overlong: Literal["drop", "truncate", "error"] = "drop"
    """Rows longer than the stage's `train.max_length` (tokens, chat template applied):
    drop them (said in the data report and by `ftlab plan`), truncate (keep them cut at
    the end: their replies lose the end-of-turn token, so the model learns not to stop),
    or error (stop before training)."""
    convert: Literal["none", "ratings_to_pairs", "pairs_to_unpaired", "pairs_to_judge"] = "none"
    """Turn raw feedback into the declared format first: ratings/rankings of several
    responses per prompt → preference pairs, preference pairs → unpaired (KTO), or
    preference pairs → judge conversations (the judge eval's prompt with the rubric, the
    question, reply A and reply B, in both orders; the verdict is the target), split as the
    pairs are (a judge never trains on the held-out pairs it is calibrated on)."""
    rubric: str = ""
    """pairs_to_judge: the rubric (`rubrics/<name>.yaml` next to the spec, a path, or the
    built-in `general`, the judge eval's default too)."""
    pairs: Literal["all", "best_vs_worst"] = "all"
    """ratings_to_pairs: every pair of differently rated responses, or best vs worst only."""
    min_margin: float = Field(0.0, ge=0)
    """ratings_to_pairs: keep a pair only when the ratings differ by more than this."""
