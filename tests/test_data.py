"""Datasets: every format from every file type, row errors, reproducible splits."""

from __future__ import annotations

import json
import re
import time
import traceback
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ftlab.runner.data import DataError, load
from ftlab.runner.spec.schema import DataSource

from .conftest import DATA, EXPERIMENTS


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _src(path: Path, fmt: str, **kw) -> DataSource:
    return DataSource(path=str(path), format=fmt, **kw)


def test_shipped_sft_data_splits_reproducibly_without_overlap() -> None:
    src = _src(DATA / "support_sft.jsonl", "messages", val_fraction=0.1)
    a = load(src, base_dir=Path("."), seed=1)
    b = load(src, base_dir=Path("."), seed=1)
    c = load(src, base_dir=Path("."), seed=2)
    assert a == b and a.content_hash == b.content_hash
    assert a.content_hash != c.content_hash
    assert len(a.val) == 40 and len(a.train) == 360
    key = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731
    assert not {key(r) for r in a.train} & {key(r) for r in a.val}


def test_shipped_files_never_share_a_prompt() -> None:
    def prompts(name: str, field: str) -> set[str]:
        rows = [json.loads(line) for line in (DATA / name).read_text().splitlines()]
        if field == "messages":
            return {m["content"] for r in rows for m in r["messages"] if m["role"] == "user"}
        return {r[field] for r in rows}

    train = prompts("support_sft.jsonl", "messages") | prompts("support_prefs.jsonl", "prompt")
    train |= prompts("support_feedback.jsonl", "prompt")
    held_out = prompts("support_eval.jsonl", "prompt") | prompts("support_intent_mc.jsonl", "query")
    assert len(held_out) == 240 and not train & held_out


def test_shipped_preferences_are_curt_off_topic_or_timeline() -> None:
    """A quarter of the rejected replies are curt, a quarter polite but about another
    problem (their topic sentence names another one) — preferences SFT already carries —
    and half the same reply promising only an update where chosen commits to a result (a
    preference SFT has no opinion on: the one alignment has to teach)."""
    rows = [json.loads(line) for line in (DATA / "support_prefs.jsonl").read_text().splitlines()]
    assert len(rows) == 300
    update = "Expect an update from us by email"
    curt = [r for r in rows if len(r["chosen"]) > 2 * len(r["rejected"])]
    timeline = [
        r
        for r in rows
        if update in r["rejected"]
        and update not in r["chosen"]
        and r["chosen"].split(".")[:2] == r["rejected"].split(".")[:2]
    ]
    off_topic = [r for r in rows if r not in curt and r not in timeline]
    assert (len(curt), len(off_topic), len(timeline)) == (75, 75, 150)
    topic = re.compile(r"I see this is about ([^.]+)\.")
    for r in off_topic:
        assert topic.search(r["chosen"])[1] != topic.search(r["rejected"])[1], r  # type: ignore[index]
    assert len({r["chosen"].split(".")[1] for r in rows}) >= 4  # several acknowledgements


@pytest.mark.parametrize(
    ("fmt", "row", "expect"),
    [
        (
            "messages",
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello"},
                ]
            },
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello"},
                ]
            },
        ),
        (
            "sharegpt",
            {
                "conversations": [
                    {"from": "human", "value": "hi"},
                    {"from": "gpt", "value": "hello"},
                ]
            },
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello"},
                ]
            },
        ),
        (
            "alpaca",
            {"instruction": "Say hi", "input": "to Bob", "output": "hi Bob"},
            {
                "messages": [
                    {"role": "user", "content": "Say hi\n\nto Bob"},
                    {"role": "assistant", "content": "hi Bob"},
                ]
            },
        ),
        (
            "prompt_completion",
            {"prompt": "p", "completion": "c"},
            {"prompt": "p", "completion": "c"},
        ),
        (
            "preference",
            {"prompt": "p", "chosen": "good", "rejected": "bad"},
            {"prompt": "p", "chosen": "good", "rejected": "bad"},
        ),
        (
            "unpaired",
            {"prompt": "p", "completion": "c", "label": True},
            {"prompt": "p", "completion": "c", "label": True},
        ),
    ],
)
def test_formats_normalise(tmp_path: Path, fmt: str, row: dict, expect: dict) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [row] * 3)
    ds = load(_src(path, fmt, val_fraction=0.0), base_dir=tmp_path, seed=0)
    assert ds.train == [expect] and ds.val == []  # exact duplicates are kept once
    assert ds.report[-1] == {
        "step": "dedupe",
        "in": 3,
        "out": 1,
        "dropped": 2,
        "reason": "exact duplicates",
    }


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_file_types(tmp_path: Path, suffix: str) -> None:
    rows = [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(10)]
    path = tmp_path / f"d{suffix}"
    if suffix == ".jsonl":
        _jsonl(path, rows)
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
    elif suffix == ".csv":
        path.write_text("prompt,completion\n" + "".join(f"p{i},c{i}\n" for i in range(10)))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    ds = load(_src(path.name, "prompt_completion", val_fraction=0.2), base_dir=tmp_path, seed=0)
    assert len(ds.train) == 8 and len(ds.val) == 2
    assert sorted(r["prompt"] for r in ds.train + ds.val) == sorted(f"p{i}" for i in range(10))


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a", \n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: not valid JSON"):
        load(_src(path, "prompt_completion"), base_dir=tmp_path, seed=0)


def test_missing_field_names_row_and_keys(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "d.jsonl",
        [
            {"prompt": "a", "chosen": "b", "rejected": "c"},
            {"prompt": "a", "chosen": "b", "rejeted": "c"},
        ],
    )
    with pytest.raises(
        DataError,
        match=r"d\.jsonl:2: format 'preference' needs a non-empty "
        r"string 'rejected', found missing\. Keys in this row",
    ):
        load(_src(path, "preference"), base_dir=tmp_path, seed=0)


def test_bad_role_and_no_assistant(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [{"messages": [{"role": "bot", "content": "x"}]}])
    with pytest.raises(DataError, match=r"d\.jsonl:1: message 0 has role='bot'"):
        load(_src(path, "messages"), base_dir=tmp_path, seed=0)
    path = _jsonl(tmp_path / "e.jsonl", [{"messages": [{"role": "user", "content": "x"}]}])
    with pytest.raises(DataError, match="no assistant message"):
        load(_src(path, "messages"), base_dir=tmp_path, seed=0)


def test_missing_file_and_unreachable_hub_dataset(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such data file"):
        load(_src("nope.jsonl", "messages"), base_dir=tmp_path, seed=0)
    start = time.time()
    with pytest.raises(DataError, match="loading it as a hub dataset failed"):
        load(_src("some-org/some-dataset", "messages"), base_dir=tmp_path, seed=0)
    assert time.time() - start < 30


def test_max_rows(tmp_path: Path) -> None:
    src = _src(DATA / "support_sft.jsonl", "messages", max_rows=20, val_fraction=0.25)
    ds = load(src, base_dir=tmp_path, seed=0)
    assert (len(ds.train), len(ds.val)) == (15, 5)


def test_ratings_to_pairs_all_and_best_vs_worst(tmp_path: Path) -> None:
    rows = [
        {
            "prompt": "p1",
            "responses": [
                {"text": "a", "rating": 5},
                {"text": "b", "rating": 3},
                {"text": "c", "rating": 3},
            ],
        },
        {"prompt": "p2", "ranking": ["best", "mid", "worst"]},
        {
            "prompt": "p1",
            "responses": [
                {"text": "a", "rating": 5},
                {"text": "b", "rating": 3},
                {"text": "c", "rating": 3},
            ],
        },  # a duplicate row
    ]
    path = _jsonl(tmp_path / "r.jsonl", rows)
    ds = load(
        _src(path, "preference", convert="ratings_to_pairs", val_fraction=0.0),
        base_dir=tmp_path,
        seed=0,
    )
    pairs = {(r["prompt"], r["chosen"], r["rejected"]) for r in ds.train}
    assert pairs == {
        ("p1", "a", "b"),
        ("p1", "a", "c"),
        ("p2", "best", "mid"),
        ("p2", "best", "worst"),
        ("p2", "mid", "worst"),
    }
    steps = {s["step"]: s for s in ds.report}
    assert steps["ratings_to_pairs"]["dropped"] == 2  # the b/c ties, twice
    assert steps["dedupe"]["dropped"] == 2
    margin = load(
        _src(
            path,
            "preference",
            convert="ratings_to_pairs",
            pairs="best_vs_worst",
            min_margin=1.5,
            val_fraction=0.0,
        ),
        base_dir=tmp_path,
        seed=0,
    )
    assert {(r["prompt"], r["chosen"], r["rejected"]) for r in margin.train} == {
        ("p1", "a", "c"),  # b and c tie at the bottom; c is listed last
        ("p2", "best", "worst"),
    }


def test_pairs_to_unpaired_and_identical_pairs(tmp_path: Path) -> None:
    rows = [
        {"prompt": "p", "chosen": "good", "rejected": "bad"},
        {"prompt": "p", "chosen": "good", "rejected": "worse"},
        {"prompt": "q", "chosen": "same", "rejected": "same"},
    ]
    path = _jsonl(tmp_path / "p.jsonl", rows)
    ds = load(
        _src(path, "unpaired", convert="pairs_to_unpaired", val_fraction=0.0),
        base_dir=tmp_path,
        seed=0,
    )
    got = sorted((r["prompt"], r["completion"], r["label"]) for r in ds.train)
    assert got == [("p", "bad", False), ("p", "good", True), ("p", "worse", False)]
    steps = {s["step"]: s["dropped"] for s in ds.report}
    assert steps == {"drop_chosen_equals_rejected": 1, "pairs_to_unpaired": 1, "dedupe": 0}


def test_pairs_to_judge_splits_as_the_pairs_do_both_orders(tmp_path: Path) -> None:
    """A judge trained on `convert: pairs_to_judge` rows never sees the held-out pairs its
    calibration (the same file as `format: preference`) measures it on; each pair becomes
    the judge eval's own prompt in both orders, the verdict as the reply."""
    from ftlab.evals.judge_prompts import PAIRWISE, rubric_text

    judged = load(
        _src(
            DATA / "support_prefs.jsonl",
            "messages",
            convert="pairs_to_judge",
            rubric="support_reply",
            val_fraction=0.1,
        ),
        base_dir=EXPERIMENTS,
        seed=42,
    )
    prefs = load(
        _src(DATA / "support_prefs.jsonl", "preference", val_fraction=0.1),
        base_dir=EXPERIMENTS,
        seed=42,
    )
    assert (len(judged.train), len(judged.val)) == (2 * len(prefs.train), 2 * len(prefs.val))
    first = prefs.val[0]
    rubric = rubric_text("support_reply", EXPERIMENTS)
    ab = PAIRWISE.format(
        rubric=rubric, prompt=first["prompt"], a=first["chosen"], b=first["rejected"]
    )
    ba = PAIRWISE.format(
        rubric=rubric, prompt=first["prompt"], a=first["rejected"], b=first["chosen"]
    )
    assert judged.val[0]["messages"] == [
        {"role": "user", "content": ab},
        {"role": "assistant", "content": "Verdict: A"},
    ]
    assert judged.val[1]["messages"][1]["content"] == "Verdict: B"
    assert judged.val[1]["messages"][0]["content"] == ba
    held_out = {p["prompt"] for p in prefs.val}
    assert not any(p in r["messages"][0]["content"] for r in judged.train for p in held_out)
    # without rubric: the judge eval's default, `general`; a rubric without the convert
    # is refused
    assert DataSource(path="x.jsonl", format="messages", convert="pairs_to_judge").rubric == (
        "general"
    )
    with pytest.raises(ValueError, match="add convert: pairs_to_judge or drop rubric"):
        DataSource(path="x.jsonl", format="messages", rubric="r")


def test_split_never_puts_one_prompt_on_both_sides(tmp_path: Path) -> None:
    rows = [
        {"prompt": f"p{i % 7}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(70)
    ]
    path = _jsonl(tmp_path / "p.jsonl", rows)
    ds = load(_src(path, "preference", val_fraction=0.2), base_dir=tmp_path, seed=3)
    train_prompts = {r["prompt"] for r in ds.train}
    val_prompts = {r["prompt"] for r in ds.val}
    assert val_prompts and train_prompts and not train_prompts & val_prompts


def test_convert_needs_the_matching_format() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="set format: preference"):
        DataSource(path="x.jsonl", format="messages", convert="ratings_to_pairs")


def test_bad_ratings_row_is_named(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "r.jsonl", [{"prompt": "p", "responses": [{"text": "a"}]}])
    with pytest.raises(DataError, match=r"r\.jsonl:1: response 0 needs a string 'text' and"):
        load(_src(path, "preference", convert="ratings_to_pairs"), base_dir=tmp_path, seed=0)


# ---------------------------------------------------------------- hostile files, end to end

CLI_SPEC = """\
name: hostile
model: tiny
data:
  sft: {{path: {path}, format: prompt_completion}}
stages:
  - {{name: sft, method: lora, train: {{max_steps: 1}}}}
output: {{dir: {runs}}}
"""
GOOD = b'{"prompt": "p1", "completion": "c1"}\n'
# physical lines 2-4 and 5-7 are one record each; the record on line 8 has no completion
CSV_MULTILINE = b'prompt,completion\n"a\nb\nc",x\n"d\ne\nf",y\ng,\n'
DEEP = b"[" * 100_000 + b"]" * 100_000


def _cli(tmp_path: Path, command: str, data_path: str) -> tuple[int, str]:
    """`ftlab <command> spec.yaml` on a spec whose one dataset is `data_path`."""
    from typer.testing import CliRunner

    from ftlab.cli.main import app

    spec = tmp_path / "spec.yaml"
    spec.write_text(CLI_SPEC.format(path=json.dumps(data_path), runs=tmp_path / "runs"))
    result = CliRunner().invoke(app, [command, str(spec)])
    out = result.output
    if result.exc_info and not isinstance(result.exception, SystemExit):  # what a user sees
        out += "".join(traceback.format_exception(*result.exc_info))
    return result.exit_code, out


@pytest.mark.parametrize(
    ("name", "content", "where", "what"),
    [
        ("d.jsonl", GOOD + b'{"prompt": "caf\xe9", "completion": "c"}\n', "d.jsonl:2:", "UTF-8"),
        (
            "d.json",
            b'[\n  {"prompt": "p", "completion": "c"},\n  {"prompt": "\xff"}\n]',
            "d.json:3:",
            "UTF-8",
        ),
        ("d.csv", b"prompt,completion\np,c\ncaf\xe9,c\n", "d.csv:3:", "UTF-8"),
        ("d.jsonl", b"\xef\xbb\xbf" + GOOD + b'{"prompt": "\xe9"}\n', "d.jsonl:2:", "byte 0xe9"),
        ("d.json", DEEP, "d.json:", "nested"),
        ("d.jsonl", GOOD + DEEP + b"\n", "d.jsonl:2:", "nested"),
        ("d.parquet", b"PAR1" + b"\x00garbage" * 20 + b"PAR1", "d.parquet:", "Parquet"),
        ("d.csv", CSV_MULTILINE, "d.csv:8:", "'completion'"),
        (
            "d.jsonl",
            b"\xef\xbb\xbf" + GOOD * 2 + b'{"prompt": "p"}\n',
            "d.jsonl:3:",
            "'completion'",
        ),
    ],
    ids=[
        "jsonl-latin1",
        "json-latin1",
        "csv-latin1",
        "jsonl-bom-latin1",
        "json-deep",
        "jsonl-deep",
        "parquet-corrupt",
        "csv-multiline-line",
        "jsonl-bom",
    ],
)
def test_hostile_data_files_fail_run_with_file_and_line(
    tmp_path: Path, name: str, content: bytes, where: str, what: str
) -> None:
    (tmp_path / name).write_bytes(content)
    code, out = _cli(tmp_path, "run", name)
    assert code == 2, out
    assert f"{tmp_path / where}" in out and what in out, out
    assert "Traceback" not in out and not (tmp_path / "runs").exists()


def test_bom_jsonl_reads(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD * 2)
    ds = load(_src(path, "prompt_completion", val_fraction=0.0), base_dir=tmp_path, seed=0)
    assert ds.train == [{"prompt": "p1", "completion": "c1"}]  # the duplicate dropped


@pytest.mark.parametrize("command", ["validate", "run"])
def test_file_looking_data_path_is_never_a_hub_id(tmp_path: Path, command: str) -> None:
    """A typo'd suffix is a spec problem at once (no hub retries), with the suffix to use;
    an existing file of another type (`/etc/passwd`) is refused as such."""
    (tmp_path / "d.jsonl").write_bytes(GOOD)
    start = time.monotonic()
    code, out = _cli(tmp_path, command, "d.jsnl")
    assert code == 2 and time.monotonic() - start < 10, out
    assert f"{tmp_path / 'spec.yaml'}:4: data.sft.path" in out, out
    assert "expected: an existing .jsonl/.json/.csv/.parquet file" in out, out
    assert "found:    'd.jsnl': unsupported file type '.jsnl'" in out, out
    assert "fix:      Did you mean 'd.jsonl'? (that file exists)" in out, out
    assert "Traceback" not in out, out
    code, out = _cli(tmp_path, command, "/etc/passwd")
    assert code == 2 and "'/etc/passwd': unsupported file type (no suffix)" in out, out
    assert "Traceback" not in out, out


def test_unsupported_file_type_is_named_by_the_reader(tmp_path: Path) -> None:
    """Sources that skip `validate` (a resumed run's spec) get the same answer."""
    (tmp_path / "d.jsonl").write_bytes(GOOD)
    with pytest.raises(
        DataError,
        match=r"d\.jsnl: unsupported file type '\.jsnl' \(expected "
        r"\.jsonl/\.json/\.csv/\.parquet\)\. Did you mean '.*d\.jsonl'\?",
    ):
        load(_src(tmp_path / "d.jsnl", "messages"), base_dir=tmp_path, seed=0)
    with pytest.raises(DataError, match=r"/etc/passwd: unsupported file type \(no suffix\)"):
        load(_src("/etc/passwd", "messages"), base_dir=tmp_path, seed=0)


@pytest.mark.parametrize(
    ("path", "local"),
    [
        ("d.jsnl", True),
        ("data/train.txt", True),
        ("./train", True),
        ("data/sub/train", True),
        ("C:\\data\\train", True),
        ("some-org/some-dataset", False),
        ("nvidia/Nemotron-Post-Training-Dataset-v1.1", False),
        ("squad", False),
    ],
)
def test_which_data_paths_are_local_files(path: str, local: bool) -> None:
    from ftlab.runner.spec.datapath import looks_like_file

    assert looks_like_file(path) is local
