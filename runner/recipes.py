"""Data recipes: quality filters (`data.<name>.filters`) and mixtures (`data.<name>.mix`).

Filters run in order on the normalised rows, before the split; each adds a step to the
data report with what it dropped and why. Near-duplicates are found with datasketch's
MinHash LSH (a row is dropped when an earlier kept row is estimated ≥ threshold Jaccard-
similar over word n-grams). A mixture draws each source's share of training rows from
that source's training split with the seed; validation rows are every source's own
validation split, so no source's held-out prompt is trained on.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Mapping
from typing import Any

from ftlab.runner.prefdata import Report
from ftlab.runner.spec.datasource import DataSource, LengthFilter, NearDedupe, RegexFilter

Rows = list[tuple[str, dict[str, Any]]]


def texts(row: dict[str, Any], of: str) -> list[str]:
    """The row's text by part: the reply (each reply of a pair), the prompt, or all."""
    if "messages" in row:
        msgs = row["messages"]
        last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        reply = [msgs[last]["content"]]
        prompt = ["\n".join(m["content"] for m in msgs[:last])]
    else:
        reply = [str(row[k]) for k in ("completion", "chosen", "rejected") if k in row]
        prompt = [str(row.get("prompt", ""))]
    if of == "reply":
        return reply
    if of == "prompt":
        return prompt
    return ["\n".join(prompt + reply)]


def apply_filters(rows: Rows, filters: list[Any], report: Report) -> Rows:
    for i, f in enumerate(filters):
        before = len(rows)
        if isinstance(f, LengthFilter):
            rows = [r for r in rows if all(_in_bounds(t, f) for t in texts(r[1], f.of))]
            why = f"{f.of} outside " + _bounds(f)
        elif isinstance(f, RegexFilter):
            pattern = re.compile(f.pattern)
            hit = [any(pattern.search(t) for t in texts(r[1], f.of)) for r in rows]
            rows = [r for r, h in zip(rows, hit, strict=True) if h == (f.action == "keep")]
            why = f"{f.of} {'does not match' if f.action == 'keep' else 'matches'} /{f.pattern}/"
        else:
            rows = near_dedupe(rows, f)
            why = f"{f.of} ≥ {f.threshold} similar to an earlier row (MinHash, {f.ngram}-grams)"
        report.add(f"filters.{i} ({f.kind})", before, len(rows), why)
    return rows


def _in_bounds(text: str, f: LengthFilter) -> bool:
    words, chars = len(text.split()), len(text)
    return (
        words >= f.min_words
        and (not f.max_words or words <= f.max_words)
        and chars >= f.min_chars
        and (not f.max_chars or chars <= f.max_chars)
    )


def _bounds(f: LengthFilter) -> str:
    parts = [
        f"{name.replace('_', ' ')} {value}"
        for name in ("min_words", "max_words", "min_chars", "max_chars")
        if (value := getattr(f, name))
    ]
    return ", ".join(parts) or "no bounds"


def near_dedupe(rows: Rows, f: NearDedupe) -> Rows:
    """Keep a row unless an earlier kept row is a near-duplicate of it."""
    from datasketch import MinHash, MinHashLSH

    # LSH bands tuned against false negatives; each candidate is then checked on its
    # estimated Jaccard similarity, which removes the false positives
    lsh = MinHashLSH(threshold=f.threshold, num_perm=f.num_perm, weights=(0.1, 0.9))
    sketches: list[Any] = []
    kept: Rows = []
    for where, row in rows:
        words = " ".join(texts(row, f.of)).lower().split()
        grams = {" ".join(words[i : i + f.ngram]) for i in range(max(1, len(words) - f.ngram + 1))}
        sketch = MinHash(num_perm=f.num_perm, seed=1)
        sketch.update_batch([g.encode() for g in grams])
        if any(sketches[int(c)].jaccard(sketch) >= f.threshold for c in lsh.query(sketch)):
            continue
        lsh.insert(str(len(sketches)), sketch)
        sketches.append(sketch)
        kept.append((where, row))
    return kept


def shares(weights: list[float], total: int) -> list[int]:
    """`total` split in proportion to `weights` (largest remainder: the counts add up)."""
    exact = [w / sum(weights) * total for w in weights]
    counts = [int(x) for x in exact]
    order = sorted(range(len(exact)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def mix(
    name: str, source: DataSource, parts: Mapping[str, Any], *, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str, list[dict[str, Any]]]:
    """(train, val, content hash, report) of a mixture of loaded datasets `parts`."""
    weights = [p.weight for p in source.mix]
    avail = [len(parts[p.source].train) for p in source.mix]
    size = source.size or min(
        int(a / (w / sum(weights))) for a, w in zip(avail, weights, strict=True)
    )
    rng = random.Random(seed)
    train: list[dict[str, Any]] = []
    report = [  # what each source's own steps dropped (dedupe, filters), by source
        {**s, "step": f"{p.source}: {s['step']}"}
        for p in source.mix
        for s in parts[p.source].report
    ]
    for part, n, have in zip(source.mix, shares(weights, size), avail, strict=True):
        rows = parts[part.source].train
        picked = rng.sample(rows, n) if n <= have else [*rows, *rng.choices(rows, k=n - have)]
        train += picked
        report.append(
            {
                "step": f"mix {part.source}",
                "in": have,
                "out": n,
                "dropped": max(have - n, 0),
                "reason": f"weight {part.weight:g} of {sum(weights):g}",
                "repeated": max(n - have, 0),
            }
        )
    rng.shuffle(train)
    val = [r for p in source.mix for r in parts[p.source].val]
    blob = {
        "name": name,
        "seed": seed,
        "parts": [(p.source, p.weight, parts[p.source].content_hash) for p in source.mix],
        "size": size,
        "overlong": source.overlong,
    }
    digest = hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]
    return train, val, digest, report
