"""Batched candidate generation from a policy folder."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import polars as pl
import torch

from prefscale.policy import chat_text

CANDIDATE_SCHEMA = {
    "candidate_id": pl.String,
    "prompt_id": pl.String,
    "sample_idx": pl.Int32,
    "task_type": pl.String,
    "prompt": pl.String,
    "response": pl.String,
    "n_tokens": pl.Int32,
    "finish_reason": pl.String,
}


@torch.no_grad()
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
) -> pl.DataFrame:
    """`n` sampled responses per prompt (columns of `CANDIDATE_SCHEMA`).

    Prompts are repeated `n` times, bucketed by tokenised length, left-padded and sampled in batches; each batch
    has its own seed so results do not depend on what else is generated. `finish_reason` is `stop` when the
    model emitted its end token, else `length`.
    """
    for col in ("prompt_id", "prompt", "task_type"):
        if col not in prompts.columns:
            raise ValueError(f"prompts lack column {col!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    device = next(model.parameters()).device
    texts = [chat_text(tokenizer, p) for p in prompts["prompt"]]
    lengths = [len(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    jobs = [(i, k) for i in range(prompts.height) for k in range(n)]
    jobs.sort(key=lambda j: (lengths[j[0]], j[0], j[1]))
    eos = tokenizer.eos_token_id
    results: dict[tuple[int, int], tuple[str, int, str]] = {}
    for b, start in enumerate(range(0, len(jobs), batch_size)):
        chunk = jobs[start : start + batch_size]
        enc = tokenizer(
            [texts[i] for i, _ in chunk], return_tensors="pt", padding=True, add_special_tokens=False
        ).to(device)
        torch.manual_seed(seed * 1_000_003 + b)
        out = model.generate(
            **enc,
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            top_k=0,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id,
        )
        gen = out[:, enc["input_ids"].shape[1] :].cpu()
        for row, job in enumerate(chunk):
            toks = gen[row].tolist()
            if eos in toks:
                toks = toks[: toks.index(eos)]
                reason = "stop"
            else:
                toks = [t for t in toks if t != tokenizer.pad_token_id]
                reason = "length"
            text = tokenizer.decode(toks, skip_special_tokens=True).strip()
            results[job] = (text, len(toks), reason)
    ordered = [(i, k) for i in range(prompts.height) for k in range(n)]
    pid = prompts["prompt_id"].to_list()
    return pl.DataFrame(
        {
            "candidate_id": [f"{pid[i]}-{k}" for i, k in ordered],
            "prompt_id": [pid[i] for i, _ in ordered],
            "sample_idx": [k for _, k in ordered],
            "task_type": [prompts["task_type"][i] for i, _ in ordered],
            "prompt": [prompts["prompt"][i] for i, _ in ordered],
            "response": [results[j][0] for j in ordered],
            "n_tokens": [results[j][1] for j in ordered],
            "finish_reason": [results[j][2] for j in ordered],
        },
        schema=CANDIDATE_SCHEMA,
    )


def generation_stats(candidates: pl.DataFrame, seconds: float | None = None) -> dict[str, float]:
    """Summary figures for metadata: counts, mean tokens, share cut at the limit, distinct responses."""
    stats = {
        "n_candidates": float(candidates.height),
        "mean_tokens": float(candidates["n_tokens"].mean() or 0.0),
        "unfinished_rate": float((candidates["finish_reason"] == "length").mean() or 0.0),
        "distinct_rate": float(candidates["response"].n_unique() / max(1, candidates.height)),
    }
    if seconds is not None:
        stats["tokens_per_second"] = float(candidates["n_tokens"].sum() / max(seconds, 1e-9))
    return stats


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """(result, seconds) of one call."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


__all__: Sequence[str] = ["CANDIDATE_SCHEMA", "generation_stats", "sample_responses", "timed"]
