"""The embedded tiny model's weights: shipped with the package, built from the recipe.

`tiny` is defined by its recipe (`models.TINY_RECIPE`, the corpus in assets/, the chat
template): `build` pretrains it deterministically, about 80 s on 2 CPU cores. The
package ships that result in assets/tiny/ with a manifest (the recipe hash it was built
from and each file's sha256), so a first use copies files instead of training:

    python -m ftlab.runner.tiny          # rebuild assets/tiny/ after a recipe change

`install` (the cache builder behind `models.ensure_tiny`) copies the shipped files when
the manifest names the current recipe hash and every file's hash matches; otherwise (a
changed recipe or corpus, a damaged file, a git-lfs pointer) it says why and builds.
`FTLAB_TINY_BUILD=1` always builds (the test that the shipped files are the recipe's).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from ftlab.runner import models

SHIPPED = models.ASSETS / "tiny"
MANIFEST = "manifest.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def shipped_problem(folder: Path = SHIPPED) -> str:
    """Why the shipped files cannot stand for the current recipe ('' when they can)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        return f"no readable {folder / MANIFEST} ({e})"
    if manifest.get("recipe_hash") != models.tiny_recipe_hash():
        return (
            f"they were built from recipe {manifest.get('recipe_hash')}, the recipe is now "
            f"{models.tiny_recipe_hash()} (run `python -m ftlab.runner.tiny` to ship the new one)"
        )
    for name, digest in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file() or _sha256(path) != digest:
            return f"{path} is missing or its sha256 differs from the manifest's"
    return ""


def install(out: Path) -> None:
    """Fill `out` (a cache folder) with tiny: the shipped files if sound, else a build."""
    problem = "FTLAB_TINY_BUILD is set" if os.environ.get("FTLAB_TINY_BUILD") else ""
    problem = problem or shipped_problem()
    if not problem:
        manifest = json.loads((SHIPPED / MANIFEST).read_text())
        for name in manifest["files"]:
            shutil.copyfile(SHIPPED / name, out / name)
        return
    print(f"building the tiny model instead of using the shipped one: {problem}", file=sys.stderr)
    build(out)


def build(out: Path) -> None:
    """Pretrain tiny from its recipe into `out` (deterministic for a given torch and CPU)."""
    import torch
    from transformers import AutoModelForCausalLM

    recipe = models.TINY_RECIPE
    tokenizer = models.tiny_tokenizer()
    cfg = dict(recipe["config"], vocab_size=len(tokenizer))
    config = models.llama_like("llama", cfg, tokenizer)
    torch.manual_seed(recipe["seed"])
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    _pretrain(model, tokenizer, recipe["pretrain"], seed=recipe["seed"])
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "ftlab_recipe.json").write_text(json.dumps(recipe, indent=2))


def _pretrain(model: Any, tokenizer: Any, recipe: dict[str, Any], *, seed: int) -> None:
    """Causal-LM pretraining on the shipped corpus: a plain, seeded torch loop."""
    import math

    import torch

    from ftlab.runner.progress import Bar

    text = (models.ASSETS / "tiny_corpus.txt").read_text(encoding="utf-8")
    ids: list[int] = []
    for doc in text.split("\n\n"):
        ids += tokenizer(doc.strip(), add_special_tokens=False)["input_ids"]
        ids.append(tokenizer.bos_token_id)
    window = recipe["seq_len"]
    data = torch.tensor(ids[: len(ids) // window * window]).view(-1, window)
    steps, warmup = recipe["steps"], recipe["warmup_steps"]
    opt = torch.optim.AdamW(
        model.parameters(), lr=recipe["learning_rate"], weight_decay=recipe["weight_decay"]
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            (s + 1) / warmup
            if s < warmup
            else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (steps - warmup)))
        ),
    )
    order = torch.Generator().manual_seed(seed)
    model.train()
    bar = Bar(steps, "building the tiny model (once): pretraining")
    for _ in range(steps):
        batch = data[torch.randint(0, len(data), (recipe["batch_size"],), generator=order)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        bar.set_postfix({"loss": f"{loss.item():.3f}"})
        bar.update()
    bar.close()
    model.eval()


def ship(folder: Path = SHIPPED) -> None:
    """Build tiny and write it, with its manifest, to `folder` (the package's assets)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp))
        if folder.exists():
            shutil.rmtree(folder)
        shutil.copytree(tmp, folder)
    files = {p.name: _sha256(p) for p in sorted(folder.iterdir()) if p.name != MANIFEST}
    manifest = {"recipe_hash": models.tiny_recipe_hash(), "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {folder} ({sum((folder / n).stat().st_size for n in files) >> 10} KiB)")


if __name__ == "__main__":
    ship()
