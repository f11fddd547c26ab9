"""`preference`: does the model prefer the chosen response of held-out preference pairs?

For each pair: log p(chosen | prompt) − log p(rejected | prompt) under the model, summed
over response tokens. `accuracy` is the share of pairs where that margin is positive;
`accuracy_per_token` compares mean per-token log-probs instead (no length advantage for
short responses). Run it `on: [sft, last]` to see what alignment changed.
"""

from __future__ import annotations

from pydantic import BaseModel

from ftlab.evals.base import EVALS, EvalInput, EvalKind, EvalOutput, Metric, item_id
from ftlab.evals.scoring import ScoringParams, prompt_response, response_logprobs
from ftlab.reports.stats import bootstrap_mean, wilson

PreferenceParams = ScoringParams


@EVALS.register("preference")
class PreferenceEval(EvalKind):
    item_scores = {"accuracy": "correct", "accuracy_per_token": "correct_per_token"}
    data_formats: tuple[str, ...] = ("preference",)
    params_model: type[BaseModel] = PreferenceParams
    headline: str = "accuracy"
    in_loop: bool = True  # cheap enough to measure at every evaluation during training
    higher_is_better: bool = True

    def run(self, inp: EvalInput) -> EvalOutput:
        p = inp.params
        texts = []
        for row in inp.rows:
            texts.append(prompt_response(inp.tokenizer, row, row["chosen"]))
            texts.append(prompt_response(inp.tokenizer, row, row["rejected"]))
        scores = response_logprobs(
            inp.model,
            inp.tokenizer,
            texts,
            batch_size=p.batch_size,
            max_length=p.max_length,
            desc=f"preference ({inp.target})",
            quiet=inp.quiet,
        )
        samples = []
        for k, row in enumerate(inp.rows):
            (lc, nc), (lr, nr) = scores[2 * k], scores[2 * k + 1]
            margin = lc - lr
            per_token = lc / max(nc, 1) - lr / max(nr, 1)
            samples.append(
                {
                    "item": item_id(row),
                    "prompt": row["prompt"],
                    "chosen": row["chosen"],
                    "rejected": row["rejected"],
                    "scores": {
                        "correct": float(margin > 0),
                        "correct_per_token": float(per_token > 0),
                        "margin": margin,
                        "logp_chosen": lc,
                        "logp_rejected": lr,
                    },
                }
            )
        n = len(samples)
        wins = sum(int(s["scores"]["correct"]) for s in samples)
        wins_tok = sum(int(s["scores"]["correct_per_token"]) for s in samples)
        margins = [s["scores"]["margin"] for s in samples]
        return EvalOutput(
            metrics={
                "accuracy": Metric(wins / n, *wilson(wins, n), n=n),
                "accuracy_per_token": Metric(wins_tok / n, *wilson(wins_tok, n), n=n),
                "margin": Metric(sum(margins) / n, *bootstrap_mean(margins, seed=inp.seed), n=n),
            },
            samples=samples,
        )


PREFERENCE = PreferenceEval()
