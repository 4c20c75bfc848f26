"""`prefscale bench dtype`: bf16 against fp32 on this CPU, for the two steps that dominate a CPU run.

In one process, on a SmolLM2-135M-shaped Llama (random weights: the shape decides the speed), it times

- a training step: forward + backward of `batch × seq_len` tokens (fp32 weights; bf16 under
  `torch.autocast("cpu", torch.bfloat16)`, as TRL's `bf16=True` trains), the median of `steps` after a warm-up;
- batched generation: `prompts` prompts × `max_new_tokens` new tokens through the `transformers` backend's
  sampler (`generate_ids`: per-row seeds, KV cache), the model loaded in the dtype, the median of `repeats`;

and reports each as tokens/s and the bf16/fp32 speedup, beside the CPU's bf16 support (what `pick_dtype`
reads to choose the dtype) and its measured matmul peak in each dtype.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from prefscale.compute import cpu_bf16_support, fast_cpu_bf16
from prefscale.generation.base import Sampling
from prefscale.generation.transformers_backend import generate_ids
from prefscale.tools.bench_dpo import measure_peak_tflops
from prefscale.tools.bench_generate import machine_info

SMOLLM2_135M: dict[str, int] = {
    "vocab_size": 49152,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
}
TINY: dict[str, int] = {  # the embedded recipe's policy shape (tests)
    "vocab_size": 1024,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
}
SHAPES = {"smollm2-135m": SMOLLM2_135M, "tiny": TINY}


@dataclass
class DtypeBenchResult:
    shape: str
    dtype: str  # what policy.dtype auto picks on this CPU (PREFSCALE_DTYPE aside)
    bf16_support: dict[str, bool]
    threads: int
    train_tokens: int
    train_seconds: dict[str, float]  # median seconds per step, by dtype
    generate_tokens: int
    generate_seconds: dict[str, float]
    peak_tflops: dict[str, float]
    machine: dict[str, Any] = field(default_factory=dict)
    ok: bool = True

    @property
    def train_speedup(self) -> float:
        return self.train_seconds["float32"] / self.train_seconds["bfloat16"]

    @property
    def generate_speedup(self) -> float:
        return self.generate_seconds["float32"] / self.generate_seconds["bfloat16"]

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "train_speedup": round(self.train_speedup, 3),
            "generate_speedup": round(self.generate_speedup, 3),
            "train_tokens_per_second": {
                k: round(self.train_tokens / v, 1) for k, v in self.train_seconds.items()
            },
            "generate_tokens_per_second": {
                k: round(self.generate_tokens / v, 1) for k, v in self.generate_seconds.items()
            },
        }

    def summary_lines(self) -> list[str]:
        d = self.to_dict()
        return [
            f"bench dtype ({self.shape}, {self.threads} threads): auto picks {self.dtype} on this CPU "
            f"(bf16 support: {', '.join(k for k, v in self.bf16_support.items() if v) or 'none'})",
            f"training step ({self.train_tokens} tokens, fwd+bwd): "
            + ", ".join(f"{k} {v:.3f} s" for k, v in self.train_seconds.items())
            + f" -> bf16 {self.train_speedup:.2f}x fp32",
            f"batched generation ({self.generate_tokens} tokens): "
            + ", ".join(
                f"{k} {v:.2f} s ({d['generate_tokens_per_second'][k]} tok/s)"
                for k, v in self.generate_seconds.items()
            )
            + f" -> bf16 {self.generate_speedup:.2f}x fp32",
            "matmul peak: " + ", ".join(f"{k} {v:.3f} TFLOP/s" for k, v in self.peak_tflops.items()),
        ]


def _model(shape: dict[str, int], seed: int) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        **shape, max_position_embeddings=2048, tie_word_embeddings=True, pad_token_id=0, eos_token_id=1
    )
    return LlamaForCausalLM(cfg).eval()


def _median_seconds(fn: Callable[[], None], repeats: int) -> float:
    fn()  # warm-up (allocations, oneDNN kernels)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _train_step(model: Any, ids: torch.Tensor, bf16: bool) -> Callable[[], None]:
    model.train()

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        model.zero_grad(set_to_none=True)

    return step


def _generate(model: Any, ids: torch.Tensor, max_new_tokens: int) -> Callable[[], None]:
    enc = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    seeds = list(range(ids.shape[0]))
    sampling = Sampling(max_new_tokens, 1.0, 1.0, ())

    def gen() -> None:
        generate_ids(model, enc, seeds, sampling, eos=None, pad=0)

    return gen


def bench_dtype(
    shape: str = "smollm2-135m",
    *,
    batch: int = 8,
    seq_len: int = 320,
    steps: int = 3,
    prompts: int = 64,
    prompt_len: int = 48,
    max_new_tokens: int = 32,
    repeats: int = 2,
    seed: int = 0,
    progress: Callable[[str], None] = lambda _m: None,
) -> DtypeBenchResult:
    """Time a training step and batched generation in fp32 and bf16 on the CPU; see the module docs."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    dims = SHAPES[shape]
    g = torch.Generator().manual_seed(seed)
    train_ids = torch.randint(2, dims["vocab_size"], (batch, seq_len), generator=g)
    prompt_ids = torch.randint(2, dims["vocab_size"], (prompts, prompt_len), generator=g)
    train_s: dict[str, float] = {}
    gen_s: dict[str, float] = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        model = _model(dims, seed)
        progress(f"{name}: training step ({batch} x {seq_len} tokens)")
        train_s[name] = _median_seconds(_train_step(model, train_ids, dtype == torch.bfloat16), steps)
        model = model.to(dtype).eval()
        progress(f"{name}: generation ({prompts} prompts x {max_new_tokens} new tokens)")
        gen_s[name] = _median_seconds(_generate(model, prompt_ids, max_new_tokens), repeats)
        del model
    # the matmul peak at the model's own width (a CPU without native bf16 runs a 1024² bf16 product for seconds)
    peak = {
        n: measure_peak_tflops("cpu", d, size=max(256, 2 * dims["hidden_size"]), repeats=3)
        for n, d in (("float32", torch.float32), ("bfloat16", torch.bfloat16))
    }
    return DtypeBenchResult(
        shape=shape,
        dtype="bfloat16" if fast_cpu_bf16() else "float32",
        bf16_support=cpu_bf16_support(),
        threads=torch.get_num_threads(),
        train_tokens=batch * seq_len,
        train_seconds=train_s,
        generate_tokens=prompts * max_new_tokens,
        generate_seconds=gen_s,
        peak_tflops=peak,
        machine=machine_info(),
    )
