"""The code's shape, checked (issue 17): the command line is one layer above the four
packages, the packages import each other only along the documented edges, modules stay
under ~500 lines and functions under ~60 unless they are a linear recipe (named here,
with the reason), and the tests cover every registered plugin."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from .conftest import ROOT

PACKAGES = ("cli", "runner", "evals", "sweeps", "reports")
# Cross-package imports below the CLI (see docs/architecture.md). Two cycles remain and
# are confined to these modules: evals use four leaf modules of runner (the registry,
# the row formatting they share with training, the pad-token rule, the progress display),
# and a run indexes itself in DuckDB when it ends (runner.execute → reports.store → runner.rundir).
ALLOWED = {
    ("runner", "evals"): None,  # the runner runs evals: any module
    ("sweeps", "runner"): None,
    ("sweeps", "evals"): None,
    ("evals", "reports"): {"ftlab.reports.stats"},
    ("evals", "runner"): {
        "ftlab.runner.registry",
        "ftlab.runner.data",
        "ftlab.runner.models",
        "ftlab.runner.progress",
    },
    ("reports", "runner"): {"ftlab.runner.rundir"},
    ("runner", "reports"): {"ftlab.reports.store"},
}
MAX_MODULE = 500
MAX_FUNCTION = 60
# Linear recipes: one pass from top to bottom, each step a line or two (splitting them
# would scatter one procedure over helpers used once).
RECIPES = {
    "runner/methods/ppo.py:train_ppo": "load, roll out, score, step, log, save",
    "runner/methods/ppo.py:_ppo_step": "the PPO update, as in the paper's pseudo-code",
    "runner/methods/refcache.py:with_reference_cache": "compute reference log-probs once",
    "runner/methods/online.py:train_online": "check, load, configure trl, train, summarise",
}


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.count(".") == 1:  # `from ftlab.reports import store`: the module
                out += [f"{node.module}.{a.name}" for a in node.names]
            else:
                out.append(node.module)
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names]
    return [m for m in out if m.startswith("ftlab.")]


def test_packages_import_each_other_only_along_the_documented_edges() -> None:
    found: dict[tuple[str, str], set[str]] = defaultdict(set)
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            for module in _imports(path):
                target = module.split(".")[1]
                if target != pkg:
                    found[(pkg, target)].add(module)
    wrong = []
    for (src, dst), modules in sorted(found.items()):
        if src == "cli":
            continue  # the command line sits above everything
        allowed = ALLOWED.get((src, dst), set())
        if allowed is not None and modules - allowed:
            wrong.append(f"{src} → {', '.join(sorted(modules - allowed))}")
    assert not wrong, "imports outside docs/architecture.md's layering: " + "; ".join(wrong)


def test_modules_and_functions_stay_small() -> None:
    big, long = [], []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            source = path.read_text()
            rel = path.relative_to(ROOT).as_posix()
            if len(source.splitlines()) > MAX_MODULE:
                big.append(f"{rel} ({len(source.splitlines())} lines)")
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    # the body: a command's typed options are declarations, not logic
                    lines = (node.end_lineno or node.lineno) - node.body[0].lineno + 1
                    if lines > MAX_FUNCTION and f"{rel}:{node.name}" not in RECIPES:
                        long.append(f"{rel}:{node.name} ({lines} lines)")
    assert not big and not long, f"modules: {big}; functions: {long}"


def test_every_registered_plugin_is_exercised_by_a_test() -> None:
    """A method or eval kind nobody tests is found here, not by a user."""
    from ftlab.evals import EVALS
    from ftlab.runner.methods import METHODS

    tests = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    untested = [
        name
        for name in [*METHODS.names(), *EVALS.names()]
        if not any(f in tests for f in (f'"{name}"', f"'{name}'", f": {name}", name.upper()))
    ]
    assert not untested, f"registered but never named in a test: {untested}"
