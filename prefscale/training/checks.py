"""Checks on a published checkpoint: it loads and runs a forward pass; an online-trained one did not collapse."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefscale.rewards.online import completion_text, repeats_a_line


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


COLLAPSE_SHARE = 0.5  # "most samples": more than this share of the last steps' completions
_COLLAPSE_KEYS = {
    "completions/empty_share": "empty",
    "completions/repeated_line_share": "repeating a line",
    "completions/clipped_ratio": "cut off at max_completion_length",
}


@dataclass
class CompletionHealth:
    """Whether an online run's completions collapsed at the end of training, from its per-step history."""

    ok: bool
    shares: dict[str, float] = field(default_factory=dict)  # over the last `steps` logged steps
    steps: int = 0
    error: str = ""

    def metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {k.split("/")[-1]: round(v, 4) for k, v in self.shares.items()}
        out.update(last_steps=self.steps, threshold=COLLAPSE_SHARE)
        if not self.ok:
            out["error"] = self.error
        return out


def completions_healthy(history: list[dict[str, float]], last: int = 5) -> CompletionHealth:
    """Fails when, over the last `last` logged steps, most completions (> `COLLAPSE_SHARE`) are empty, repeat a
    line, or run into the token limit: the reward was being gamed, not earned. No logged step fails too."""
    tail = [h for h in history if any(k in h for k in _COLLAPSE_KEYS)][-last:]
    if not tail:
        return CompletionHealth(False, error="no training step logged completion statistics")
    shares = {
        k: sum(h.get(k, 0.0) for h in tail) / len(tail) for k in _COLLAPSE_KEYS if any(k in h for h in tail)
    }
    bad = [f"{v:.0%} {_COLLAPSE_KEYS[k]}" for k, v in shares.items() if v > COLLAPSE_SHARE]
    error = f"the completions collapsed over the last {len(tail)} steps: " + ", ".join(bad) if bad else ""
    return CompletionHealth(not bad, shares, len(tail), error)


def pairs_health(pairs: Any) -> list[dict[str, float]]:
    """DPO's counterpart of an online run's last steps: the shares of the pairs' chosen replies (what DPO moves
    the policy toward) that are empty or repeat a line, as one history row for `completions_healthy` (the
    pairs do not record whether a chosen reply was cut off)."""
    texts = [completion_text(c) for c in pairs["chosen"].to_list()] if pairs.height else []
    n = max(1, len(texts))
    return [
        {
            "completions/empty_share": sum(not t.strip() for t in texts) / n,
            "completions/repeated_line_share": sum(repeats_a_line(t) for t in texts) / n,
        }
    ]
