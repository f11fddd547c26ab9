"""ftlab.evals: eval kinds. Each kind registers itself in its own module
(`@EVALS.register("name")`, see `base.EvalKind`); the lazy placeholders below only let
`ftlab --help` and `ftlab validate` list the shipped kinds without importing torch — the
module's decorator replaces its placeholder when the module is imported."""

from ftlab.evals.base import EVALS

for _name, _where in (
    ("preference", "preference:PreferenceEval"),
    ("perplexity", "perplexity:PerplexityEval"),
    ("lm_eval", "harness:HarnessEval"),
    ("judge", "judge:JudgeEval"),
    ("format", "checks:FormatEval"),
    ("contamination", "checks:ContaminationEval"),
    ("exact_match", "reference:ExactMatchEval"),
    ("json_match", "reference:JsonMatchEval"),
    ("rouge", "reference:RougeEval"),
    ("chrf", "reference:ChrfEval"),
):
    EVALS.register(_name, f"ftlab.evals.{_where}")
