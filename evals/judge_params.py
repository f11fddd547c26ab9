"""The `judge` eval's params: which judge (a model, an endpoint or a stage's trained
judge), how verdicts are read, calibration, and how the judged replies are generated."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ftlab.evals.generate import GenerationParams


class JudgeStage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: str
    """A stage of this spec that trains the judge (e.g. any SFT method on data with
    `convert: pairs_to_judge`); it must come before the last stage."""


class JudgeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["pairwise", "single", "reference"] = "pairwise"
    """pairwise: against another model or the references; single: 1–10 rubric score;
    reference: 1–10 grade against the data's reference reply."""
    against: str = "base"
    """pairwise: `base`, a stage name, or `reference` (the data's reference replies)."""
    backend: Literal["local", "openai"] = "local"
    """local: a transformers model (hub id, local dir or `tiny`); openai: any
    OpenAI-compatible endpoint (vLLM, TGI, a hosted API) at base_url."""
    judge_model: str | JudgeStage = "tiny"
    """The judge: a model name or folder (local), the endpoint's model name, or
    `{stage: <name>}`, a judge this spec trains (local)."""
    base_url: str = ""
    """openai backend: e.g. http://127.0.0.1:8000/v1."""
    api_key_env: str = ""
    """openai backend: name of the environment variable holding the API key (the key itself
    is read at call time and never stored)."""
    rubric: str = "general"
    """A rubric name (`rubrics/<name>.yaml` next to the spec, or one built in: `general`,
    MT-Bench's criteria) or a path to a rubric file."""
    swap: bool = True
    """pairwise: judge both orders (A/B and B/A); a flipped verdict counts as a tie."""
    verdicts: Literal["text", "logprob"] = "text"
    """text: parse the judge's answer; logprob: compare P(A) and P(B) (local judges)."""
    calibration: str = ""
    """A preference dataset: the judge's agreement with its held-out pairs is measured."""
    calibration_limit: int = Field(50, ge=1)
    """At most this many calibration pairs."""
    concurrency: int = Field(4, ge=1)
    """openai backend: requests in flight."""
    timeout_s: float = Field(60.0, gt=0)
    """openai backend: seconds per request."""
    max_retries: int = Field(3, ge=0)
    """openai backend: retries on 429/5xx/timeout/malformed replies (with backoff)."""
    backoff_s: float = Field(1.0, ge=0)
    """openai backend: first retry wait; doubles each retry (Retry-After wins)."""
    max_judge_tokens: int = Field(32, ge=1)
    """Longest judge answer."""
    generation: GenerationParams = GenerationParams()
    """How the judged model writes its replies."""

    @field_validator("base_url")
    @classmethod
    def _no_credentials(cls, value: str) -> str:
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(value)
            has_credentials = bool(parts.username or parts.password)
        except ValueError:
            has_credentials = "@" in value.split("//", 1)[-1].split("/", 1)[0]
        if has_credentials:
            raise ValueError(
                "a URL without credentials (user:key@ would be written to the run's files): "
                "put the key in an environment variable and name it in api_key_env"
            )
        return value

    @field_validator("api_key_env")
    @classmethod
    def _a_variable_name(cls, value: str) -> str:
        if value and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError(
                "the NAME of an environment variable (letters, digits, _), e.g. "
                "OPENAI_API_KEY — not the key itself"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> JudgeParams:
        if self.backend == "openai" and not self.base_url:
            raise ValueError("the openai backend needs base_url (e.g. http://127.0.0.1:8000/v1)")
        if isinstance(self.judge_model, JudgeStage) and self.backend != "local":
            raise ValueError(
                "a judge trained by a stage (judge_model: {stage: …}) runs locally: drop "
                "backend: openai, or name the endpoint's model in judge_model"
            )
        if self.verdicts == "logprob" and self.backend != "local":
            raise ValueError("verdicts: logprob needs a local judge (backend: local)")
        if self.verdicts == "logprob" and self.mode != "pairwise":
            raise ValueError("verdicts: logprob compares A and B: use it with mode: pairwise")
        return self
