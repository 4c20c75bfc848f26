"""The dtype models run in: bf16 on CUDA and on CPUs with fast bf16, fp32 elsewhere; PREFSCALE_DTYPE overrides."""

from __future__ import annotations

import json

import pytest
import torch

from prefscale import compute
from prefscale.cli import main
from prefscale.compute import DTYPE_ENV, pick_dtype, resolve_compute


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv(DTYPE_ENV, raising=False)


@pytest.mark.parametrize(("fast", "expected"), [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_follows_the_cpus_bf16_support(monkeypatch, fast, expected):
    monkeypatch.setattr(compute, "fast_cpu_bf16", lambda: fast)
    assert pick_dtype("cpu") == expected
    assert pick_dtype("cpu", "auto") == expected
    assert resolve_compute("cpu", threads=1).dtype == expected
    assert pick_dtype("cuda") == torch.bfloat16  # GPUs always get bf16


def test_the_recipe_and_the_environment_override_auto(monkeypatch):
    monkeypatch.setattr(compute, "fast_cpu_bf16", lambda: True)
    assert pick_dtype("cpu", "float32") == torch.float32
    monkeypatch.setenv(DTYPE_ENV, "float32")  # an operator's override beats the recipe
    assert pick_dtype("cpu", "bfloat16") == torch.float32
    monkeypatch.setenv(DTYPE_ENV, "fp16")
    with pytest.raises(ValueError, match="PREFSCALE_DTYPE must be auto, float32 or bfloat16; got 'fp16'"):
        pick_dtype("cpu")
    monkeypatch.delenv(DTYPE_ENV)
    with pytest.raises(ValueError, match=r"policy\.dtype must be"):
        pick_dtype("cpu", "half")


def test_support_flags_are_booleans():
    flags = compute.cpu_bf16_support()
    assert set(flags) == {"amx_bf16", "avx512_bf16"} and all(isinstance(v, bool) for v in flags.values())
    assert compute.fast_cpu_bf16() == any(flags.values())


def test_bench_dtype_json_on_the_tiny_shape(capsys):
    """`prefscale bench dtype --json`: both dtypes timed, speedups and the CPU's choice as the last JSON line."""
    rc = main(
        [
            "bench",
            "dtype",
            "--shape",
            "tiny",
            "--batch",
            "2",
            "--seq-len",
            "16",
            "--steps",
            "1",
            "--prompts",
            "4",
            "--max-new-tokens",
            "4",
            "--json",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["dtype"] == ("bfloat16" if compute.fast_cpu_bf16() else "float32")
    assert out["train_speedup"] > 0 and out["generate_speedup"] > 0
    assert set(out["train_seconds"]) == set(out["generate_seconds"]) == {"float32", "bfloat16"}
    assert out["train_tokens"] == 32 and out["generate_tokens"] == 16


def test_cpu_allocator_tuning_can_be_turned_off(monkeypatch):
    compute.tune_cpu_allocator.cache_clear()
    monkeypatch.setenv(compute.ALLOCATOR_ENV, "0")
    assert compute.tune_cpu_allocator() is False
    compute.tune_cpu_allocator.cache_clear()
    monkeypatch.delenv(compute.ALLOCATOR_ENV)
    import sys

    applied = compute.tune_cpu_allocator()
    assert applied is (sys.platform.startswith("linux"))  # glibc's mallopt accepts every setting here
    resolve_compute("cpu", threads=1)  # tunes once (cached), never fails
