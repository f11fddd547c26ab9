"""One cache for what ftlab computes once and reuses, under `<output.dir>/cache/<namespace>/`.

A namespace (stages, evals, generations, pruned, reflogps, the judge's calls) has a
version, bumped when what it stores changes meaning; a key is the hash of the namespace,
its version and the parts that determine the value (or a hash the caller already has,
such as a stage hash). Entries are written atomically. `output.reuse: false` turns every
namespace off: nothing is read (entries are still written, for later runs).
`ftlab cache ls | clear` shows and removes them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftlab.runner.rundir import read_json, write_json


@dataclass(frozen=True)
class Cache:
    root: Path  # <output.dir>/cache
    namespace: str
    version: int
    enabled: bool = True  # False: `get` finds nothing (output.reuse: false)

    @classmethod
    def of(cls, spec: Any, namespace: str, version: int) -> Cache:
        return cls(Path(spec.output.dir) / "cache", namespace, version, spec.output.reuse)

    @property
    def folder(self) -> Path:
        return self.root / self.namespace

    def key(self, *parts: Any) -> str:
        blob = json.dumps([self.namespace, self.version, *parts], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def get(self, key: str) -> Any | None:
        return read_json(self.path(key)) if self.enabled else None

    def put(self, key: str, value: Any) -> None:
        write_json(self.path(key), value)


@dataclass(frozen=True)
class Usage:
    namespace: str
    entries: int
    bytes: int
    oldest: float | None  # modification time of the oldest entry


def usage(root: Path) -> list[Usage]:
    """Entries and size per namespace under `root` (<output.dir>/cache)."""
    out = []
    for folder in sorted(p for p in root.glob("*") if p.is_dir()):
        files = [f for f in folder.rglob("*") if f.is_file()]
        out.append(
            Usage(
                folder.name,
                len(files),
                sum(f.stat().st_size for f in files),
                min((f.stat().st_mtime for f in files), default=None),
            )
        )
    return out


def clear(root: Path, *, namespace: str = "", older_than_days: float = 0.0) -> tuple[int, int]:
    """Remove entries (of one namespace, or all; only those older than N days when given):
    (files removed, bytes freed)."""
    cutoff = time.time() - older_than_days * 86400
    removed = freed = 0
    for folder in sorted(p for p in root.glob("*") if p.is_dir()):
        if namespace and folder.name != namespace:
            continue
        for f in [f for f in folder.rglob("*") if f.is_file()]:
            stat = f.stat()
            if older_than_days and stat.st_mtime > cutoff:
                continue
            f.unlink()
            removed, freed = removed + 1, freed + stat.st_size
        if not older_than_days:
            shutil.rmtree(folder, ignore_errors=True)
    return removed, freed
