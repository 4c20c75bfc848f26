"""The vLLM backend without vLLM: the missing-package error, the settings mapping, and the output mapping."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field

import polars as pl
import pytest

from prefscale.config.generation import GenerationConfig
from prefscale.data import domain
from prefscale.generation.base import CANDIDATE_SCHEMA, Sampling, sample_seed
from prefscale.generation.registry import make_backend
from prefscale.generation.vllm_backend import (
    INSTALL_HINT,
    BackendUnavailable,
    VLLMBackend,
    engine_kwargs,
    finish_reason,
    import_vllm,
    sampling_params_kwargs,
)


def test_missing_vllm_names_the_extra(monkeypatch, tiny_policy):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError, installed or not
    with pytest.raises(BackendUnavailable, match=r"pip install prefscale\[vllm\]"):
        import_vllm()
    cfg = GenerationConfig(backend="vllm")
    with pytest.raises(BackendUnavailable, match="generation backend 'vllm' needs the vllm package"):
        make_backend(cfg, tiny_policy[0], None)
    assert INSTALL_HINT == "pip install prefscale[vllm]"


def test_sampling_params_mapping():
    s = Sampling(max_new_tokens=256, temperature=0.7, top_p=0.95, stop=("</s>", "\n\nUser:"))
    kw = sampling_params_kwargs(s, seed=2**40 + 5)
    assert kw == {
        "n": 1,
        "temperature": 0.7,
        "top_p": 0.95,
        "top_k": -1,
        "max_tokens": 256,
        "seed": (2**40 + 5) % (2**31 - 1),
        "stop": ["</s>", "\n\nUser:"],
        "skip_special_tokens": True,
        "include_stop_str_in_output": False,
    }
    assert sampling_params_kwargs(Sampling(), 1)["stop"] is None
    assert engine_kwargs("/m", 7, "bfloat16") == {
        "model": "/m",
        "tokenizer": "/m",
        "dtype": "bfloat16",
        "seed": 7,
    }
    assert finish_reason("stop") == "stop" and finish_reason("length") == "length"
    with pytest.raises(RuntimeError, match="finish_reason 'abort'"):
        finish_reason("abort")


@dataclass
class FakeCompletion:
    text: str
    token_ids: list[int]
    finish_reason: str


@dataclass
class FakeRequestOutput:
    outputs: list[FakeCompletion]
    metrics: object = None


@dataclass
class FakeLLM:
    """Records what vLLM's `LLM` would be given; answers from the seed."""

    kwargs: dict
    calls: list = field(default_factory=list)
    eos: int = -1

    def generate(self, prompts, params, use_tqdm=True):
        self.calls.append((prompts, params))
        out = []
        for p in params:
            long = p.kwargs["seed"] % 2 == 0
            ids = list(range(p.kwargs["max_tokens"])) if long else [7, 8, self.eos]
            metrics = types.SimpleNamespace(arrival_time=100.0, last_token_time=100.25)
            out.append(
                FakeRequestOutput(
                    [FakeCompletion(f" s{p.kwargs['seed']} ", ids, "length" if long else "stop")], metrics
                )
            )
        return out


def test_backend_maps_outputs_with_a_fake_engine(monkeypatch, tiny_policy):
    fake = types.ModuleType("vllm")
    fake.LLM = lambda **kw: FakeLLM(kw)
    fake.SamplingParams = lambda **kw: types.SimpleNamespace(kwargs=kw)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    s = Sampling(max_new_tokens=6)
    backend = VLLMBackend(tiny_policy[0], s, seed=3)
    backend.llm.eos = backend.tokenizer.eos_token_id
    assert backend.llm.kwargs["model"] == str(tiny_policy[0])
    prompts = domain.make_prompt_pool(4, seed=1).head(3)
    out, info = backend.generate(prompts, 2, seed=9)
    assert out.schema == pl.Schema(CANDIDATE_SCHEMA) and out.height == 6 and info.backend == "vllm"
    texts, params = backend.llm.calls[0]
    assert all(t.startswith("<|user|>") or "<|" in t for t in texts)  # chat-formatted by the policy tokenizer
    expected_seeds = [sample_seed(9, p, k) % (2**31 - 1) for p in prompts["prompt_id"] for k in range(2)]
    assert [p.kwargs["seed"] for p in params] == expected_seeds
    for text, n, fin, lat in out.select("response", "n_tokens", "finish_reason", "latency_s").rows():
        assert text.startswith("s") and lat == pytest.approx(0.25)
        assert (fin, n) in {("length", 6), ("stop", 2)}  # the end token is not counted
