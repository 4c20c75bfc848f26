"""`prefscale bench dpo` (prefscale/bench_dpo.py): throughput and MFU accounting on a tiny CPU run."""

from __future__ import annotations

import argparse
import json

import pytest

from prefscale.tools.bench_dpo import PRESETS, add_parser, bench_dpo, flops_per_token, main


def test_flops_per_token_counts_policy_reference_and_recompute():
    f = flops_per_token(1000, layers=2, hidden=8, seq_len=16, precompute_ref=False, ckpt=True)
    fwd = 2 * 1000 + 4 * 2 * 8 * 16
    assert f == {"policy_fwd_bwd": 3 * fwd, "reference_fwd": fwd, "recompute": fwd}
    g = flops_per_token(1000, layers=2, hidden=8, seq_len=16, precompute_ref=True, ckpt=False)
    assert g["reference_fwd"] == 0 and g["recompute"] == 0


def test_tiny_bench_runs_and_reports_tokens_per_second_and_mfu():
    r = bench_dpo(
        "tiny", batch_pairs=2, seq_len=64, prompt_len=16, steps=2, warmup=1, threads=1, peak_tflops=0.05
    )
    assert r.ok and len(r.step_seconds) == 2
    assert r.tokens_per_step == 2 * 2 * 64
    assert r.tokens_per_second == pytest.approx(r.tokens_per_step / r.seconds_per_step)
    assert r.params_trainable < r.params_matmul < r.params_total  # LoRA: few trainable; embeddings not in N
    assert 0 < r.mfu_policy_only < r.mfu <= r.hfu
    assert r.model_tflops == pytest.approx(r.mfu * 0.05)
    d = json.loads(json.dumps(r.to_dict()))
    assert d["bench"] == "dpo" and d["tokens_per_second"] > 0 and d["peak_source"] == "--peak-tflops"
    assert any("MFU" in line for line in r.summary_lines())


def test_gpu_preset_is_selectable_but_needs_cuda(capsys):
    assert PRESETS["mistral-7b"]["hidden_size"] == 4096 and PRESETS["mistral-7b"]["num_kv_heads"] == 8
    assert PRESETS["mistral-7b"]["batch_pairs"] * 2 * PRESETS["mistral-7b"]["seq_len"] == 2 * 8 * 1024
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="bench"))
    args = parser.parse_args(["dpo", "--preset", "mistral-7b", "--precompute-ref", "--json"])
    assert args.preset == "mistral-7b" and args.precompute_ref and args.gradient_checkpointing is None
    import torch

    if not torch.cuda.is_available():
        assert main(["--preset", "mistral-7b"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err


def test_full_fine_tune_bench_uses_a_frozen_reference_copy():
    r = bench_dpo(
        "tiny",
        batch_pairs=2,
        seq_len=48,
        prompt_len=8,
        steps=1,
        warmup=0,
        threads=1,
        peak_tflops=0.05,
        lora_r=None,
    )
    assert r.ok and r.lora_r is None and r.params_trainable == r.params_total  # every weight trains


def test_prefscale_cli_reaches_bench_dpo(capsys):
    from prefscale.cli import build_parser

    args = build_parser().parse_args(["bench", "dpo", "--preset", "tiny", "--steps", "1", "--json"])
    assert args.bench == "dpo" and args.steps == 1 and args.json
