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
from prefscale.progress import Progress

# --- transformers ------------------------------------------------------------------------------------------


NUCLEUS_CANDIDATES = 1024  # top-p looks at this many most likely tokens first (see `draw_tokens`)
COMPACT_EVERY = 8  # ended rows leave the decoding batch once they are 1/8 of it (see `generate_ids`)


def draw_tokens(scores: torch.Tensor, u: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """One token per row of `scores` [batch, vocab], drawn with the row's own uniform `u` [batch, 1] by the inverse
    CDF over the temperature / top-p distribution (token-id order): a row's draw depends only on its own logits
    and its own seed, never on the other rows of the batch."""
    probs = torch.softmax(scores.float() / temperature, dim=-1)
    if top_p < 1.0:
        token = _nucleus(probs, u, top_p)
        if token is not None:
            return token.squeeze(-1)
        sorted_p, order = probs.sort(dim=-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p  # mass strictly above each token
        sorted_p = sorted_p.masked_fill(before >= top_p, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    cdf = probs.cumsum(-1)
    token = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp_(max=scores.shape[-1] - 1)
    return token.squeeze(-1)


def _nucleus(probs: torch.Tensor, u: torch.Tensor, top_p: float) -> torch.Tensor | None:
    """Top-p over the `NUCLEUS_CANDIDATES` most likely tokens instead of sorting the whole vocabulary (49k tokens
    for SmolLM2: the sort cost as much as a small model's decoding step). The nucleus is the same whenever those
    tokens hold `top_p` of the mass; None (sort everything) when some row's do not."""
    k = min(NUCLEUS_CANDIDATES, probs.shape[-1])
    top, ids = probs.topk(k, dim=-1)  # descending
    if not bool((top.sum(-1) >= top_p).all()):
        return None
    before = top.cumsum(-1) - top  # mass strictly above each token
    top = top.masked_fill(before >= top_p, 0.0)
    ids, order = ids.sort(dim=-1)  # the draw walks the nucleus in token-id order, as the full path does
    cdf = top.gather(-1, order).cumsum(-1)
    last = cdf[:, -1:]
    target = torch.minimum(u * last, torch.nextafter(last, torch.zeros_like(last)))  # u rounded to 1.0
    return ids.gather(-1, torch.searchsorted(cdf, target, right=True))


def row_uniforms(seeds: Sequence[int], steps: int) -> torch.Tensor:
    """[rows, steps] uniforms in [0, 1), row r drawn from its own seed: the per-sample draws of `draw_tokens`."""
    rows = [torch.rand(steps, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in seeds]
    return torch.stack(rows).float()


def _stopped(tokenizer: Any, rows: list[list[int]], stop: Sequence[str]) -> list[bool]:
    return [any(s in text for s in stop) for text in tokenizer.batch_decode(rows, skip_special_tokens=True)]


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
    """Sample from left-padded `enc` (input_ids, attention_mask) with a seed per row, decoding with the KV cache.
    Returns (new tokens [batch, <= max_new_tokens], padded with `pad` after a row ends; the time of each step;
    start; end).

    Where the CPU's time goes, and what this loop does about it:
    - rows with the same prompt (a prompt's candidates) are prefilled once and their cache copied, so the
      prompt's forward pass is paid once, not once per candidate;
    - rows that ended (end token or stop string) leave the batch once they are an eighth of it: later steps
      compute the rows still running, instead of carrying ended rows to the longest one as `model.generate` does.
    `eos=None` never stops early (benchmarks). `tokenizer` is needed only for stop strings.
    """
    ids, mask = enc["input_ids"], enc["attention_mask"]
    batch, steps = ids.shape[0], sampling.max_new_tokens
    uniforms = row_uniforms(seeds, steps).to(ids.device)
    pad_id = pad if pad is not None else (eos if eos is not None else 0)
    out = torch.full((batch, steps), pad_id, dtype=torch.long, device=ids.device)
    stop = list(sampling.stop) if tokenizer is not None else []
    t0 = time.perf_counter()
    unique, inverse = torch.unique(ids, dim=0, return_inverse=True)
    first = torch.empty(unique.shape[0], dtype=torch.long, device=ids.device)
    first.scatter_(0, inverse, torch.arange(batch, device=ids.device))  # a row holding each distinct prompt
    shared = unique.shape[0] < batch
    pre_ids, pre_mask = (ids[first], mask[first]) if shared else (ids, mask)
    positions = (pre_mask.long().cumsum(-1) - 1).clamp_(min=0)
    result = model(input_ids=pre_ids, attention_mask=pre_mask, position_ids=positions, use_cache=True)
    cache, logits = result.past_key_values, result.logits[:, -1, :]
    if shared:  # one prefill per distinct prompt, copied to each of its rows
        cache.reorder_cache(inverse)
        logits = logits[inverse]
    rows = torch.arange(batch, device=ids.device)  # which row of `out` each position of the batch is
    running = torch.ones(batch, dtype=torch.bool, device=ids.device)
    next_pos = mask.long().sum(-1)
    step_times: list[float] = []
    for step in range(steps):
        token = draw_tokens(logits, uniforms[rows, step : step + 1], sampling.temperature, sampling.top_p)
        out[rows[running], step] = token[running]
        step_times.append(time.perf_counter())
        ended = running & (token == eos) if eos is not None else torch.zeros_like(running)
        if stop:
            live = (running & ~ended).nonzero().squeeze(-1)
            hit = _stopped(tokenizer, out[rows[live], : step + 1].tolist(), stop)
            ended[live] = torch.tensor(hit, dtype=torch.bool, device=ended.device)
        running &= ~ended
        if step == steps - 1 or not bool(running.any()):
            break
        # Ended rows leave the batch once they are an eighth of it: copying the KV cache at every single ending
        # would cost more than the few rows it saves.
        if int((~running).sum()) >= max(1, len(rows) // COMPACT_EVERY):
            keep = running.nonzero().squeeze(-1)
            rows, token, mask, next_pos, running = (
                rows[keep],
                token[keep],
                mask[keep],
                next_pos[keep],
                running[keep],
            )
            cache.reorder_cache(keep)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=-1)
        result = model(
            input_ids=token[:, None],
            attention_mask=mask,
            position_ids=next_pos[:, None],
            past_key_values=cache,
            use_cache=True,
        )
        logits = result.logits[:, -1, :]
        next_pos = next_pos + 1
    return out[:, : len(step_times)], step_times, t0, time.perf_counter()


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
    label: str = "generation (transformers)",
) -> tuple[pl.DataFrame, GenerationInfo]:
    """`n` samples per prompt with `model.generate`, batched; the candidates frame and how it went.

    Jobs (prompt, sample) are sorted by tokenised prompt length and cut into batches of `batch_size` (left
    padding, KV cache). On out-of-memory the batch size is halved and the batch retried (`on_oom(old, new)` is
    told); at batch size 1 the error is raised. Per-sample seeds make every text independent of the batching.
    Progress is logged under `label` (`prefscale.progress`).
    """
    check_prompts(prompts, n)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    texts = [chat_text(tokenizer, p, system=sampling.system) for p in prompts["prompt"]]
    lengths = [len(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    pid = prompts["prompt_id"].to_list()
    jobs = sorted(((i, k) for i in range(prompts.height) for k in range(n)), key=lambda j: (lengths[j[0]], j))
    info = GenerationInfo(backend="transformers", batch_size=batch_size)
    results: dict[tuple[int, int], Sample] = {}
    progress = Progress(label, len(jobs), "responses")
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
        progress.advance(len(chunk))
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
    system: str | None = None,
    label: str = "generation (transformers)",
) -> pl.DataFrame:
    """`n` sampled responses per prompt (columns of `CANDIDATE_SCHEMA`) from an in-process model.

    See `generate_transformers`: batched by prompt length with left padding, a seed per sample, OOM back-off.
    `finish_reason` is `stop` when the model emitted its end token or a stop string, else `length`.
    """
    sampling = Sampling(max_new_tokens, temperature, top_p, tuple(stop), system)
    frame, _ = generate_transformers(
        model, tokenizer, prompts, n, sampling, batch_size=batch_size, seed=seed, label=label
    )
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
