"""Model references: the tiny model's determinism and cache, random shapes, hub errors."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftlab.runner import builds, models, tiny


def _digest(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


@pytest.fixture
def short_pretraining(monkeypatch) -> None:
    """tiny's recipe with 2 pretraining steps: a different (cheap) build, same code path."""
    monkeypatch.setitem(
        models.TINY_RECIPE, "pretrain", dict(models.TINY_RECIPE["pretrain"], steps=2)
    )


SHORT = "from ftlab.runner import models; models.TINY_RECIPE['pretrain']['steps'] = 2; "


def test_tiny_is_deterministic_and_cached(tmp_path: Path, monkeypatch, short_pretraining) -> None:
    monkeypatch.setenv("FTLAB_CACHE", str(tmp_path / "one"))
    first = models.resolve("tiny")
    monkeypatch.setenv("FTLAB_CACHE", str(tmp_path))
    second = models.resolve("tiny")
    assert Path(second.path).parent == tmp_path / "models"
    assert _digest(Path(first.path)) == _digest(Path(second.path))
    assert (Path(second.path) / "tokenizer.json").read_bytes() == (
        Path(first.path) / "tokenizer.json"
    ).read_bytes()
    assert first.identity == second.identity
    mtime = (Path(second.path) / "model.safetensors").stat().st_mtime
    assert models.resolve("tiny").path == second.path  # reused, not rebuilt
    assert (Path(second.path) / "model.safetensors").stat().st_mtime == mtime


def test_tiny_rebuilt_when_recipe_changes(tmp_path: Path, monkeypatch, short_pretraining) -> None:
    monkeypatch.setenv("FTLAB_CACHE", str(tmp_path))
    old = models.resolve("tiny")
    monkeypatch.setitem(models.TINY_RECIPE, "seed", 999)
    new = models.resolve("tiny")
    assert new.path != old.path and new.identity != old.identity
    assert _digest(Path(new.path)) != _digest(Path(old.path))


def test_the_shipped_tiny_is_the_current_recipe_s(tmp_path: Path, monkeypatch, capfd) -> None:
    """The package ships tiny's weights (issue 18: the quickstart's first use copies them
    instead of pretraining for 80 s). A recipe or corpus change without re-shipping fails
    here, with the command that fixes it; a first use copies the files byte for byte."""
    assert tiny.shipped_problem() == ""
    monkeypatch.setenv("FTLAB_CACHE", str(tmp_path))
    built = models.ensure_tiny()
    for name in json.loads((tiny.SHIPPED / tiny.MANIFEST).read_text())["files"]:
        assert (built / name).read_bytes() == (tiny.SHIPPED / name).read_bytes()
    assert "building the tiny model" not in capfd.readouterr().err


def test_a_damaged_or_stale_shipped_tiny_is_not_used(tmp_path: Path, monkeypatch) -> None:
    copy = tmp_path / "tiny"
    shutil.copytree(tiny.SHIPPED, copy)
    assert tiny.shipped_problem(copy) == ""
    with (copy / "model.safetensors").open("r+b") as f:  # one flipped byte
        f.seek(4096)
        byte = f.read(1)
        f.seek(4096)
        f.write(bytes([byte[0] ^ 1]))
    assert "model.safetensors is missing or its sha256 differs" in tiny.shipped_problem(copy)
    (copy / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\n")
    assert "sha256 differs" in tiny.shipped_problem(copy)
    monkeypatch.setitem(models.TINY_RECIPE, "seed", 999)
    problem = tiny.shipped_problem(tiny.SHIPPED)
    assert "the recipe is now" in problem and "python -m ftlab.runner.tiny" in problem


@pytest.mark.slow
@pytest.mark.integration
def test_the_shipped_tiny_is_what_its_recipe_builds(tmp_path: Path, monkeypatch) -> None:
    """Rebuilt from the recipe (80 s): the same tensors as the shipped file — bit for bit
    here; within float noise on a CPU whose kernels sum in another order."""
    import torch
    from safetensors.torch import load_file

    monkeypatch.setenv("FTLAB_CACHE", str(tmp_path))
    monkeypatch.setenv("FTLAB_TINY_BUILD", "1")
    built = load_file(str(models.ensure_tiny() / "model.safetensors"))
    shipped = load_file(str(tiny.SHIPPED / "model.safetensors"))
    assert built.keys() == shipped.keys()
    for name, tensor in shipped.items():
        torch.testing.assert_close(built[name], tensor, rtol=1e-4, atol=1e-5, msg=name)


def test_tiny_has_chat_template_and_few_million_params() -> None:
    from transformers import AutoConfig

    ref = models.resolve("tiny")
    tok = models.load_tokenizer(ref)
    text = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text.endswith("<|im_start|>assistant\n")
    assert "{% generation %}" in tok.chat_template
    cfg = AutoConfig.from_pretrained(ref.path)
    assert cfg.model_type == "llama"
    assert 1_000_000 < models.meta_param_count(cfg) < 10_000_000


def test_random_shape_config_has_real_sizes() -> None:
    cfg = models.random_config("qwen2-0.5b")
    assert cfg.model_type == "qwen2" and cfg.hidden_size == 896
    assert 400e6 < models.meta_param_count(cfg) < 600e6
    with pytest.raises(models.ModelError, match="Did you mean 'llama-1b'"):
        models.resolve("random:llama-1bb")


def test_hub_id_unreachable_fails_fast(monkeypatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")
    start = time.time()
    with pytest.raises(models.ModelError, match="use model: tiny|Use model: tiny"):
        models.resolve("some-org/some-model")
    assert time.time() - start < 10


def test_missing_local_dir_is_clear(tmp_path: Path) -> None:
    with pytest.raises(models.ModelError, match="does not exist"):
        models.resolve(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(models.ModelError, match="no config.json"):
        models.resolve(str(tmp_path / "empty"))


def _start_build(cache: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """A process building the tiny model into `cache`, and its temp folder once made."""
    before = set((cache / "models").glob("tiny-*.*"))
    proc = subprocess.Popen(
        [sys.executable, "-c", SHORT + "models.ensure_tiny()"],
        env={**os.environ, "FTLAB_CACHE": str(cache)},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        new = set((cache / "models").glob("tiny-*.*")) - before
        if new:
            return proc, new.pop()
        time.sleep(0.005)
    proc.kill()
    raise AssertionError("the build never made its temp folder")


def test_a_killed_build_leaves_no_temp_folder_behind(
    tmp_path: Path, monkeypatch, capfd, short_pretraining
) -> None:
    """Issue 15.11: a build killed half-way leaves `models/tiny-….xxxx/`; the next build
    removes it, and an old one without an owner, but never the folder of a build still
    running in another process (here: paused, so its build lock is waited for, then built
    beside)."""
    monkeypatch.setattr(builds, "BUILD_WAIT_S", 1.0)
    dead_proc, dead = _start_build(tmp_path)
    dead_proc.send_signal(signal.SIGKILL)
    dead_proc.wait()
    paused, live = _start_build(tmp_path)
    paused.send_signal(signal.SIGSTOP)
    try:
        orphan = tmp_path / "models" / f"tiny-{models.tiny_recipe_hash()}.k1ll3d00"
        orphan.mkdir()
        two_hours_ago = time.time() - 2 * 3600
        os.utime(orphan, (two_hours_ago, two_hours_ago))
        monkeypatch.setenv("FTLAB_CACHE", str(tmp_path))
        built = models.ensure_tiny()
        assert (built / "READY").is_file()
        assert not dead.exists() and not orphan.exists()
        assert live.exists()  # its builder is alive
        assert "waiting for another process building tiny-" in capfd.readouterr().err
    finally:
        paused.send_signal(signal.SIGKILL)
        paused.wait()
    models.ensure_tiny()  # already built: still tidies up after the builder that died
    assert not live.exists()
    left = {p.name for p in (tmp_path / "models").iterdir()}
    assert left == {built.name, ".locks", f"tiny-tokenizer-{models.tiny_recipe_hash()}"}
