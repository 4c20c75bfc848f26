"""`prefscale bench generate`: the JSON line, the CPU exit for the GPU preset, the decode-bound arithmetic."""

from __future__ import annotations

import json

import pytest
import torch

from prefscale.cli import main
from prefscale.tools.bench_generate import (
    MISTRAL_7B,
    decode_bound_tokens_per_second,
    kv_bytes_per_token,
    weight_bytes,
)


def test_tiny_bench_json_last_line(capsys):
    args = ["bench", "generate", "--prompts", "4", "--samples", "2", "--max-new-tokens", "6"]
    assert main([*args, "--batch-size", "8", "--sequential-prompts", "2", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    assert result["bench"] == "generate" and result["preset"] == "tiny"
    assert isinstance(result["speedup"], float) and result["speedup"] > 0
    assert result["batched_tokens_per_second"] > 0 and result["sequential_tokens_per_second"] > 0
    assert result["same_texts"] is True  # per-sample seeds: batching does not change a text
    assert result["batched_tokens"] <= 4 * 2 * 6 and result["sequential_prompts"] == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only exit")
def test_gpu_preset_without_cuda_exits_2(capsys):
    assert main(["bench", "generate", "--preset", "mistral-7b", "--json"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_mistral_shape_bytes_and_decode_bound():
    # Mistral-7B-v0.1 has 7.24 B parameters: 14.5 GB in bf16
    assert weight_bytes(MISTRAL_7B) / 2 == pytest.approx(7.24e9, rel=0.01)
    assert kv_bytes_per_token(MISTRAL_7B) == 2 * 32 * 8 * 128 * 2  # 128 KiB per token
    w, kv = weight_bytes(MISTRAL_7B), kv_bytes_per_token(MISTRAL_7B)
    bw = 3.0e12
    # one sequence, one step: the weights and the prompt's cache are read once for one token
    assert decode_bound_tokens_per_second(MISTRAL_7B, 1, 100, 1, bw) == pytest.approx(bw / (w + kv * 100))
    # bigger batches amortise the weights: the bound grows, sub-linearly because of the KV cache
    b1 = decode_bound_tokens_per_second(MISTRAL_7B, 1, 128, 256, bw)
    b320 = decode_bound_tokens_per_second(MISTRAL_7B, 320, 128, 256, bw)
    assert 100 * b1 < b320 < 320 * b1
