"""Loading a stage's artifact back: an adapter on its base, or full weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def load_artifact(path: str | Path, *, dtype: str = "float32") -> tuple[Any, Any]:
    """(model, tokenizer) from an artifact folder written by a stage.

    A QLoRA adapter is loaded on its base quantised the same way it was trained.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    meta = json.loads((path / "ftlab_artifact.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch_dtype = getattr(torch, dtype)
    if meta["kind"] == "full":
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype), tokenizer
    from peft import PeftModel

    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    quant = meta.get("quantization")
    if quant:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(**quant)
        if not torch.cuda.is_available():
            kwargs["device_map"] = {"": "cpu"}
    base = AutoModelForCausalLM.from_pretrained(meta["base"], **kwargs)
    if quant:
        no_cpu_repacking(base)
    return PeftModel.from_pretrained(base, path), tokenizer


def no_cpu_repacking(model: Any) -> None:
    """Keep bitsandbytes' 4-bit layout as trained. On AVX512-BF16 CPUs it repacks 4-bit
    weights for inference at the first eval-mode, no-grad forward (the trainer's
    evaluation) and keeps that layout; its kernel has no backward, so training after it
    silently lost the gradient through the frozen weights (tests/test_qlora_grads.py),
    and a reloaded QLoRA model computed other logits than the trained one."""
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            setattr(module, "support_avx512bf16_for_cpu", False)  # noqa: B010
