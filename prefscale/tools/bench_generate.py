"""`prefscale bench generate`: candidate-generation throughput of the transformers backend.

`--preset tiny` (CPU, default): a random-weight Llama of the embedded recipe's shape with a tokenizer trained on
the demo corpus; `prompts × samples` sequences generated batched (`generate_transformers`, the candidates path)
against the same work one sequence at a time (batch size 1, on the first `--sequential-prompts` prompts: the
rate, not the total, is compared). Tokens/s of both, their ratio (`speedup`), and whether both produced the
same texts (per-sample seeds make batching invisible; a mismatch fails the benchmark, exit 1).

`--preset mistral-7b` (CUDA): a Mistral-7B-shaped model with random bf16 weights, 64 prompts × 5 samples × 256
new tokens in one batch, warm (a discarded first call), tokens/s as a fraction of the decode bound: each step
must read every weight and the whole KV cache once, so the bound is `batch / Σ_steps (weight bytes + KV bytes at
that step) / bandwidth`, with the bandwidth measured by a large device-to-device copy. Without CUDA it exits 2.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import version
from time import perf_counter
from typing import Any

from prefscale.config.policy import EmbeddedModel
from prefscale.data import domain
from prefscale.generation.base import Sampling
from prefscale.generation.transformers_backend import generate_ids, generate_transformers
from prefscale.policy.tiny import train_tokenizer

Progress = Callable[[str], None]

MISTRAL_7B = {
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_layers": 32,
    "num_heads": 32,
    "num_kv_heads": 8,
}


class CudaUnavailable(RuntimeError):
    """The GPU preset on a machine without CUDA."""


def _quiet(_: str) -> None:
    return None


def machine_info() -> dict[str, Any]:
    """The machine a bench ran on (CPU, threads, GPU, torch and transformers versions), for its JSON."""
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        **{pkg: version(pkg) for pkg in ("torch", "transformers")},
    }


@dataclass(frozen=True)
class GenerateBenchResult:
    preset: str
    prompts: int
    samples: int
    max_new_tokens: int
    batch_size: int
    batched_tokens: int
    batched_seconds: float
    sequential_prompts: int
    sequential_tokens: int
    sequential_seconds: float
    same_texts: bool
    machine: dict[str, Any]

    @property
    def batched_tokens_per_second(self) -> float:
        return self.batched_tokens / self.batched_seconds if self.batched_seconds > 0 else 0.0

    @property
    def sequential_tokens_per_second(self) -> float:
        return self.sequential_tokens / self.sequential_seconds if self.sequential_seconds > 0 else 0.0

    @property
    def speedup(self) -> float:
        seq = self.sequential_tokens_per_second
        return self.batched_tokens_per_second / seq if seq > 0 else float("inf")

    @property
    def ok(self) -> bool:
        return self.same_texts

    def to_dict(self) -> dict[str, Any]:
        out = {"bench": "generate", **asdict(self)}
        for k in ("batched_seconds", "sequential_seconds"):
            out[k] = round(out[k], 4)
        out["batched_tokens_per_second"] = round(self.batched_tokens_per_second, 1)
        out["sequential_tokens_per_second"] = round(self.sequential_tokens_per_second, 1)
        out["speedup"] = round(self.speedup, 2)
        return out

    def summary_lines(self) -> list[str]:
        m = self.machine
        return [
            f"generation (transformers backend): preset {self.preset!r}, {self.prompts} prompts x {self.samples} "
            f"samples x {self.max_new_tokens} new tokens, batch size {self.batch_size}",
            f"machine: {m['cpus']} CPUs ({m['cpu']}), torch threads {m['torch_threads']}, torch {m['torch']}, "
            f"transformers {m['transformers']}",
            f"batched:           {self.batched_tokens:7d} tokens in {self.batched_seconds:8.3f} s = "
            f"{self.batched_tokens_per_second:9.1f} tokens/s",
            f"one at a time:     {self.sequential_tokens:7d} tokens in {self.sequential_seconds:8.3f} s = "
            f"{self.sequential_tokens_per_second:9.1f} tokens/s ({self.sequential_prompts} prompts)",
            f"speedup: {self.speedup:.1f}x; same texts batched and one at a time: {self.same_texts}",
        ]


def tiny_setup(seed: int = 0) -> tuple[Any, Any]:
    """(model, tokenizer): a random-weight Llama of the embedded recipe's shape, its tokenizer trained on the corpus."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = EmbeddedModel()
    pool = domain.make_prompt_pool(200, seed)
    corpus = domain.make_corpus(pool, 1, seed)
    tok = train_tokenizer([*corpus["prompt"], *corpus["response"]], shape.vocab_size)
    tok.padding_side = "left"
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_heads,
        max_position_embeddings=max(512, shape.max_position_embeddings),
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    return model, tok


def bench_generate(
    *,
    prompts: int = 32,
    samples: int = 5,
    max_new_tokens: int = 64,
    batch_size: int = 80,
    sequential_prompts: int = 4,
    seed: int = 0,
    threads: int | None = None,
    progress: Progress = _quiet,
) -> GenerateBenchResult:
    """Batched vs one-at-a-time generation on CPU with the tiny embedded-shaped model (see the module docstring)."""
    import torch

    for name, value in (("prompts", prompts), ("samples", samples), ("max_new_tokens", max_new_tokens)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if threads:
        torch.set_num_threads(threads)
    model, tok = tiny_setup(seed)
    pool = domain.make_prompt_pool(max(prompts, len(domain.TASK_TYPES)), seed + 1).head(prompts)
    sampling = Sampling(max_new_tokens=max_new_tokens)
    progress("warm-up")
    generate_transformers(model, tok, pool.head(2), 2, Sampling(max_new_tokens=4), batch_size=4, seed=seed)
    progress(f"batched: {prompts} prompts x {samples} samples, batch size {batch_size}")
    t0 = perf_counter()
    batched, _ = generate_transformers(model, tok, pool, samples, sampling, batch_size=batch_size, seed=seed)
    batched_s = perf_counter() - t0
    k = max(1, min(sequential_prompts, prompts))
    progress(f"one at a time: {k} prompts x {samples} samples, batch size 1")
    t0 = perf_counter()
    seq, _ = generate_transformers(model, tok, pool.head(k), samples, sampling, batch_size=1, seed=seed)
    seq_s = perf_counter() - t0
    head = batched.filter(batched["prompt_id"].is_in(seq["prompt_id"].implode()))
    same = head["response"].to_list() == seq["response"].to_list()
    return GenerateBenchResult(
        preset="tiny",
        prompts=prompts,
        samples=samples,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        batched_tokens=int(batched["n_tokens"].sum()),
        batched_seconds=batched_s,
        sequential_prompts=k,
        sequential_tokens=int(seq["n_tokens"].sum()),
        sequential_seconds=seq_s,
        same_texts=same,
        machine=machine_info(),
    )


# --- GPU: fraction of the decode bound ----------------------------------------------------------------------


def weight_bytes(shape: dict[str, int], bytes_per_param: int = 2) -> int:
    """Bytes of a Llama/Mistral-shaped model's weights (untied embeddings and LM head)."""
    h, i, v, layers = (
        shape["hidden_size"],
        shape["intermediate_size"],
        shape["vocab_size"],
        shape["num_layers"],
    )
    kv = h * shape["num_kv_heads"] // shape["num_heads"]
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * i + 2 * h  # q, o; k, v; gate, up, down; two norms
    return (layers * per_layer + 2 * v * h + h) * bytes_per_param


def kv_bytes_per_token(shape: dict[str, int], bytes_per_value: int = 2) -> int:
    """KV-cache bytes one token adds (keys and values, every layer)."""
    head_dim = shape["hidden_size"] // shape["num_heads"]
    return 2 * shape["num_layers"] * shape["num_kv_heads"] * head_dim * bytes_per_value


def decode_bound_tokens_per_second(
    shape: dict[str, int], batch: int, prompt_len: int, new_tokens: int, bandwidth: float
) -> float:
    """Tokens/s if every decode step only read the weights and the batch's KV cache at `bandwidth` bytes/s."""
    w, kv = weight_bytes(shape), kv_bytes_per_token(shape)
    seconds = sum((w + kv * batch * (prompt_len + step)) / bandwidth for step in range(new_tokens))
    return batch * new_tokens / seconds


@dataclass(frozen=True)
class GpuGenerateBenchResult:
    preset: str
    prompts: int
    samples: int
    prompt_len: int
    max_new_tokens: int
    tokens: int
    seconds: float
    cold_seconds: float
    bandwidth_gb_s: float
    bound_tokens_per_second: float
    machine: dict[str, Any]

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def fraction_of_bound(self) -> float:
        return self.tokens_per_second / self.bound_tokens_per_second if self.bound_tokens_per_second else 0.0

    ok = True

    def to_dict(self) -> dict[str, Any]:
        out = {"bench": "generate", **asdict(self)}
        out["tokens_per_second"] = round(self.tokens_per_second, 1)
        out["fraction_of_decode_bound"] = round(self.fraction_of_bound, 4)
        return out

    def summary_lines(self) -> list[str]:
        return [
            f"generation (transformers backend) on {self.machine['gpu']}: preset {self.preset!r}, "
            f"{self.prompts} prompts x {self.samples} samples x {self.max_new_tokens} new tokens, one batch",
            f"warm: {self.tokens} tokens in {self.seconds:.2f} s = {self.tokens_per_second:,.0f} tokens/s "
            f"(cold first call {self.cold_seconds:.2f} s)",
            f"decode bound at {self.bandwidth_gb_s:,.0f} GB/s (measured copy): "
            f"{self.bound_tokens_per_second:,.0f} tokens/s; reached {100 * self.fraction_of_bound:.1f} %",
        ]


def measure_copy_bandwidth(device: str, gib: float = 2.0, repeats: int = 5) -> float:
    """Bytes/s of a device-to-device copy (read + write counted), best of `repeats`."""
    import torch

    n = int(gib * 2**30) // 2
    src = torch.empty(n, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = perf_counter()
        dst.copy_(src)
        torch.cuda.synchronize()
        best = min(best, perf_counter() - t0)
    return 2 * n * 2 / best


def bench_generate_gpu(
    preset: str = "mistral-7b",
    *,
    prompts: int = 64,
    samples: int = 5,
    prompt_len: int = 128,
    max_new_tokens: int = 256,
    seed: int = 0,
    progress: Progress = _quiet,
) -> GpuGenerateBenchResult:
    """The transformers backend's sampling path on a random-weight Mistral-7B shape (see the module docstring)."""
    import torch

    if not torch.cuda.is_available():
        raise CudaUnavailable(f"CUDA is not available: preset {preset!r} needs a GPU")
    from transformers import AutoModelForCausalLM, MistralConfig

    shape = MISTRAL_7B
    cfg = MistralConfig(
        vocab_size=shape["vocab_size"],
        hidden_size=shape["hidden_size"],
        intermediate_size=shape["intermediate_size"],
        num_hidden_layers=shape["num_layers"],
        num_attention_heads=shape["num_heads"],
        num_key_value_heads=shape["num_kv_heads"],
        max_position_embeddings=4096,
        sliding_window=None,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
    )
    torch.manual_seed(seed)
    progress("building the random-weight model on cuda")
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).eval()
    batch = prompts * samples
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, shape["vocab_size"], (prompts, prompt_len), generator=gen).repeat_interleave(
        samples, 0
    )
    enc = {"input_ids": ids.cuda(), "attention_mask": torch.ones_like(ids).cuda()}
    seeds = list(range(batch))
    sampling = Sampling(max_new_tokens=max_new_tokens)
    progress("cold call")
    torch.cuda.synchronize()
    t0 = perf_counter()
    generate_ids(model, enc, seeds, sampling, eos=None, pad=0)
    torch.cuda.synchronize()
    cold = perf_counter() - t0
    progress("warm call")
    t0 = perf_counter()
    new, *_ = generate_ids(model, enc, seeds, sampling, eos=None, pad=0)
    torch.cuda.synchronize()
    warm = perf_counter() - t0
    bw = measure_copy_bandwidth("cuda")
    return GpuGenerateBenchResult(
        preset=preset,
        prompts=prompts,
        samples=samples,
        prompt_len=prompt_len,
        max_new_tokens=max_new_tokens,
        tokens=int(new.numel()),
        seconds=warm,
        cold_seconds=cold,
        bandwidth_gb_s=bw / 1e9,
        bound_tokens_per_second=decode_bound_tokens_per_second(shape, batch, prompt_len, max_new_tokens, bw),
        machine=machine_info(),
    )
