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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl
import torch

from prefscale.policy import chat_text

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
BACKENDS = ("transformers", "vllm", "endpoint")


@dataclass(frozen=True)
class Sampling:
    """What every backend samples with."""

    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()

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


# --- transformers ------------------------------------------------------------------------------------------


class _PerRowSampler:
    """A logits processor that samples each row's next token from the row's own pre-drawn uniforms.

    Generation runs greedy; this processor turns the scores into a one-hot on the sampled token, so each row's
    draw depends only on its own logits and its own seed (inverse CDF over the temperature / top-p distribution).
    It also records when each step happened (for per-response latency).
    """

    def __init__(self, uniforms: torch.Tensor, prompt_len: int, temperature: float, top_p: float) -> None:
        self.uniforms = uniforms  # [batch, max_new_tokens] in [0, 1)
        self.prompt_len = prompt_len
        self.temperature = temperature
        self.top_p = top_p
        self.step_times: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = input_ids.shape[1] - self.prompt_len
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            before = sorted_p.cumsum(-1) - sorted_p  # mass strictly above each token
            sorted_p = sorted_p.masked_fill(before >= self.top_p, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        cdf = probs.cumsum(-1)
        u = self.uniforms[:, step : step + 1].to(cdf.device) * cdf[:, -1:]
        token = torch.searchsorted(cdf, u, right=True).clamp_(max=scores.shape[-1] - 1)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(-1, token, 0.0)
        self.step_times.append(time.perf_counter())
        return out


def is_oom(err: BaseException) -> bool:
    """Whether an exception is an out-of-memory error (CUDA, MPS or the CPU allocator)."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def _uniforms(seeds: Sequence[int], steps: int) -> torch.Tensor:
    rows = [torch.rand(steps, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in seeds]
    return torch.stack(rows).float()


@torch.no_grad()
def generate_ids(
    model: Any,
    enc: Any,
    seeds: Sequence[int],
    sampling: Sampling,
    *,
    eos: int | None,
    pad: int | None,
    tokenizer: Any = None,
) -> tuple[torch.Tensor, list[float], float, float]:
    """Sample from left-padded `enc` (input_ids, attention_mask) with a seed per row; `model.generate` with the
    KV cache. Returns (new tokens [batch, <= max_new_tokens], the time of each step, start, end).

    `eos=None` never stops early (benchmarks). `tokenizer` is needed only for stop strings.
    """
    from transformers import GenerationConfig, LogitsProcessorList

    prompt_len = enc["input_ids"].shape[1]
    sampler = _PerRowSampler(
        _uniforms(seeds, sampling.max_new_tokens), prompt_len, sampling.temperature, sampling.top_p
    )
    config = GenerationConfig(
        do_sample=False,
        max_new_tokens=sampling.max_new_tokens,
        eos_token_id=eos,
        pad_token_id=pad,
        stop_strings=list(sampling.stop) or None,
    )
    t0 = time.perf_counter()
    out = model.generate(
        **enc,
        generation_config=config,
        logits_processor=LogitsProcessorList([sampler]),
        tokenizer=tokenizer if sampling.stop else None,
    )
    return out[:, prompt_len:], sampler.step_times, t0, time.perf_counter()


def _generate_batch(
    model: Any, tokenizer: Any, texts: list[str], seeds: list[int], sampling: Sampling
) -> list[Sample]:
    device = next(model.parameters()).device
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    new, times, t0, t_end = generate_ids(model, enc, seeds, sampling, eos=eos, pad=pad, tokenizer=tokenizer)
    gen = new.cpu().tolist()
    samples = []
    for toks in gen:
        if eos in toks:  # n_tokens counts the response's tokens, not the end token
            toks = toks[: toks.index(eos)]
            n_tok, n_steps, reason = len(toks), len(toks) + 1, "stop"
        else:
            while toks and toks[-1] == pad and pad != eos:
                toks = toks[:-1]
            n_tok, n_steps, reason = len(toks), len(toks), "length"
        text = tokenizer.decode(toks, skip_special_tokens=True)
        if sampling.stop:
            text, hit = cut_at_stop(text, sampling.stop)
            if hit:
                reason = "stop"
        if reason == "length" and n_tok < sampling.max_new_tokens:
            reason = "stop"  # ended by a stopping criterion before the limit
        last = times[n_steps - 1] if 0 < n_steps <= len(times) else t_end
        samples.append(Sample(text.strip(), n_tok, reason, last - t0))
    return samples


def generate_transformers(
    model: Any,
    tokenizer: Any,
    prompts: pl.DataFrame,
    n: int,
    sampling: Sampling,
    *,
    batch_size: int = 64,
    seed: int = 0,
    on_oom: Callable[[int, int], None] | None = None,
) -> tuple[pl.DataFrame, GenerationInfo]:
    """`n` samples per prompt with `model.generate`, batched; the candidates frame and how it went.

    Jobs (prompt, sample) are sorted by tokenised prompt length and cut into batches of `batch_size` (left
    padding, KV cache). On out-of-memory the batch size is halved and the batch retried (`on_oom(old, new)` is
    told); at batch size 1 the error is raised. Per-sample seeds make every text independent of the batching.
    """
    check_prompts(prompts, n)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    texts = [chat_text(tokenizer, p) for p in prompts["prompt"]]
    lengths = [len(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    pid = prompts["prompt_id"].to_list()
    jobs = sorted(((i, k) for i in range(prompts.height) for k in range(n)), key=lambda j: (lengths[j[0]], j))
    info = GenerationInfo(backend="transformers", batch_size=batch_size)
    results: dict[tuple[int, int], Sample] = {}
    t0 = time.perf_counter()
    bs, pos = batch_size, 0
    while pos < len(jobs):
        chunk = jobs[pos : pos + bs]
        try:
            got = _generate_batch(
                model,
                tokenizer,
                [texts[i] for i, _ in chunk],
                [sample_seed(seed, pid[i], k) for i, k in chunk],
                sampling,
            )
        except (torch.OutOfMemoryError, RuntimeError) as e:
            if not is_oom(e):
                raise
            if bs == 1:
                raise RuntimeError(f"out of memory generating even one sample at a time: {e}") from e
            new = max(1, bs // 2)
            log.warning("out of memory at batch size %d; retrying with %d", bs, new)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if on_oom is not None:
                on_oom(bs, new)
            info.oom_backoffs += 1
            bs = new
            continue
        results.update(zip(chunk, got, strict=True))
        pos += len(chunk)
    info.seconds = time.perf_counter() - t0
    info.batch_size = bs
    return candidates_frame(prompts, n, results), info


def sample_responses(
    model: Any,
    tokenizer: Any,
    prompts: pl.DataFrame,
    n: int,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
    stop: Sequence[str] = (),
) -> pl.DataFrame:
    """`n` sampled responses per prompt (columns of `CANDIDATE_SCHEMA`) from an in-process model.

    See `generate_transformers`: batched by prompt length with left padding, a seed per sample, OOM back-off.
    `finish_reason` is `stop` when the model emitted its end token or a stop string, else `length`.
    """
    sampling = Sampling(max_new_tokens, temperature, top_p, tuple(stop))
    frame, _ = generate_transformers(model, tokenizer, prompts, n, sampling, batch_size=batch_size, seed=seed)
    return frame


class TransformersBackend:
    """The in-process backend: loads the policy folder with `prefscale.policy.load_policy`."""

    name = "transformers"

    def __init__(self, model_dir: str | Path, compute: Any, sampling: Sampling, batch_size: int = 64) -> None:
        from prefscale.policy import load_policy

        self.model, self.tokenizer = load_policy(model_dir, compute)
        self.sampling = sampling
        self.batch_size = batch_size

    def generate(self, prompts: pl.DataFrame, n: int, *, seed: int) -> tuple[pl.DataFrame, GenerationInfo]:
        return generate_transformers(
            self.model, self.tokenizer, prompts, n, self.sampling, batch_size=self.batch_size, seed=seed
        )


def make_backend(
    config: Any, model_dir: str | Path, compute: Any = None, *, policy_iteration: int | None = None
) -> GenerationBackend:
    """The backend a recipe's `generation` section (`GenerationConfig`) names, for the policy in `model_dir`.

    `compute` (a `prefscale.compute.Compute`) is used by the in-process backends; `policy_iteration`
    (0: the base policy, k: dpo_checkpoint[k]) fills `{policy_iteration}` in an endpoint's model name.
    """
    sampling = Sampling(config.max_new_tokens, config.temperature, config.top_p, tuple(config.stop))
    if config.backend == "transformers":
        if compute is None:
            raise ValueError("the transformers backend needs a compute (device and dtype)")
        return TransformersBackend(model_dir, compute, sampling, config.batch_size)
    if config.backend == "vllm":
        from prefscale.gen_vllm import VLLMBackend

        return VLLMBackend(model_dir, sampling, compute=compute)
    if config.backend == "endpoint":
        from prefscale.gen_endpoint import EndpointBackend

        return EndpointBackend(config.endpoint, sampling, iteration=policy_iteration)
    raise ValueError(f"unknown generation backend {config.backend!r}; known: {', '.join(BACKENDS)}")


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


__all__: Sequence[str] = [
    "BACKENDS",
    "CANDIDATE_SCHEMA",
    "GenerationBackend",
    "GenerationInfo",
    "Sample",
    "Sampling",
    "candidates_frame",
    "generate_transformers",
    "generation_stats",
    "make_backend",
    "sample_responses",
    "sample_seed",
    "timed",
]


def sample_policy(
    policy: str | Path, compute: Any, prompts: pl.DataFrame, n: int, settings: Any, seed: int
) -> pl.DataFrame:
    """Load the policy folder and sample `n` responses per prompt with a recipe's `generation` settings."""
    from prefscale.policy import load_policy

    model, tok = load_policy(policy, compute)
    return sample_responses(
        model,
        tok,
        prompts,
        n,
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        batch_size=settings.batch_size,
        seed=seed,
        stop=settings.stop,
    )
