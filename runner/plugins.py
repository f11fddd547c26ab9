"""Users' own plugins: methods, eval kinds and reward functions outside ftlab's packages.

A spec's `plugins:` lists Python files (relative to the spec) or importable module names,
as Axolotl's `plugins:` does; importing one runs its decorators (`METHODS.register`,
`EVALS.register`, `@reward`), so every process that loads the spec — `ftlab run`, each
torchrun rank, each sweep worker, `ftlab eval` later — has them. A file is executed once
per content: a second run, variant or trial that names it finds its plugins registered;
an edited file is executed again and replaces them. The files' contents are part of every
stage hash and eval identity (`fingerprint`), so an edited plugin never reuses a result.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path

_LOADED: dict[Path, str] = {}  # file → sha256 of the content executed


def is_file(entry: str) -> bool:
    return entry.endswith(".py") or "/" in entry


def load_file(file: Path, *, prefix: str = "ftlab_plugin") -> None:
    """Execute a Python file as a module (once per content)."""
    file = file.expanduser().resolve()
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


def fingerprint(entries: list[str]) -> str:
    """A hash of the plugins' code ('' without plugins: older hashes stay as they were)."""
    if not entries:
        return ""
    h = hashlib.sha256()
    for entry in entries:
        path = Path(entry) if is_file(entry) else _module_file(entry)
        h.update(entry.encode())
        h.update(path.read_bytes() if path is not None and path.is_file() else b"")
    return h.hexdigest()[:16]


def _module_file(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    return Path(spec.origin) if spec and spec.origin else None
