"""ftlab.evals: eval kinds (lm-eval, judges, perplexity, …) — arrive with the evals issue."""
