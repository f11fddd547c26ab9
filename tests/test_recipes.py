"""Data recipes: rows longer than max_length (`overlong`), mixtures, quality filters — on
data of another domain than the shipped customer support (gardening questions)."""

from __future__ import annotations

import json
import traceback
from pathlib import Path

import pytest

from ftlab.runner.data import load
from ftlab.runner.rundir import RunDir
from ftlab.runner.spec.schema import DataSource

PLANTS = ["tomatoes", "basil", "roses", "lavender", "mint", "peppers", "ferns", "orchids"]
LONG = (
    "Water deeply once a week rather than a little every day, so the roots grow down into "
    "cooler soil; mulch with straw or bark to keep the moisture in, feed with a balanced "
    "fertiliser every fortnight in summer, pinch out the tips to keep the plant bushy, and "
    "watch the undersides of the leaves for aphids, which a jet of water usually clears. "
)


def garden_rows(n: int = 40, long_every: int = 10) -> list[dict]:
    """`n` conversations; every `long_every`-th reply is far longer than the others."""
    rows = []
    for i in range(n):
        plant = f"{PLANTS[i % len(PLANTS)]} number {i}"
        reply = f"Give the {plant} sun in the morning and water at the base."
        if i % long_every == long_every - 1:
            reply += " " + LONG * 4
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"How do I look after my {plant}?"},
                    {"role": "assistant", "content": reply},
                ]
            }
        )
    return rows


SPEC = """\
name: garden
model: tiny
data:
  qa: {path: qa.jsonl, val_fraction: 0.1}
stages:
  - {name: sft, method: lora, data: qa, train: {max_steps: 2, batch_size: 4, max_length: 96}}
output: {dir: runs}
"""


@pytest.fixture
def garden(tmp_path: Path) -> Path:
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in garden_rows()))
    spec = tmp_path / "garden.yaml"
    spec.write_text(SPEC)
    return spec


def _cli(cwd: Path, *args: str) -> tuple[int, str]:
    import os

    from typer.testing import CliRunner

    from ftlab.cli.main import app

    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, list(args))
    finally:
        os.chdir(old)
    out = result.output
    if result.exc_info and not isinstance(result.exception, SystemExit):
        out += "".join(traceback.format_exception(*result.exc_info))
    return result.exit_code, out


def _overlong(run_dir: Path) -> dict:
    report = RunDir(run_dir).stage("sft")["summary"]["data_report"]
    return next(s for s in report if s["step"] == "overlong")


def test_overlong_rows_reported_by_plan_dropped_by_default(garden: Path) -> None:
    code, out = _cli(garden.parent, "plan", garden.name)
    assert code == 0, out
    flat = " ".join(out.split())
    assert "4 of 40 rows of data qa are longer than train.max_length 96: dropped" in flat, out
    assert "data qa: 32 train / 4 validation rows" in flat, out  # 36 left of 40

    code, out = _cli(garden.parent, "run", garden.name)
    assert code == 0, out
    assert "4 of 40 rows of data qa are longer than train.max_length 96: dropped" in out
    (run_dir,) = (garden.parent / "runs").glob("garden-*")
    step = _overlong(run_dir)
    assert step["policy"] == "drop" and step["dropped"] == 4 and step["out"] == 36
    assert step["tokens"]["total"]["max"] > 96 >= step["tokens"]["total"]["p50"]
    assert sum(step["over"].values()) == 4


def test_overlong_truncate_keeps_the_rows_and_says_so(garden: Path) -> None:
    code, out = _cli(garden.parent, "run", garden.name, "data.qa.overlong=truncate")
    assert code == 0, out
    assert "kept and cut at 96 tokens" in out and "overlong: drop` leaves them out" in out
    (run_dir,) = (garden.parent / "runs").glob("garden-*")
    step = _overlong(run_dir)
    assert step["policy"] == "truncate" and step["dropped"] == 0 and step["out"] == 40


def test_overlong_error_stops_before_any_run_directory(garden: Path) -> None:
    code, out = _cli(garden.parent, "run", garden.name, "data.qa.overlong=error")
    assert code == 2, out
    flat = " ".join(out.split())
    assert "data.qa: 4 of 40 rows (3 train, 1 validation)" in flat or "data.qa: 4 of 40" in flat
    assert "Raise train.max_length, or set data.qa.overlong: drop" in flat, out
    assert "Traceback" not in out and not (garden.parent / "runs").exists()


def test_overlong_default_is_in_the_data_hash(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in garden_rows()))
    drop = load(DataSource(path=str(path)), base_dir=tmp_path, seed=0)
    cut = load(DataSource(path=str(path), overlong="truncate"), base_dir=tmp_path, seed=0)
    assert drop.train == cut.train and drop.content_hash != cut.content_hash


# ---------------------------------------------------------------- quality filters


def _write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_near_dedupe_drops_planted_near_duplicates_and_keeps_distinct_rows(
    tmp_path: Path,
) -> None:
    import random

    rng = random.Random(0)
    words = LONG.replace(",", "").replace(";", "").replace(".", "").split()
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Question {i} about my {PLANTS[i % 8]}?"},
                {"role": "assistant", "content": " ".join(rng.choices(words, k=60))},
            ]
        }
        for i in range(40)
    ]
    planted = []
    for i in (3, 11, 27):  # the same question and reply with one word changed
        msgs = [dict(m) for m in rows[i]["messages"]]
        reply = msgs[1]["content"].split()
        reply[30] = "Thanks!"
        msgs[1]["content"] = " ".join(reply)
        planted.append({"messages": msgs})
    path = _write_rows(tmp_path / "qa.jsonl", rows + planted)
    ds = load(
        DataSource.model_validate(
            {"path": str(path), "val_fraction": 0.0, "filters": [{"kind": "near_dedupe"}]}
        ),
        base_dir=tmp_path,
        seed=0,
    )
    assert len(ds.train) == 40  # the 3 planted copies went, every distinct row stayed
    kept = {r["messages"][1]["content"] for r in ds.train}
    assert not any("Thanks!" in k for k in kept)
    (step,) = [s for s in ds.report if s["step"].startswith("filters.0")]
    assert step["dropped"] == 3 and "MinHash" in step["reason"]


def test_length_and_regex_filters_report_each_step(tmp_path: Path) -> None:
    rows = garden_rows(40, long_every=10)  # 4 long replies
    rows[0]["messages"][1]["content"] = "As an AI language model I cannot garden."
    path = _write_rows(tmp_path / "qa.jsonl", rows)
    source = DataSource.model_validate(
        {
            "path": str(path),
            "val_fraction": 0.0,
            "filters": [
                {"kind": "length", "max_words": 100},
                {"kind": "regex", "pattern": "(?i)as an ai", "of": "reply"},
            ],
        }
    )
    ds = load(source, base_dir=tmp_path, seed=0)
    assert len(ds.train) == 35
    length, regex = ds.report[-2:]
    assert (length["dropped"], regex["dropped"]) == (4, 1)
    assert "max words 100" in length["reason"] and "as an ai" in regex["reason"]


def test_filter_spec_errors_name_the_key(tmp_path: Path) -> None:
    from ftlab.runner.spec.errors import SpecError
    from ftlab.runner.spec.load import load_spec

    spec = tmp_path / "s.yaml"
    spec.write_text(
        SPEC.replace(
            "val_fraction: 0.1}",
            "val_fraction: 0.1, filters: [{kind: regex, pattern: '(unclosed'}, {kind: near_dup}]}",
        )
    )
    with pytest.raises(SpecError) as err:
        load_spec(spec)
    text = str(err.value)
    assert "data.qa.filters.0" in text and "regular expression" in text, text
    assert "data.qa.filters.1.kind" in text and "Did you mean 'near_dedupe'?" in text, text
    # an unknown key inside a filter: the filter's own keys and a did-you-mean (a fresh-eyes
    # user saw an empty key list and a made-up `filters.1.length` segment)
    spec.write_text(
        SPEC.replace(
            "val_fraction: 0.1}",
            "val_fraction: 0.1, filters: [{kind: length, "
            "min_word: 3}, {kind: near_dedupe, treshold: 0.5}]}",
        )
    )
    with pytest.raises(SpecError) as err:
        load_spec(spec)
    text = str(err.value)
    assert "data.qa.filters.0.min_word" in text and "Did you mean 'min_words'?" in text, text
    assert "data.qa.filters.1.treshold" in text and "num_perm, of, threshold" in text, text


# ---------------------------------------------------------------- mixtures

MIX_SPEC = """\
name: mixed
model: tiny
seed: {seed}
data:
  garden: {{path: garden.jsonl, val_fraction: 0.1}}
  kitchen: {{path: kitchen.jsonl, val_fraction: 0.1}}
  both:
    mix: [{{source: garden, weight: 0.7}}, {{source: kitchen, weight: 0.3}}]
    size: {size}
stages:
  - {{name: sft, method: lora, data: both,
      train: {{max_steps: 2, batch_size: 4, max_length: 128, eval_steps: 2}}}}
output: {{dir: runs}}
"""


def kitchen_rows(n: int) -> list[dict]:
    dishes = ["soup", "bread", "risotto", "curry", "pancakes", "salad"]
    return [
        {
            "messages": [
                {"role": "user", "content": f"How long do I cook the {dishes[i % 6]} #{i}?"},
                {"role": "assistant", "content": f"Cook the {dishes[i % 6]} #{i} until golden."},
            ]
        }
        for i in range(n)
    ]


def _mix_dir(tmp_path: Path, *, seed: int = 0, size: int = 0) -> Path:
    _write_rows(tmp_path / "garden.jsonl", garden_rows(120, long_every=1000))
    _write_rows(tmp_path / "kitchen.jsonl", kitchen_rows(120))
    spec = tmp_path / "mixed.yaml"
    spec.write_text(MIX_SPEC.format(seed=seed, size=size))
    return spec


def _mixed(spec: Path) -> object:
    from ftlab.runner.spec.load import load_spec

    s = load_spec(spec)
    return load(s.data["both"], base_dir=spec.parent, seed=s.seed, sources=s.data, name="both")


def test_mixture_draws_the_weights_reproducibly(tmp_path: Path) -> None:
    ds = _mixed(_mix_dir(tmp_path, size=100))
    garden = sum("look after" in r["messages"][0]["content"] for r in ds.train)  # type: ignore[attr-defined]
    assert (garden, len(ds.train) - garden) == (70, 30)  # type: ignore[attr-defined]
    again = _mixed(_mix_dir(tmp_path, size=100))
    assert again.train == ds.train and again.content_hash == ds.content_hash  # type: ignore[attr-defined]
    other = _mixed(_mix_dir(tmp_path, seed=1, size=100))
    assert other.train != ds.train  # type: ignore[attr-defined]
    # size 0: as many rows as the sources give without repeating one (108 garden → 154)
    full = _mixed(_mix_dir(tmp_path))
    n = len(full.train)  # type: ignore[attr-defined]
    g = sum("look after" in r["messages"][0]["content"] for r in full.train)  # type: ignore[attr-defined]
    assert n == 154 and abs(g / n - 0.7) < 0.01
    steps = {s["step"]: s for s in full.report}  # type: ignore[attr-defined]
    assert steps["mix garden"]["out"] == 108 and steps["mix kitchen"]["out"] == 46


def test_mixture_reports_its_sources_steps_and_repeats(tmp_path: Path) -> None:
    """A source's filters show in the mix's data report and line; repeated rows are said
    on the console, not only in stage.json (fresh-eyes findings)."""
    from ftlab.runner.lengths import Tokens as T
    from ftlab.runner.lengths import describe, fit

    spec = _mix_dir(tmp_path, size=400)
    spec.write_text(
        spec.read_text().replace(
            "garden: {path: garden.jsonl, val_fraction: 0.1}",
            "garden: {path: garden.jsonl, val_fraction: 0.1, "
            "filters: [{kind: regex, pattern: 'number 1[0-9]\\b'}]}",
        )
    )
    ds = _mixed(spec)
    steps = {s["step"]: s for s in ds.report}  # type: ignore[attr-defined]
    assert steps["garden: filters.0 (regex)"]["dropped"] == 10
    assert steps["mix garden"]["repeated"] == 280 - 99
    fitted = fit(ds, data="both", tokens=T(None, "x"), max_length=512, policy="drop")  # type: ignore[arg-type]
    line, _ = describe(fitted.report, data="both")
    assert "(mix drew garden 280 (181 repeated), kitchen 120 (12 repeated))" in line, line
    assert "garden: filters.0 (regex) 10" in line


def test_mixture_refuses_settings_it_would_ignore(tmp_path: Path) -> None:
    from ftlab.runner.spec.errors import SpecError
    from ftlab.runner.spec.load import load_spec

    spec = _mix_dir(tmp_path)
    text = spec.read_text()
    spec.write_text(text.replace("    size: 0", "    size: 0\n    val_fraction: 0.5"))
    with pytest.raises(SpecError, match="set val_fraction on its sources"):
        load_spec(spec)
    spec.write_text(text.replace("source: kitchen, weight: 0.3", "source: garden, weight: 0.3"))
    with pytest.raises(SpecError, match="names garden twice"):
        load_spec(spec)


def test_truncating_every_reply_away_is_an_error_not_a_crash(tmp_path: Path) -> None:
    """`overlong: truncate` at a max_length no longer than the prompts left nothing to
    learn and the run failed later with KeyError 'eval_loss' (a fresh-eyes user)."""
    from ftlab.runner import models
    from ftlab.runner.data import DataError
    from ftlab.runner.lengths import Tokens as T
    from ftlab.runner.lengths import fit

    path = _write_rows(tmp_path / "qa.jsonl", garden_rows())
    ds = load(DataSource(path=str(path)), base_dir=tmp_path, seed=0)
    tok = T(models.load_tokenizer(str(models.ensure_tiny())), "tiny")
    with pytest.raises(DataError, match="no reply token is left"):
        fit(ds, data="qa", tokens=tok, max_length=16, policy="truncate")


def test_mixture_spec_errors(tmp_path: Path) -> None:
    from ftlab.runner.spec.errors import SpecError
    from ftlab.runner.spec.load import load_spec

    spec = _mix_dir(tmp_path)
    spec.write_text(spec.read_text().replace("source: kitchen", "source: kitchn"))
    with pytest.raises(SpecError, match="Did you mean 'kitchen'"):
        load_spec(spec)
    spec = _mix_dir(tmp_path)
    spec.write_text(spec.read_text().replace("    size: 0", "    path: x.jsonl"))
    with pytest.raises(SpecError, match="a path .* or a mix: of other datasets"):
        load_spec(spec)


@pytest.mark.integration
def test_sweep_over_a_mixture_weight_runs_three_trials(tmp_path: Path) -> None:
    spec = _mix_dir(tmp_path, size=48)
    spec.write_text(
        spec.read_text().replace(
            "output:",
            "search:\n  n_trials: 3\n  sampler: random\n  pruner: none\n"
            "  space:\n    data.both.mix.0.weight: {low: 0.2, high: 0.9}\noutput:",
        )
    )
    code, out = _cli(tmp_path, "sweep", spec.name)
    assert code == 0, out
    runs = sorted((tmp_path / "runs").glob("mixed-*"))
    assert len(runs) == 3, out
    weights = set()
    for run in runs:
        from ftlab.runner.spec.load import read_yaml

        raw = read_yaml(run / "spec.yaml")
        weights.add(raw.data["data"]["both"]["mix"][0]["weight"])
        steps = {s["step"]: s for s in RunDir(run).stage("sft")["summary"]["data_report"]}
        assert steps["mix garden"]["out"] + steps["mix kitchen"]["out"] == 48
    assert len(weights) == 3


# ---------------------------------------------------------------- one progress display


def _ftlab_in_pty(cwd: Path, *args: str) -> str:
    """`ftlab ARGS` with a pseudo-terminal as its stdout and stderr (a user's terminal)."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # rows, cols
    env = {k: v for k, v in os.environ.items() if k not in ("FTLAB_PROGRESS", "TQDM_DISABLE")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ftlab.cli", *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=child,
        stderr=child,
        env={**env, "COLUMNS": "160"},
    )
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=600)
    os.close(main)
    assert proc.returncode == 0, b"".join(chunks).decode(errors="replace")[-3000:]
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.integration
def test_terminal_gets_one_live_display_a_file_gets_plain_lines(garden: Path) -> None:
    import subprocess
    import sys

    spec = garden.read_text().replace("max_steps: 2", "max_steps: 40")
    garden.write_text(spec)
    live = _ftlab_in_pty(garden.parent, "run", garden.name)
    assert "\r" in live  # redrawn in place
    assert "run 1/1 default · stage 1/1 sft (lora) · training:" in live, live[-2000:]
    assert "ETA" in live and "/40" in live
    assert "done: 1 run(s) completed" in live

    logged = subprocess.run(
        [sys.executable, "-m", "ftlab.cli", "run", garden.name, "-q", "seed=7"],  # trains anew
        cwd=garden.parent,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "FTLAB_PROGRESS": ""},
    )
    out = logged.stdout + logged.stderr
    assert logged.returncode == 0, out
    assert "\r" not in out and "training:" not in out and "stage sft: data" not in out
    assert "warning: 4 of 40 rows of data qa" in out  # quiet keeps warnings
    assert "Runs" in out and "done: 1 run(s) completed" in out


def test_plain_progress_prints_quarters_only_for_work_that_takes_a_while(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ftlab.runner import progress

    monkeypatch.setenv("FTLAB_PROGRESS", "plain")
    now = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    progress.at(run="run 1/1 x", stage="stage 1/1 sft (lora)")
    bar = progress.Bar(12, "training")
    for step in range(1, 13):
        now[0] = {1: 0.3, 2: 0.6, 3: 1.0}.get(step, step * 0.9)
        bar.update()
    bar.close()
    lines = capsys.readouterr().out.splitlines()
    # 3/12 came after 1 s (quick so far: no line); 6/12 and 12/12 after 5 s or more
    assert [line.split(": ", 1)[1].split(" · ")[0] for line in lines] == [
        "step 6/12",
        "step 9/12",
        "step 12/12",
    ], lines
    assert lines[0].startswith("run 1/1 x · stage 1/1 sft (lora) · training: step 6/12")


def test_live_bar_shows_in_a_terminal_that_reports_no_size() -> None:
    """`script` gives its pseudo-terminal no size: tqdm drew nothing at 0 columns."""
    import os
    import pty
    import subprocess
    import sys

    code = (
        "from ftlab.runner import progress\nprogress.setup()\n"
        "b = progress.Bar(4, 'training')\nfor _ in range(4): b.update()\nb.close()"
    )
    main, child = pty.openpty()  # no TIOCSWINSZ: 0 rows, 0 columns
    env = {k: v for k, v in os.environ.items() if k not in ("FTLAB_PROGRESS", "COLUMNS")}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=child, stderr=child, stdin=subprocess.DEVNULL, env=env
    )
    os.close(child)
    out = b""
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:
            break
        if not data:
            break
        out += data
    proc.wait(timeout=60)
    os.close(main)
    text = out.decode(errors="replace")
    assert "training:   0%" in text and "/4 [" in text and "ETA" in text, repr(text)
