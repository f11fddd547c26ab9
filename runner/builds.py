"""Build something once into the cache (a model folder): atomically, one builder at a time.

A build writes a temp folder and renames it into place with a READY file; concurrent first
uses wait for the builder's lock; folders left by killed builders are removed.
"""

from __future__ import annotations

import fcntl
import glob
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# A build's temp folder is `<target>.build-<host>-<pid>.<random>`: a kill mid-build leaves
# it, and the next resolve removes it once that builder is gone. Folders of older ftlab
# versions (`<target>.<random>`) name no builder: removed once this old.
ORPHAN_BUILD_S = 3600.0
# A first use waits this long for another process building the same model (a lock), then
# builds beside it (a builder stopped with Ctrl-Z would otherwise hold it forever).
BUILD_WAIT_S = 300.0
FOREIGN_BUILD_S = 24 * 3600.0  # another host's build (a shared cache): its pid means nothing here


def atomic_build(target: Path, build: Callable[[Path], object]) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_builds(target)
    if (target / "READY").is_file():
        return target
    locks = target.parent / ".locks"
    locks.mkdir(exist_ok=True)
    with open(locks / f"{target.name}.lock", "w") as lock:
        deadline, told = time.monotonic() + BUILD_WAIT_S, False
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:  # a stopped builder: build beside it
                    break
                if not told:
                    print(
                        f"waiting for another process building {target.name} ...", file=sys.stderr
                    )
                    told = True
                time.sleep(0.5)
        return _build_locked(target, build)


def _build_locked(target: Path, build: Callable[[Path], object]) -> Path:
    _remove_dead_builds(target)
    if (target / "READY").is_file():  # built while we waited
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f"{target.name}.{_builder()}.", dir=target.parent))
    try:
        build(tmp)
        (tmp / "READY").write_text("ok\n")
        try:
            os.replace(tmp, target)
        except OSError:  # another process built it first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "", socket.gethostname())[:40]


def _builder() -> str:
    return f"build-{_host()}-{os.getpid()}"


def _remove_dead_builds(target: Path) -> None:
    """Delete the temp folders of builds of `target` that died; never a running one's."""
    from ftlab.runner.rundir import pid_alive

    ours = re.compile(rf"{re.escape(target.name)}\.build-(?P<host>[A-Za-z0-9-]*)-(?P<pid>\d+)\..+")
    older = re.compile(rf"{re.escape(target.name)}\.[a-z0-9_]{{8}}")
    for folder in target.parent.glob(f"{glob.escape(target.name)}.*"):
        try:
            age = time.time() - folder.stat().st_mtime
        except FileNotFoundError:
            continue  # renamed into place or removed meanwhile
        if match := ours.fullmatch(folder.name):
            here = match["host"] == _host()
            dead = not pid_alive(int(match["pid"])) if here else age > FOREIGN_BUILD_S
        else:
            dead = bool(older.fullmatch(folder.name)) and age > ORPHAN_BUILD_S
        if dead and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
