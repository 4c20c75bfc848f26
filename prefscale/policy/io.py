"""The base policy: a tiny Llama trained offline on the demo corpus, a pretrained model resolved by id/path, or
a GGUF checkpoint dequantized into a trainable model folder.

Downstream code only ever calls `from_pretrained` on the folder this module writes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
)

from prefscale.compute import Compute
from prefscale.config.base import is_local_path
from prefscale.policy.chat import check_system_prompt


def save_policy(model: Any, tokenizer: Any, out_dir: Path) -> None:
    """Save a model folder (safetensors + tokenizer + generation config)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def load_policy(model_dir: str | Path, compute: Compute, revision: str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) from a model folder or hub id, in the compute's dtype, left-padded for generation."""
    ref = str(model_dir)
    if isinstance(model_dir, Path) or is_local_path(ref):
        ref = str(Path(ref).expanduser())
        if not Path(ref).is_dir():
            raise FileNotFoundError(f"model folder not found: {ref}")
        if not (Path(ref) / "config.json").is_file():
            raise FileNotFoundError(f"not a model folder (no config.json): {ref}")
    tokenizer = AutoTokenizer.from_pretrained(ref, revision=revision, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(ref, revision=revision, dtype=compute.dtype)
    model.to(compute.device)
    model.eval()
    return model, tokenizer


def folder_digest(folder: Path) -> str:
    """sha256 over every file's relative path and bytes: the identity of a saved model."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(folder)).encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def check_policy_system_prompt(model_dir: str | Path, system: str | None, max_length: int) -> int:
    """`check_system_prompt` with the tokenizer of the policy folder `model_dir`: the tokens the system message
    adds; `ValueError` naming policy.system_prompt when it leaves no room within `max_length` (dpo.max_length)."""
    if not system:
        return 0
    return check_system_prompt(AutoTokenizer.from_pretrained(model_dir), system, max_length)
