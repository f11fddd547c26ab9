"""One dataset of a spec (`data.<name>`): where it is, its row layout, how it is split
and what it is converted from."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ftlab.runner.spec.strict import Strict

DataFormat = Literal[
    "messages", "sharegpt", "alpaca", "prompt_completion", "preference", "unpaired", "prompts"
]


class DataSource(Strict):
    """One dataset: a local file or a hub dataset name."""

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

    path: str
    """A .jsonl/.json/.csv/.parquet file (relative to the spec file) or a hub dataset id."""
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
