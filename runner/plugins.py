"""Users' own plugins: methods, eval kinds and reward functions outside ftlab's packages.

A spec's `plugins:` lists Python files (relative to the spec) or importable module names,
as Axolotl's `plugins:` does; importing one runs its decorators (`METHODS.register`,
`EVALS.register`, `@reward`), so every process that loads the spec — `ftlab run`, each
torchrun rank, each sweep worker, `ftlab eval` later — has them. A file is executed once
per content: a second run, variant or trial that names it finds its plugins registered;
an edited file is executed again and replaces them. The file that defines a stage's
method, an eval's kind or a reward function enters that stage's hash or that eval's
cache key (`code_hash`), so an edited plugin never reuses a result, and an edit to an
eval kind does not retrain the stages.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path

from ftlab.runner.spec.datapath import user_path

_LOADED: dict[Path, str] = {}  # file → sha256 of the content executed


def is_file(entry: str) -> bool:
    return entry.endswith(".py") or "/" in entry


def load_file(file: Path, *, prefix: str = "ftlab_plugin") -> None:
    """Execute a Python file as a module (once per content)."""
    file = user_path(file).resolve()
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist (paths are relative to the spec file)")
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    if _LOADED.get(file) == digest:
        return
    name = f"{prefix}_{hashlib.sha256(str(file).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    _LOADED[file] = digest


def load(entries: list[str]) -> None:
    """Import each plugin: a file path (absolute, as the loader anchors them) or a module."""
    for entry in entries:
        if is_file(entry):
            load_file(Path(entry))
        else:
            importlib.import_module(entry)


def code_hash(obj: object) -> str:
    """A hash of the file that defines a method, eval kind or reward function, when it is
    not one of ftlab's own ('' for those: their hashes stay as they were)."""
    cls = (
        obj
        if isinstance(obj, type) or callable(obj) and not hasattr(obj, "__dict__")
        else type(obj)
    )
    module = sys.modules.get(getattr(obj, "__module__", None) or cls.__module__)
    name = getattr(module, "__name__", "")
    file = getattr(module, "__file__", None)
    if name.startswith("ftlab.") or not file or not Path(file).is_file():
        return ""
    return hashlib.sha256(Path(file).read_bytes()).hexdigest()[:16]
