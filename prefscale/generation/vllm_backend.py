"""The vLLM backend: vLLM's offline engine (continuous batching, paged KV cache) on a GPU.

An optional extra: `pip install prefscale[vllm]`. vLLM is imported only when this backend is built, so the rest
of prefscale never needs it. Prompts are chat-formatted with the policy's own tokenizer (the same text the
transformers backend feeds), each sample is one request with its own seed (`sample_seed`), and the outputs fill
the same `CANDIDATE_SCHEMA` columns.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any

import polars as pl

from prefscale.generation.base import (
    BackendSpec,
    GenerationInfo,
    Sample,
    Sampling,
    candidates_frame,
    check_prompts,
    sample_seed,
)
from prefscale.policy.chat import chat_text
from prefscale.progress import Progress

INSTALL_HINT = "pip install prefscale[vllm]"
SEED_MODULUS = 2**31 - 1  # vLLM seeds are plain ints; keep them in the 32-bit range every version accepts


class BackendUnavailable(RuntimeError):
    """A generation backend whose optional dependency is not installed."""


def import_vllm() -> Any:
    """The `vllm` module, or `BackendUnavailable` saying how to install it."""
    try:
        return importlib.import_module("vllm")
    except ImportError as e:
        raise BackendUnavailable(
            f"generation backend 'vllm' needs the vllm package, which is not installed ({e}); install it with "
            f"`{INSTALL_HINT}` (Linux with a CUDA GPU), or set generation.backend to transformers"
        ) from e


def sampling_params_kwargs(sampling: Sampling, seed: int) -> dict[str, Any]:
    """The keyword arguments of `vllm.SamplingParams` for one sample drawn with `seed`."""
    return {
        "n": 1,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": -1,
        "max_tokens": sampling.max_new_tokens,
        "seed": seed % SEED_MODULUS,
        "stop": list(sampling.stop) or None,
        "skip_special_tokens": True,
        "include_stop_str_in_output": False,
    }


def finish_reason(reason: str | None) -> str:
    """vLLM's finish reason mapped onto `stop` / `length` (an aborted request is an error)."""
    if reason == "length":
        return "length"
    if reason == "stop":
        return "stop"
    raise RuntimeError(f"vLLM request ended with finish_reason {reason!r} (expected 'stop' or 'length')")


def engine_kwargs(model_dir: str | Path, seed: int, dtype: str = "auto") -> dict[str, Any]:
    """The keyword arguments of `vllm.LLM` for a policy folder."""
    return {"model": str(model_dir), "tokenizer": str(model_dir), "dtype": dtype, "seed": seed % SEED_MODULUS}


class VLLMBackend:
    """Samples with `vllm.LLM.generate`, one request (and one seed) per sample."""

    name = "vllm"

    @classmethod
    def from_config(cls, spec: BackendSpec) -> VLLMBackend:
        return cls(spec.model_dir, spec.sampling, compute=spec.compute)

    def __init__(
        self, model_dir: str | Path, sampling: Sampling, *, compute: Any = None, seed: int = 0
    ) -> None:
        self.vllm = import_vllm()
        from transformers import AutoTokenizer

        self.model_dir = str(model_dir)
        self.sampling = sampling
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        dtype = "bfloat16" if compute is not None and getattr(compute, "bf16", False) else "auto"
        self.llm = self.vllm.LLM(**engine_kwargs(self.model_dir, seed, dtype))

    def generate(self, prompts: pl.DataFrame, n: int, *, seed: int) -> tuple[pl.DataFrame, GenerationInfo]:
        check_prompts(prompts, n)
        pid = prompts["prompt_id"].to_list()
        texts = [chat_text(self.tokenizer, p, system=self.sampling.system) for p in prompts["prompt"]]
        jobs = [(i, k) for i in range(prompts.height) for k in range(n)]
        params = [
            self.vllm.SamplingParams(**sampling_params_kwargs(self.sampling, sample_seed(seed, pid[i], k)))
            for i, k in jobs
        ]
        progress = Progress("generation (vllm)", len(jobs), "responses")  # one call: the start and the end
        t0 = time.perf_counter()
        outputs = self.llm.generate([texts[i] for i, _ in jobs], params, use_tqdm=False)
        seconds = time.perf_counter() - t0
        progress.advance(len(jobs))
        eos = self.tokenizer.eos_token_id
        results = {job: _sample(out, seconds, eos) for job, out in zip(jobs, outputs, strict=True)}
        info = GenerationInfo(backend=self.name, seconds=seconds, requests=len(jobs))
        return candidates_frame(prompts, n, results), info


def _sample(request_output: Any, fallback_latency: float, eos: int | None = None) -> Sample:
    """A `Sample` from one vLLM `RequestOutput` (latency from its metrics when vLLM reports them).

    `n_tokens` counts the response's tokens without the end token, as the transformers backend does.
    """
    out = request_output.outputs[0]
    ids = list(out.token_ids)
    if ids and eos is not None and ids[-1] == eos:
        ids = ids[:-1]
    latency = fallback_latency
    metrics = getattr(request_output, "metrics", None)
    first, last = (getattr(metrics, k, None) for k in ("arrival_time", "last_token_time"))
    if isinstance(first, int | float) and isinstance(last, int | float) and last >= first:
        latency = float(last - first)
    return Sample(out.text.strip(), len(ids), finish_reason(out.finish_reason), latency)
