"""QLoRA gradients on the CPU (issue 16). bitsandbytes warns that `gemv_4bit` has no
autograd kernel registered ("may lead to silently incorrect behavior"). Checked here: the
LoRA gradients through the 4-bit model equal those of the same LoRA on a float model
holding the dequantised weights, batch size 1 included."""

from __future__ import annotations

import pytest
import torch

from ftlab.runner import models

from .conftest import DATA


def _lora_models() -> tuple[torch.nn.Module, torch.nn.Module]:
    import bitsandbytes as bnb
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    ref = models.resolve("tiny")
    quant = AutoModelForCausalLM.from_pretrained(
        ref.path,
        quantization_config=BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32,
        ),
        device_map={"": "cpu"},
        dtype=torch.float32,
    )
    dense = AutoModelForCausalLM.from_pretrained(ref.path, dtype=torch.float32)
    dense_modules = dict(dense.named_modules())
    for name, module in quant.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            w = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state)
            dense_modules[name].weight.data.copy_(w.to(torch.float32))
    config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear")
    torch.manual_seed(0)
    quant = get_peft_model(quant, config)
    dense = get_peft_model(dense, config)
    lora = {n: p for n, p in quant.named_parameters() if p.requires_grad}
    for n, p in dense.named_parameters():
        if p.requires_grad:
            p.data.copy_(lora[n].data)
            if "lora_B" in n:  # B starts at zero; make it non-zero so A's gradient is too
                torch.manual_seed(len(n))
                p.data.normal_(0, 0.02)
                lora[n].data.copy_(p.data)
    return quant, dense


@pytest.mark.parametrize("batch", [1, 4])
def test_qlora_gradients_equal_lora_on_the_dequantised_weights(batch: int) -> None:
    quant, dense = _lora_models()
    tok = models.load_tokenizer(models.resolve("tiny"))
    texts = [line[:300] for line in (DATA / "support_sft.jsonl").read_text().splitlines()[:batch]]
    enc = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=64)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    losses = []
    for model in (quant, dense):
        model.train()
        out = model(**enc, labels=labels)
        out.loss.backward()
        losses.append(float(out.loss))
    assert losses[0] == pytest.approx(losses[1], abs=1e-3)
    grads_q = {n: p.grad for n, p in quant.named_parameters() if p.requires_grad}
    worst = 0.0
    for n, p in dense.named_parameters():
        if not p.requires_grad:
            continue
        g_q, g_d = grads_q[n], p.grad
        assert g_q is not None and g_d is not None, n
        scale = float(g_d.abs().max()) or 1.0
        worst = max(worst, float((g_q - g_d).abs().max()) / scale)
    print(f"batch {batch}: loss {losses}, worst relative LoRA-gradient difference {worst:.2e}")
    assert worst < 2e-2, worst  # 4-bit arithmetic, not wrong gradients


def test_single_vector_path_gemv_4bit_backpropagates_right() -> None:
    """The warning names `gemv_4bit`, the path bitsandbytes takes for one input vector
    (batch 1, one token): the input and LoRA gradients through it equal the float ones."""
    quant, dense = _lora_models()
    name = "base_model.model.model.layers.0.mlp.down_proj"
    q_layer, d_layer = dict(quant.named_modules())[name], dict(dense.named_modules())[name]
    x = torch.randn(1, 1, q_layer.in_features, generator=torch.Generator().manual_seed(1))
    grads = []
    for layer in (q_layer, d_layer):
        xi = x.clone().requires_grad_(True)
        (layer(xi) ** 2).sum().backward()
        b = next(p for n, p in layer.named_parameters() if "lora_A" in n)
        grads.append((xi.grad.clone(), b.grad.clone()))
    for g_q, g_d in zip(grads[0], grads[1], strict=True):
        assert float((g_q - g_d).abs().max()) <= 1e-4 * (float(g_d.abs().max()) or 1.0)
