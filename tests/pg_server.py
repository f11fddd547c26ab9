"""A real PostgreSQL server on 127.0.0.1 for sweep tests: Debian's postgresql package
(`.ci/run` installs it when missing), a fresh cluster in a temp folder, run as the
`postgres` system user (initdb refuses root)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    def __init__(self) -> None:
        bindir = binaries()
        if bindir is None:
            raise RuntimeError(
                "PostgreSQL server binaries not found: `apt-get install postgresql` "
                "(.ci/run does this on a fresh machine)"
            )
        self.bin = bindir
        # its own folder: pytest's temp folders are private to root, and postgres runs as
        # the postgres user when we are root
        root = self.root = Path(tempfile.mkdtemp(prefix="ftlab-pg-"))
        self.data = root / "pgdata"
        self.port = _free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(root, "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "ftlab")
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(root / "pg.log"),
            "-o",
            f"-p {self.port} -k {root} -c listen_addresses=127.0.0.1",
            "-w",
            "start",
        )
        for _ in range(50):
            ok = subprocess.run(
                [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
            )
            if ok.returncode == 0:
                break
            time.sleep(0.2)
        self._run(
            str(self.bin / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "ftlab",
            "sweeps",
        )
        self.url = f"postgresql://ftlab@127.0.0.1:{self.port}/sweeps"

    def _run(self, *cmd: str) -> None:
        subprocess.run([*self.as_user, *cmd], check=True, capture_output=True)

    def stop(self) -> None:
        subprocess.run(
            [*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"],
            capture_output=True,
        )
        shutil.rmtree(self.root, ignore_errors=True)
