"""`perplexity`: loss and perplexity of the reference responses of a held-out set.

Scores the last assistant turn (`messages` formats) or the completion (`prompt_completion`)
given everything before it, formatted as in training. `loss` is the token-weighted mean
negative log-likelihood; its interval is a bootstrap over items (ratio of sums).
"""

from __future__ import annotations

import math

from pydantic import BaseModel

from ftlab.evals.base import EVALS, EvalInput, EvalKind, EvalOutput, Metric, item_id
from ftlab.evals.scoring import ScoringParams, prompt_response, response_logprobs

PerplexityParams = ScoringParams


@EVALS.register("perplexity")
class PerplexityEval(EvalKind):
    data_formats: tuple[str, ...] = ("messages", "sharegpt", "alpaca", "prompt_completion")
    params_model: type[BaseModel] = PerplexityParams
    headline: str = "loss"
    in_loop: bool = True  # cheap enough to measure at every evaluation during training
    higher_is_better: bool = False

    def run(self, inp: EvalInput) -> EvalOutput:
        import numpy as np

        p = inp.params
        texts = [prompt_response(inp.tokenizer, row) for row in inp.rows]
        scores = response_logprobs(
            inp.model,
            inp.tokenizer,
            texts,
            batch_size=p.batch_size,
            max_length=p.max_length,
            desc=f"perplexity ({inp.target})",
            quiet=inp.quiet,
        )
        nll = np.array([-s for s, _ in scores])
        tokens = np.array([max(n, 1) for _, n in scores])
        loss = float(nll.sum() / tokens.sum())
        rng = np.random.default_rng(inp.seed)
        picks = rng.integers(0, len(nll), size=(2000, len(nll)))
        boot = nll[picks].sum(axis=1) / tokens[picks].sum(axis=1)
        lo, hi = (float(v) for v in np.quantile(boot, [0.025, 0.975]))
        samples = [
            {
                "item": item_id(row),
                "response": response,
                "scores": {"loss": float(n_ll / t), "tokens": float(t)},
            }
            for row, (_, response), n_ll, t in zip(inp.rows, texts, nll, tokens, strict=True)
        ]
        n = len(samples)
        return EvalOutput(
            metrics={
                "loss": Metric(loss, lo, hi, n=n),
                "perplexity": Metric(math.exp(loss), math.exp(lo), math.exp(hi), n=n),
            },
            samples=samples,
        )


PERPLEXITY = PerplexityEval()
