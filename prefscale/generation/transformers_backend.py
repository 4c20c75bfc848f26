"""The `transformers` backend: batched in-process sampling with per-sample seeds, stop strings and OOM back-off."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import torch

from prefscale.generation.base import (
    BackendSpec,
    GenerationInfo,
    Sample,
    Sampling,
    candidates_frame,
    check_prompts,
    cut_at_stop,
    is_oom,
    log,
    sample_seed,
)
from prefscale.policy.chat import chat_text
from prefscale.policy.io import load_policy

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
    """The in-process backend: loads the policy folder with `prefscale.policy.io.load_policy`."""

    name = "transformers"

    @classmethod
    def from_config(cls, spec: BackendSpec) -> TransformersBackend:
        if spec.compute is None:
            raise ValueError("the transformers backend needs a compute (device and dtype)")
        return cls(spec.model_dir, spec.compute, spec.sampling, spec.config.batch_size)

    def __init__(self, model_dir: str | Path, compute: Any, sampling: Sampling, batch_size: int = 64) -> None:
        self.model, self.tokenizer = load_policy(model_dir, compute)
        self.sampling = sampling
        self.batch_size = batch_size

    def generate(self, prompts: pl.DataFrame, n: int, *, seed: int) -> tuple[pl.DataFrame, GenerationInfo]:
        return generate_transformers(
            self.model, self.tokenizer, prompts, n, self.sampling, batch_size=self.batch_size, seed=seed
        )
