"""Shared fixtures. The embedded tiny model is built once per session into a temp cache."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "experiments"
DATA = EXPERIMENTS / "data"


def pytest_configure(config: pytest.Config) -> None:
    # Tests never touch the user's cache; one tiny model per session.
    if "FTLAB_TEST_CACHE" not in os.environ:
        os.environ["FTLAB_TEST_CACHE"] = str(ROOT / ".pytest_cache" / "ftlab-cache")
    os.environ["FTLAB_CACHE"] = os.environ["FTLAB_TEST_CACHE"]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    skip = pytest.mark.skip(reason="needs CUDA (run `make gpu-test` on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords and not cuda:
            item.add_marker(skip)


@pytest.fixture
def write(tmp_path: Path, sft_data: Path):
    """Write a text file under tmp_path (which has data/support_sft.jsonl); return its path."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    return _write


@pytest.fixture
def sft_data(tmp_path: Path) -> Path:
    """A copy of the shipped SFT data next to tmp specs (data paths are spec-relative)."""
    target = tmp_path / "data"
    target.mkdir(exist_ok=True)
    shutil.copy(DATA / "support_sft.jsonl", target / "support_sft.jsonl")
    return target / "support_sft.jsonl"


@pytest.fixture(scope="session")
def sft_model(tmp_path_factory):
    """The tiny model after a short full SFT on the support conversations: it writes
    support-like replies, so rewards differ between its samples (the random tiny model's
    samples are noise, which no reward can be raised from in a few steps)."""
    from ftlab.runner.methods import METHODS
    from ftlab.runner.spec.schema import Spec

    from .helpers import stage_ctx

    spec = Spec.model_validate(
        {
            "name": "sft",
            "data": {"sft": {"path": str(DATA / "support_sft.jsonl"), "val_fraction": 0.0}},
            "stages": [
                {
                    "name": "sft",
                    "method": "full",
                    "train": {
                        "learning_rate": 2e-3,
                        "epochs": 2,
                        "batch_size": 8,
                        "max_length": 128,
                        "precision": "fp32",
                        "save_steps": 10_000,
                    },
                }
            ],
        }
    )
    ctx = stage_ctx(spec, spec.stages[0], "sft", tmp_path_factory.mktemp("sft_full"))
    return METHODS.get("full").train(ctx).artifact


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.fail(
        "the report test needs a Chromium binary: `make services` installs Debian's "
        "chromium (as root), or `apt-get install chromium`"
    )


def wait_for(what: Any, timeout: float = 300.0) -> Any:
    """Poll `what()` until it returns something truthy (then that), or fail."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = what()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def mlflow_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A real `mlflow server` on 127.0.0.1 (its own SQLite store and artifact folder)."""
    import urllib.request

    port = _free_port()
    store = tmp_path / "mlflow-server"
    store.mkdir()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{store / 'mlflow.db'}",
            "--artifacts-destination",
            str(store / "artifacts"),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(store / "server.log").open("w"),
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(base + "/health", timeout=2):  # noqa: S310
                return True
        except OSError:
            assert proc.poll() is None, (store / "server.log").read_text()[-2000:]
            return False

    wait_for(up, timeout=120)
    yield base
    proc.terminate()
    proc.wait(timeout=30)
