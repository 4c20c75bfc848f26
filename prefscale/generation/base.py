"""Candidate generation behind one interface: in-process transformers, vLLM, or an OpenAI-compatible endpoint.

Every backend turns a prompts frame (`prompt_id`, `prompt`, `task_type`) and `n` into the same candidates frame
(`CANDIDATE_SCHEMA`): one row per (prompt, sample) with the response text, its length in tokens, why it ended
(`stop`: the end token or a stop string; `length`: cut at `max_new_tokens`) and its latency (seconds from its
batch's or request's start until its last token).

Sample `k` of a prompt is drawn with its own seed, `sample_seed(seed, prompt_id, k)`, so its text does not
depend on which other samples share its batch, on the batch size, or on the order of the prompts (the
transformers backend draws every token from that sample's own generator; vLLM and endpoints get the seed per
request).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl
import torch

log = logging.getLogger(__name__)

CANDIDATE_SCHEMA = {
    "candidate_id": pl.String,
    "prompt_id": pl.String,
    "sample_idx": pl.Int32,
    "task_type": pl.String,
    "prompt": pl.String,
    "response": pl.String,
    "n_tokens": pl.Int32,
    "finish_reason": pl.String,
    "latency_s": pl.Float64,
}
FINISH_REASONS = ("stop", "length")


@dataclass(frozen=True)
class Sampling:
    """What every backend samples with."""

    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    system: str | None = None  # the recipe's policy.system_prompt, before every prompt

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must not be empty")


@dataclass(frozen=True)
class Sample:
    """One generated response."""

    text: str
    n_tokens: int
    finish_reason: str
    latency_s: float


@dataclass
class GenerationInfo:
    """How a generation call went: the backend, wall time, and (transformers) the batch sizes it used."""

    backend: str
    seconds: float = 0.0
    batch_size: int | None = None
    oom_backoffs: int = 0
    requests: int = 0
    retries: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BackendSpec:
    """What a backend is built from (`from_config`): the recipe's `generation` section, the policy folder, the
    sampling settings, the compute (in-process backends) and the policy's iteration (an endpoint's model name)."""

    config: Any
    model_dir: str | Path
    sampling: Sampling
    compute: Any = None
    policy_iteration: int | None = None


class GenerationBackend(Protocol):
    """A sampler of candidates; `generate` returns a `CANDIDATE_SCHEMA` frame and what the run cost."""

    name: str

    def generate(
        self, prompts: pl.DataFrame, n: int, *, seed: int
    ) -> tuple[pl.DataFrame, GenerationInfo]: ...


def sample_seed(seed: int, prompt_id: str, sample_idx: int) -> int:
    """The seed of one sample: a stable hash of (run seed, prompt id, sample index), 63 bits."""
    h = hashlib.blake2b(f"{seed}\x1f{prompt_id}\x1f{sample_idx}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def check_prompts(prompts: pl.DataFrame, n: int) -> None:
    """Fail clearly on a prompts frame or `n` that no backend can sample from."""
    for col in ("prompt_id", "prompt", "task_type"):
        if col not in prompts.columns:
            raise ValueError(f"prompts lack column {col!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if prompts["prompt_id"].is_duplicated().any():
        dupes = prompts.filter(pl.col("prompt_id").is_duplicated())["prompt_id"].unique().sort().to_list()
        raise ValueError(f"prompts have duplicate prompt_id values, e.g. {dupes[:3]}")


def candidates_frame(prompts: pl.DataFrame, n: int, samples: dict[tuple[int, int], Sample]) -> pl.DataFrame:
    """The `CANDIDATE_SCHEMA` frame, ordered by prompt then sample, from `samples[(prompt_row, k)]`."""
    ordered = [(i, k) for i in range(prompts.height) for k in range(n)]
    missing = [j for j in ordered if j not in samples]
    if missing:
        raise RuntimeError(f"{len(missing)} samples were not generated, e.g. {missing[:3]}")
    bad = {s.finish_reason for s in samples.values()} - set(FINISH_REASONS)
    if bad:
        raise ValueError(f"unknown finish reasons {sorted(bad)}; expected {FINISH_REASONS}")
    pid, task, text = (prompts[c].to_list() for c in ("prompt_id", "task_type", "prompt"))
    return pl.DataFrame(
        {
            "candidate_id": [f"{pid[i]}-{k}" for i, k in ordered],
            "prompt_id": [pid[i] for i, _ in ordered],
            "sample_idx": [k for _, k in ordered],
            "task_type": [task[i] for i, _ in ordered],
            "prompt": [text[i] for i, _ in ordered],
            "response": [samples[j].text for j in ordered],
            "n_tokens": [samples[j].n_tokens for j in ordered],
            "finish_reason": [samples[j].finish_reason for j in ordered],
            "latency_s": [float(samples[j].latency_s) for j in ordered],
        },
        schema=CANDIDATE_SCHEMA,
    )


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the first stop string (excluded), and whether one was found."""
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


def is_oom(err: BaseException) -> bool:
    """Whether an exception is an out-of-memory error (CUDA, MPS or the CPU allocator)."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


# --- summaries ---------------------------------------------------------------------------------------------


def latency_percentiles(candidates: pl.DataFrame) -> dict[str, float]:
    """p50 / p90 / p99 of `latency_s` (empty when the column is missing or empty)."""
    if "latency_s" not in candidates.columns or candidates.height == 0:
        return {}
    lat = candidates["latency_s"].drop_nulls().to_numpy()
    if lat.size == 0:
        return {}
    return {f"latency_p{q}_s": float(np.percentile(lat, q)) for q in (50, 90, 99)}


def generation_stats(candidates: pl.DataFrame, seconds: float | None = None) -> dict[str, float]:
    """Summary figures for metadata: counts, mean tokens, share cut at the limit, distinct responses, latency."""
    stats = {
        "n_candidates": float(candidates.height),
        "mean_tokens": float(candidates["n_tokens"].mean() or 0.0),
        "unfinished_rate": float((candidates["finish_reason"] == "length").mean() or 0.0),
        "distinct_rate": float(candidates["response"].n_unique() / max(1, candidates.height)),
    }
    if seconds is not None:
        stats["tokens_per_second"] = float(candidates["n_tokens"].sum() / max(seconds, 1e-9))
    stats.update(latency_percentiles(candidates))
    return stats


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """(result, seconds) of one call."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0
