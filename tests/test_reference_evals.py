"""Reference-answer eval kinds on hand-made items whose scores are known."""

from __future__ import annotations

import json

import pytest

from ftlab.evals.base import EVALS, EvalError, EvalInput


def _run(kind: str, refs: list[str], replies: list[str], **params):
    eval_kind = EVALS.get(kind)
    rows = [{"prompt": f"q{i}", "reference": r} for i, r in enumerate(refs)]
    inp = EvalInput(
        model=None,
        tokenizer=None,
        rows=rows,
        params=eval_kind.params_model(**params),
        responses=replies,
    )
    return eval_kind.run(inp)


def test_exact_match_with_and_without_normalisation() -> None:
    refs = ["Paris", "The Eiffel Tower.", "42"]
    replies = [" Paris\n", "eiffel tower", "41"]
    plain = _run("exact_match", refs, replies)
    assert [s["scores"]["match"] for s in plain.samples] == [1.0, 0.0, 0.0]
    assert plain.metrics["exact_match"].value == pytest.approx(1 / 3)
    lo, hi = plain.metrics["exact_match"].low, plain.metrics["exact_match"].high
    assert lo is not None and hi is not None and lo < 1 / 3 < hi
    squad = _run(
        "exact_match", refs, replies, normalise=["lower", "punctuation", "articles", "whitespace"]
    )
    assert [s["scores"]["match"] for s in squad.samples] == [1.0, 1.0, 0.0]


def test_json_match_field_accuracy_against_reference_objects() -> None:
    refs = [
        json.dumps({"intent": "refund", "order": "#123", "urgent": True}),
        json.dumps({"intent": "shipping", "order": "#456", "urgent": False}),
        json.dumps({"intent": "login", "order": None, "urgent": False}),
        json.dumps({"intent": "billing", "customer": {"name": "Ada"}, "urgent": True}),
    ]
    replies = [
        '```json\n{"intent": "refund", "order": "#123", "urgent": true}\n```',  # 3/3, fenced
        '{"intent": "shipping", "order": "#999", "urgent": false, "extra": 1}',  # 2/3
        "the intent is login",  # not JSON: 0/3
        '{"intent": "billing", "customer": {"name": "Bob"}, "urgent": true}',  # 2/3
    ]
    out = _run("json_match", refs, replies)
    scores = [s["scores"] for s in out.samples]
    assert [s["valid"] for s in scores] == [1.0, 1.0, 0.0, 1.0]
    assert [s["fields"] for s in scores] == pytest.approx([1.0, 2 / 3, 0.0, 2 / 3])
    assert [s["all"] for s in scores] == [1.0, 0.0, 0.0, 0.0]
    assert out.metrics["field_accuracy"].value == pytest.approx((1 + 2 / 3 + 0 + 2 / 3) / 4)
    assert out.metrics["json_valid"].value == 0.75 and out.metrics["all_fields"].value == 0.25
    # only the fields listed, dotted paths into nested objects; a field the reference lacks
    # is right when the reply lacks it too
    listed = _run("json_match", refs, replies, fields=["intent", "customer.name"])
    assert [s["scores"]["fields"] for s in listed.samples] == [1.0, 1.0, 0.0, 0.5]


def test_json_match_needs_json_references() -> None:
    with pytest.raises(EvalError, match="reference replies that are JSON objects"):
        _run("json_match", ["not json"], ["{}"])
    # a misspelt field was absent from reply and reference alike: counted right, silently
    refs = [json.dumps({"vendor": "Acme", "total": 3})]
    with pytest.raises(EvalError, match="fields vendr: in no reference object.*total, vendor"):
        _run("json_match", refs, ['{"total": 3}'], fields=["vendr", "total"])
    with pytest.raises(EvalError, match="a row has none"):
        EVALS.get("exact_match").run(
            EvalInput(
                model=None,
                tokenizer=None,
                rows=[{"prompt": "q"}],
                params=EVALS.get("exact_match").params_model(),
                responses=["a"],
            )
        )


def test_rouge_and_chrf_come_from_their_libraries() -> None:
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import CHRF

    refs = ["the cat sat on the mat", "a quick brown fox"]
    replies = ["the cat sat on a mat", "completely different words"]
    rouge = _run("rouge", refs, replies)
    want = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(refs[0], replies[0])
    assert rouge.samples[0]["scores"]["rougeL"] == pytest.approx(want["rougeL"].fmeasure)
    assert rouge.samples[1]["scores"]["rouge1"] == 0.0
    chrf = _run("chrf", refs, replies)
    assert chrf.samples[0]["scores"]["chrf"] == pytest.approx(
        CHRF().sentence_score(replies[0], [refs[0]]).score
    )
    assert chrf.metrics["chrf"].value > 0 and chrf.samples[0]["scores"]["chrf"] > 50
