"""Model references: the embedded `tiny` model, random-init real shapes, local dirs, hub ids.

`tiny` is a small Llama (about 2.4M parameters) with a byte-level BPE tokenizer trained on
the text shipped in `assets/tiny_corpus.txt`, pretrained on that same text (support
transcripts in plain text, written by `experiments/data/generate.py`), and a ChatML chat
template with `{% generation %}` markers (so assistant-only loss works). It is built
deterministically from its recipe (about 80 s on 2 CPU cores); the package ships the
result with a hash check (`tiny.py`), so a first use only copies it into `$FTLAB_CACHE`
(default `~/.cache/ftlab`). A changed recipe or corpus gets a new cache folder and is
built there. Concurrent first uses wait for one build.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ftlab.runner.builds import atomic_build
from ftlab.runner.registry import did_you_mean
from ftlab.runner.spec.datapath import user_path

ASSETS = Path(__file__).resolve().parent / "assets"

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}{{- '\n' }}"
    "{%- else %}{{- message['content'] + '<|im_end|>' + '\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]

TINY_RECIPE: dict[str, Any] = {
    "version": 2,
    "seed": 1234,
    "vocab_size": 2048,
    "architecture": "llama",
    "config": {
        "hidden_size": 192,
        "intermediate_size": 512,
        "num_hidden_layers": 4,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "tie_word_embeddings": False,
        "rms_norm_eps": 1e-5,
    },
    # causal-LM pretraining on the corpus (documents joined by <|endoftext|>, cut into
    # windows); measured: loss 7.7 -> ~0.5, about 80 s on 2 CPU cores
    "pretrain": {
        "steps": 150,
        "batch_size": 16,
        "seq_len": 256,
        "learning_rate": 3e-3,
        "warmup_steps": 8,
        "weight_decay": 0.01,
    },
}

# Shapes of real models, for random-init benchmarks and GPU tests (no download).
RANDOM_SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama-tiny": ("llama", dict(TINY_RECIPE["config"], vocab_size=2048)),
    "smollm2-135m": (
        "llama",
        dict(
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            vocab_size=49152,
            tie_word_embeddings=True,
        ),
    ),
    "qwen2-0.5b": (
        "qwen2",
        dict(
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            vocab_size=151936,
            tie_word_embeddings=True,
        ),
    ),
    "llama-1b": (
        "llama",
        dict(
            hidden_size=2048,
            intermediate_size=8192,
            num_hidden_layers=16,
            num_attention_heads=32,
            num_key_value_heads=8,
            vocab_size=128256,
            tie_word_embeddings=True,
        ),
    ),
    "llama-7b": (
        "llama",
        dict(
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            vocab_size=32000,
            tie_word_embeddings=False,
        ),
    ),
    # Llama 3 70B's shape: for `ftlab plan` (a meta-device model); training it would first
    # write ~141 GB of random bf16 weights into the cache.
    "llama-70b": (
        "llama",
        dict(
            hidden_size=8192,
            intermediate_size=28672,
            num_hidden_layers=80,
            num_attention_heads=64,
            num_key_value_heads=8,
            vocab_size=128256,
            tie_word_embeddings=False,
        ),
    ),
}


class ModelError(Exception):
    """A model reference that cannot be resolved; the message says what to use instead."""


@dataclass(frozen=True)
class ModelRef:
    """A resolved model reference."""

    name: str  # as written in the spec
    kind: str  # tiny | random | local | hub
    path: str  # directory for tiny/random/local, hub id for hub
    identity: str  # content identity, part of every stage hash
    revision: str = "main"


def cache_dir() -> Path:
    return Path(os.environ.get("FTLAB_CACHE") or Path.home() / ".cache" / "ftlab")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tiny_recipe_hash() -> str:
    corpus = (ASSETS / "tiny_corpus.txt").read_bytes()
    recipe = json.dumps(TINY_RECIPE, sort_keys=True).encode() + CHAT_TEMPLATE.encode()
    return _sha(recipe + _sha(corpus).encode())[:16]


def resolve(name: str, *, revision: str = "main", seed: int = 42) -> ModelRef:
    """Resolve a spec's model name; builds `tiny`/`random:` on first use, never downloads."""
    if name == "tiny":
        path = ensure_tiny()
        return ModelRef(name, "tiny", str(path), f"tiny:{tiny_recipe_hash()}")
    if name.startswith("random:"):
        shape = name.split(":", 1)[1]
        if shape not in RANDOM_SHAPES:
            hint = did_you_mean(shape, list(RANDOM_SHAPES))
            raise ModelError(
                f"unknown random-init shape '{shape}'.{hint}"
                f" Available: {', '.join(sorted(RANDOM_SHAPES))}"
            )
        path = ensure_random(shape, seed=seed)
        return ModelRef(name, "random", str(path), f"random:{shape}:{seed}:{tiny_recipe_hash()}")
    local = user_path(name)
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelError(
                f"model directory {local} has no config.json: point model.name at "
                "a folder written by save_pretrained (or an ftlab export)"
            )
        return ModelRef(name, "local", str(local.resolve()), f"local:{_dir_identity(local)}")
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(
            f"model directory '{name}' does not exist. Use model: tiny, a local "
            "directory, or a hub id like HuggingFaceTB/SmolLM2-135M-Instruct"
        )
    _check_hub(name)
    return ModelRef(name, "hub", name, f"hub:{name}@{revision}", revision)


def _dir_identity(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.relative_to(path)}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def _check_hub(repo_id: str) -> None:
    """Fail fast (3 s) when the hub cannot be reached and the model is not cached."""
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
            return
    except Exception:  # noqa: BLE001 - a malformed id is reported below
        pass
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urlparse(endpoint).hostname or "huggingface.co"
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    reason = "HF_HUB_OFFLINE is set"
    if not offline:
        try:
            socket.create_connection((host, 443), timeout=3).close()
            return
        except OSError as exc:
            reason = f"{host}:443 unreachable ({exc})"
    raise ModelError(
        f"model '{repo_id}' is not in the local Hugging Face cache and the hub "
        f"cannot be reached: {reason}. Use model: tiny (built locally), "
        "random:<shape>, or a local directory holding the model"
    )


def ensure_tiny() -> Path:
    """The folder of the embedded tiny model: its shipped weights, or built once (tiny.py)."""
    from ftlab.runner import tiny

    return atomic_build(cache_dir() / "models" / f"tiny-{tiny_recipe_hash()}", tiny.install)


def build_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_RECIPE["vocab_size"],
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = (ASSETS / "tiny_corpus.txt").read_text(encoding="utf-8").splitlines()
    tok.train_from_iterator(lines, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|pad|>",
        eos_token="<|im_end|>",
        bos_token="<|endoftext|>",
        unk_token=None,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def llama_like(arch: str, cfg: dict[str, Any], tokenizer: Any) -> Any:
    from transformers import LlamaConfig, Qwen2Config

    config_cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[arch]
    return config_cls(
        **cfg,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )


def random_config(shape: str) -> Any:
    """The transformers config of a random-init shape (for plans on the meta device)."""
    arch, cfg = RANDOM_SHAPES[shape]
    return llama_like(arch, cfg, tiny_tokenizer())


def tiny_tokenizer() -> Any:
    """tiny's tokenizer, without pretraining tiny (random shapes need only this)."""
    from transformers import AutoTokenizer

    folder = cache_dir() / "models" / f"tiny-tokenizer-{tiny_recipe_hash()}"
    return AutoTokenizer.from_pretrained(
        atomic_build(folder, lambda out: build_tokenizer().save_pretrained(out))
    )


def ensure_random(shape: str, *, seed: int) -> Path:
    """A randomly initialised model of a real shape, saved once (bf16) in the cache."""

    def build(out: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(random_config(shape), dtype=torch.bfloat16)
        model.save_pretrained(out)
        tiny_tokenizer().save_pretrained(out)

    return atomic_build(cache_dir() / "models" / f"random-{shape}-{seed}", build)


def max_positions(config: Any) -> int | None:
    """The longest sequence the model's position embeddings cover (None when unknown)."""
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def length_warning(stage: Any, config: Any) -> str:
    """A warning when `train.max_length` exceeds the model's positions ('' otherwise)."""
    limit = max_positions(config)
    if limit is None or stage.train.max_length <= limit:
        return ""
    return (
        f"stage {stage.name}: train.max_length {stage.train.max_length} exceeds the model's "
        f"{limit} positions; longer sequences fail or degrade — set train.max_length <= {limit}"
    )


def load_config(ref: ModelRef) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(ref.path, revision=ref.revision)


def load_tokenizer(ref: ModelRef | str, *, chat_template: str = "") -> Any:
    """The checkpoint's tokenizer; `chat_template` (the spec's `model.chat_template`: a
    name or a .jinja file) replaces its template, so training, evals and the saved
    artifact format conversations alike."""
    from transformers import AutoTokenizer

    path = ref.path if isinstance(ref, ModelRef) else ref
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = pad_token_for(tok)
    if chat_template:
        from ftlab.runner.templates import named

        tok.chat_template = named(chat_template).text
    return tok


# Tokens checkpoints reserve for padding, or never use in text (Llama-2/Mistral's <unk>),
# tried in order when a tokenizer has no pad token (Llama-3, Mistral ship none).
PAD_CANDIDATES = (
    "<|finetune_right_pad_id|>",
    "<|pad|>",
    "<pad>",
    "[PAD]",
    "<|pad_token|>",
    "<unk>",
)


def pad_token_for(tok: Any) -> str:
    """A pad token for a tokenizer that has none: a reserved padding token of its own
    vocabulary, else its EOS. Either way EOS stays learned: trl's collators pad labels
    with -100 by position (never by token id), as tests/test_templates.py checks."""
    vocab = tok.get_vocab()
    for candidate in PAD_CANDIDATES:
        if candidate in vocab and candidate != tok.eos_token:
            return candidate
    return str(tok.eos_token)


def meta_param_count(config: Any) -> int:
    """Parameters of a config's model, counted on the meta device (nothing allocated)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def resolve_precision(requested: str) -> str:
    """`auto` → bf16 on CUDA with bf16, or a CPU with native bf16 matrix units; else fp32."""
    if requested != "auto":
        return requested
    import torch

    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    flags = _cpu_flags()
    return "bf16" if {"amx_bf16", "avx512_bf16"} & flags else "fp32"


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def check_liger(stages: list[str]) -> None:
    """Liger's kernels are Triton kernels: a CUDA GPU and the package, or say what to do."""
    import importlib.util

    import torch

    where = f"stages {', '.join(stages)}: train.liger: true"
    if not torch.cuda.is_available():
        raise ModelError(
            f"{where} needs a CUDA GPU (Liger's kernels are Triton kernels); on this "
            "machine set train.liger: false"
        )
    if importlib.util.find_spec("liger_kernel") is None:
        raise ModelError(f"{where} needs the liger-kernel package: pip install liger-kernel")
