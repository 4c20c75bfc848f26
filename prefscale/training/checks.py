"""Checks on a published checkpoint: it loads and runs a forward pass."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class CheckpointLoad:
    """Outcome of loading a model folder and running one forward pass."""

    ok: bool
    error: str = ""
    parameters: int = 0
    logits_shape: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seconds": round(self.seconds, 2)}
        if self.ok:
            out.update(parameters=self.parameters, logits_shape=str(self.logits_shape))
        else:
            out["error"] = self.error[:2000]
        return out


def checkpoint_loads(model_dir: Path, device: str = "cpu", dtype: Any = None) -> CheckpointLoad:
    """Load `model_dir` with `AutoTokenizer` + `AutoModelForCausalLM`, run one forward pass on a short text.

    Passes when both load and the logits are finite; a missing or corrupt weights file, a broken config or
    tokenizer, or NaN weights fail it with the error. The model is released before returning.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    model = None
    try:
        tok = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype or torch.float32)
        model.to(device).eval()
        ids = tok("Hello, how can I help you?", return_tensors="pt")["input_ids"]
        if ids.shape[-1] == 0:
            return CheckpointLoad(False, f"{model_dir}: the tokenizer encodes a non-empty text to no tokens")
        with torch.no_grad():
            logits = model(input_ids=ids.to(device)).logits
        if not bool(torch.isfinite(logits).all()):
            return CheckpointLoad(
                False,
                f"{model_dir}: the forward pass gave non-finite logits",
                seconds=time.perf_counter() - t0,
            )
        return CheckpointLoad(
            True,
            parameters=sum(p.numel() for p in model.parameters()),
            logits_shape=list(logits.shape),
            seconds=time.perf_counter() - t0,
        )
    except Exception as e:  # any failure to load or run is the check's answer, not a crash
        return CheckpointLoad(
            False, f"{model_dir}: {type(e).__name__}: {e}", seconds=time.perf_counter() - t0
        )
    finally:
        del model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
