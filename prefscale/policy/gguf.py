"""A GGUF checkpoint dequantized into a trainable Hugging Face model folder."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
)

from prefscale.policy.io import save_policy
from prefscale.storage import file_sha256


@dataclass(frozen=True)
class GGUFConversion:
    """What `convert_gguf` made: the source file's hash, the architecture and size, and how long it took."""

    gguf_file: str
    gguf_sha256: str
    model_type: str
    n_parameters: int
    vocab_size: int
    has_chat_template: bool
    seconds: float


def convert_gguf(gguf_path: str | Path, out_dir: Path) -> GGUFConversion:
    """Dequantize a GGUF checkpoint into a float32 model folder that trains and saves like any other.

    `from_pretrained(..., gguf_file=...)` dequantizes the tensors, but the model it returns carries a GGUF
    `quantization_config` and cannot be saved or trained as loaded; its weights are copied into a fresh model of
    the same architecture built from the config without it. The tokenizer (with its chat template) comes from
    the same file. Writes to `out_dir` (the caller publishes it atomically).
    """

    src = Path(gguf_path).expanduser()
    if not src.is_file():
        raise FileNotFoundError(f"gguf file not found: {src}")
    t0 = time.perf_counter()
    digest = file_sha256(src)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            str(src.parent), gguf_file=src.name, dtype=torch.float32
        )
    except ImportError as e:
        raise RuntimeError(f"reading {src} needs the `gguf` package (pip install gguf): {e}") from e
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = "float32"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # Tied output embeddings may be absent from one side's state dict; anything else is a real mismatch.
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(
            f"gguf {src.name}: weights do not match the architecture: {missing=} {unexpected=}"
        )
    if config.tie_word_embeddings:
        model.tie_weights()
    del loaded
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    save_policy(model, tokenizer, out_dir)
    return GGUFConversion(
        gguf_file=src.name,
        gguf_sha256=digest,
        model_type=str(config.model_type),
        n_parameters=sum(p.numel() for p in model.parameters()),
        vocab_size=int(config.vocab_size),
        has_chat_template=bool(getattr(tokenizer, "chat_template", None)),
        seconds=time.perf_counter() - t0,
    )
