"""The spec's run-wide settings: the search space of `ftlab sweep`, tracking, output.
Part of the schema (`schema.Spec` holds them); each field's docstring is its
documentation, as there."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from ftlab.runner.spec.strict import Strict

__all__ = ["MlflowSpec", "Objective", "OutputSpec", "SearchSpec", "TrackingSpec", "WandbSpec"]


class Objective(Strict):
    """What a sweep optimises: a stored metric of each trial's run."""

    metric: str = "eval_loss"
    """`eval_loss` / `train_loss` (the last stage's), `<eval>.<metric>` (an eval's metric on
    the final model, e.g. `perplexity.loss`, `judge_vs_base.win_rate`),
    `stage.<stage>.<summary key>` (e.g. `stage.rm.pairwise_accuracy`), or a cost:
    `wall_time_s`, `peak_memory_mb`."""
    direction: Literal["minimize", "maximize"] = "minimize"
    """minimize or maximize."""


class SearchSpec(Strict):
    """Hyperparameter search for `ftlab sweep`: each trial is one run of this spec with
    sampled values."""

    n_trials: int = Field(20, ge=1)
    """Number of trials (finished, pruned and failed ones all count)."""
    sampler: Literal["tpe", "random", "grid", "cmaes", "nsga2"] = "tpe"
    """Optuna sampler (nsga2 for several objectives)."""
    pruner: Literal["median", "hyperband", "successive_halving", "none"] = "median"
    """Optuna pruner (single objective only), fed at every evaluation of the stage the
    objective is measured on: the objective itself for `preference`/`perplexity` evals,
    else that stage's eval loss."""
    pruner_params: dict[str, Any] = {}
    """Keyword arguments of the Optuna pruner, passed as written: `min_resource`,
    `reduction_factor` (hyperband, successive_halving; min_resource defaults to the
    watched stage's first evaluation step), `n_warmup_steps`, `n_startup_trials`
    (median; defaults 0 and 2). A warm-up of about half the watched stage's steps keeps
    the pruner off settings that learn slowly at first and finish best (a low DPO beta,
    a low learning rate: the short-horizon bias of early stopping)."""
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    """Sampler seed (default: the spec's seed)."""
    startup_trials: int | None = Field(None, ge=0)
    """Random trials before tpe/cmaes start modelling the space (default: Optuna's 10 for
    tpe, 1 for cmaes); a short study wants fewer, or it is mostly random search."""
    objectives: list[Objective] = Field(default_factory=lambda: [Objective()], min_length=1)
    """One objective, or several (a multi-objective study: no pruning)."""
    space: dict[str, Any] = {}
    """Dotted spec path → `{low, high, log, step}` (ints when low/high are ints), a list of
    choices (or `{choices: [...]}`), or a fixed value (`{value: …}` for a list). Add
    `when: {other.path: value or [values]}` to sample a parameter only under a condition."""
    storage: str = ""
    """Optuna storage: empty = SQLite `<output.dir>/sweeps.db`; a URL
    (`postgresql://user@host/db`, `sqlite:///path`) or `journal:<file>` for many workers."""
    study: str = ""
    """Study name (default: the experiment's name)."""


class WandbSpec(Strict):
    """Weights & Biases logging."""

    project: str = "ftlab"
    """W&B project."""
    mode: Literal["auto", "online", "offline", "disabled"] = "disabled"
    """`auto` = online when a key is configured and the server answers, else offline."""


class MlflowSpec(Strict):
    """MLflow logging, for teams that self-host (needs `pip install 'ftlab[mlflow]'`)."""

    uri: str = ""
    """Tracking URI: `http://host:5000` (a `mlflow server`), `sqlite:///path/mlflow.db`;
    empty = `sqlite:///<output.dir>/mlflow.db` (`mlflow ui --backend-store-uri` it). A
    user and password go in MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, never
    here."""
    experiment: str = ""
    """MLflow experiment (default: the ftlab experiment, or the sweep's study)."""

    @field_validator("uri")
    @classmethod
    def _a_uri(cls, value: str) -> str:
        if value and "://" not in value and not value.startswith("databricks"):
            raise ValueError(
                "a tracking URI: sqlite:///path/mlflow.db, http://host:5000, "
                f"postgresql://… (for a local file write sqlite:///{value})"
            )
        return value


class TrackingSpec(Strict):
    """Experiment tracking: each tracker gets the run live, while it trains."""

    wandb: WandbSpec = WandbSpec()
    """Weights & Biases settings."""
    mlflow: MlflowSpec | None = None
    """MLflow settings (`mlflow: {}` logs to the default local store); none = off."""


class OutputSpec(Strict):
    """Where results go."""

    dir: str = "runs"
    """Runs directory (relative to the working directory). Holds one folder per run,
    the stage cache and the DuckDB index `ftlab.duckdb`."""
    keep_checkpoints: bool = False
    """Keep intermediate trainer checkpoints after a stage finishes."""
    reuse: bool = True
    """Read ftlab's cache (`<dir>/cache/`): finished stages with the same inputs, eval
    results, generated replies, judge calls, DPO reference log-probs, pruned-stage
    records (`false`: train and compute everything afresh). `ftlab cache ls | clear`."""
