"""Hostile specs (issue 15): the shipped specs mutated — alias chains, unicode and markup
in names, path tricks in names, absurd values — through `ftlab validate` in-process.
Every example ends with exit 0 or 2, no traceback, within 5 s, and an accepted spec's runs
all land inside `output.dir`."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ftlab.cli.main import app
from ftlab.runner.execute import new_run_id
from ftlab.runner.spec.errors import SpecError
from ftlab.runner.spec.load import expand_runs

from .conftest import EXPERIMENTS

SPECS = sorted(EXPERIMENTS.glob("*.yaml"))

NAMES = st.one_of(
    st.text(min_size=0, max_size=12),  # any unicode, control characters included
    st.sampled_from(
        [
            "[/bold]",
            "[red]x",
            "a/../../../x",
            "..",
            "sub/dir",
            "\u202eevil",
            "x" * 300,
            "résumé",
            "名前",
            "<script>",
            "a\\b",
            "~/x",
            "$HOME",
            "ok",  # valid names too, so accepted specs are checked for their run paths
            "v2.1-lora_x",
        ]
    ),
)
VALUES = st.sampled_from(
    [".inf", "-.inf", ".nan", "-1", "1e23", "0", "1000000000000", "''", "[]", "{}", "null"]
)


def _alias_prefix(depth: int, width: int) -> str:
    out = "lol1: &l1 [" + ", ".join(["x"] * width) + "]\n"
    for i in range(2, depth + 1):
        out += f"lol{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]\n"
    return out


def _check(path: Path) -> None:
    started = time.monotonic()
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert time.monotonic() - started < 5.0
    assert result.exit_code in (0, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    if result.exit_code == 0:
        for variant, spec in expand_runs(path):
            root = Path(spec.output.dir).resolve()
            run_dir = (Path(spec.output.dir) / new_run_id(spec.name, variant)).resolve()
            assert run_dir.parent == root, (variant, run_dir)


def _folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "data").mkdir()
    for f in (EXPERIMENTS / "data").glob("*.jsonl"):
        (folder / "data" / f.name).write_bytes(f.read_bytes())
    (folder / "tasks").symlink_to(EXPERIMENTS / "tasks")
    (folder / "rubrics").symlink_to(EXPERIMENTS / "rubrics")
    return folder


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    spec=st.sampled_from(SPECS),
    variant=NAMES,
    experiment=NAMES,
    value=VALUES,
    key=st.sampled_from(["seed", "stages.0.train.epochs", "stages.0.train.learning_rate"]),
    alias=st.one_of(st.none(), st.tuples(st.integers(1, 9), st.integers(1, 12))),
)
def test_hostile_specs_end_in_exit_0_or_2_quickly(
    tmp_path_factory, spec, variant, experiment, value, key, alias
) -> None:
    folder = _folder(tmp_path_factory)
    text = spec.read_text().replace(f"name: {spec.stem}", f"name: {experiment!r}", 1)
    fuzzed = f"  {variant!r}: {{{key}: {value}}}\n"
    if "\nvariants:\n" in text:
        text = text.replace("\nvariants:\n", "\nvariants:\n" + fuzzed, 1)
    else:
        text += "\nvariants:\n" + fuzzed
    if alias is not None:
        text = _alias_prefix(*alias) + text
    path = folder / "spec.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    _check(path)


def test_a_spec_name_or_variant_never_builds_a_path_outside_output_dir(tmp_path) -> None:
    """The names that used to escape: refused, so nothing is built from them."""
    for name in ("a/../../../../../elsewhere/pwn", "sub/dir", "..", "[/bold]"):
        spec = tmp_path / "s.yaml"
        text = (EXPERIMENTS / "quickstart.yaml").read_text()
        spec.write_text(text.replace("variants:\n", f"variants:\n  {name!r}: {{seed: 3}}\n", 1))
        result = CliRunner().invoke(app, ["validate", str(spec)])
        assert result.exit_code == 2, result.output
    with contextlib.suppress(SpecError):
        expand_runs(spec)
    assert not (tmp_path / "elsewhere").exists()
