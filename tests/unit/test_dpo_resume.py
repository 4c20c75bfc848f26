"""`prefscale train-dpo` as a real subprocess: SIGKILLed after its first trainer checkpoint, then resumed.

The resumed run must start from that checkpoint (fewer steps run) and publish the same weights an uninterrupted
run makes. A second test runs the same command on 2 CPU processes (gloo) through `accelerate launch`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from prefscale.commands.train import launcher, train_dpo_args
from prefscale.config.training import DPOSettings
from prefscale.generation.transformers_backend import sample_responses
from prefscale.pairs.selection import PAIR_SCHEMA
from prefscale.policy.io import load_policy
from prefscale.training.dpo import ADAPTER_DIR, REPORT_FILE, DPOReport, last_complete_checkpoint, train_dpo

# 24 pairs, batch 2, 2 epochs: 24 optimizer steps, a trainer checkpoint every 4.
SETTINGS = DPOSettings(
    num_train_epochs=2,
    per_device_train_batch_size=2,
    max_length=128,
    learning_rate=1e-3,
    save_steps=4,
    save_total_limit=3,
)
TOTAL_STEPS = 24
SEED = 3
GOOD = [
    "Thank you for reaching out. I am sorry about this.\n1. Unplug the router.\n2. Plug it back in.\n"
    "Let me know if there is anything else I can help with.",
    "Thanks for telling us. First, restart the modem. Then check the cable. Reply here if it persists.",
]
BAD = ["Have you tried restarting the router? Obviously not our fault.", "Calm down. It works for me."]


def make_pairs(n: int) -> pl.DataFrame:
    rows = []
    for i in range(n):
        chosen, rejected = GOOD[i % 2], BAD[(i // 2) % 2]
        rows.append(
            {
                "prompt_id": f"p{i}",
                "prompt": [{"role": "user", "content": f"my internet drops every evening, case {i}"}],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
                "chosen_id": f"p{i}-0",
                "rejected_id": f"p{i}-1",
                "chosen_reward": 0.9,
                "rejected_reward": 0.1,
                "margin": 0.8,
                "length_diff": len(chosen) - len(rejected),
                "rejected_unfinished": False,
            }
        )
    return pl.DataFrame(rows, schema=PAIR_SCHEMA)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PIPES")}  # not launched by Pipes
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    return env


def _command(base: Path, pairs: Path, out: Path, work: Path, processes: int = 1) -> list[str]:
    return [
        *launcher(processes),
        *train_dpo_args(
            policy=base,
            pairs=pairs,
            out=out,
            work_dir=work,
            settings=SETTINGS,
            seed=SEED,
            device="cpu",
            threads=1,
        ),
        "--json",
    ]


@pytest.fixture(scope="module")
def inputs(tiny_policy, tmp_path_factory):
    root = tmp_path_factory.mktemp("dpo_resume")
    pairs = make_pairs(TOTAL_STEPS)
    pairs.write_parquet(root / "pairs.parquet")
    return tiny_policy[0], pairs, root


@pytest.fixture(scope="module")
def uninterrupted(inputs, cpu):
    base, pairs, root = inputs
    report = train_dpo(base, pairs, SETTINGS, root / "full", root / "full-work", cpu, seed=SEED)
    assert report.steps == TOTAL_STEPS and report.resumed_from_step == 0
    return root / "full"


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_sigkill_then_resume_matches_an_uninterrupted_run(inputs, uninterrupted, cpu):
    base, _, root = inputs
    work = root / "work"
    # 1. Start training, kill -9 as soon as the first complete trainer checkpoint exists.
    proc = subprocess.Popen(
        _command(base, root / "pairs.parquet", root / "out-killed", work),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while last_complete_checkpoint(work) is None:
        assert proc.poll() is None, (
            f"training exited before its first checkpoint: {proc.communicate()[1][-2000:]}"
        )
        assert time.monotonic() < deadline, "no trainer checkpoint within 120 s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    killed_at = int(last_complete_checkpoint(work).name.split("-")[1])
    assert 0 < killed_at < TOTAL_STEPS
    assert not (root / "out-killed" / "model.safetensors").exists()  # nothing was saved as final

    # 2. Run the same command again: it resumes from the newest complete checkpoint.
    done = subprocess.run(
        _command(base, root / "pairs.parquet", root / "out", work),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = _last_json(done.stdout)
    resumed_from = summary["resumed_from_step"]
    assert resumed_from >= killed_at and resumed_from % SETTINGS.save_steps == 0
    assert summary["steps"] == TOTAL_STEPS
    assert summary["steps_run"] == TOTAL_STEPS - resumed_from < TOTAL_STEPS
    report = DPOReport.read(work / REPORT_FILE)
    assert report.resumed_from_step == resumed_from
    assert len(report.history) == TOTAL_STEPS  # the restored log history plus the steps run now
    assert [int(h["step"]) for h in report.history] == list(range(1, TOTAL_STEPS + 1))

    # 3. Same weights as the uninterrupted run (same seed), and a loadable model + adapter.
    full = load_file(uninterrupted / "model.safetensors")
    resumed = load_file(root / "out" / "model.safetensors")
    assert sorted(full) == sorted(resumed)
    for k in full:
        assert torch.allclose(full[k], resumed[k], rtol=1e-5, atol=1e-6), k
    base_weights = load_file(base / "model.safetensors")
    assert any(not torch.equal(base_weights[k], resumed[k]) for k in base_weights)
    assert (root / "out" / ADAPTER_DIR / "adapter_model.safetensors").is_file()
    model, _ = load_policy(root / "out", cpu)
    assert not any("lora" in n for n, _ in model.named_parameters())


def test_two_cpu_processes_through_accelerate_launch(inputs, cpu):
    base, _, root = inputs
    out, work = root / "out-ddp", root / "work-ddp"
    done = subprocess.run(
        _command(base, root / "pairs.parquet", out, work, processes=2),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = _last_json(done.stdout)
    assert summary["world_size"] == 2
    assert summary["distributed_type"] == "MULTI_CPU"  # DDP over gloo
    assert summary["steps"] == TOTAL_STEPS // 2  # 2 ranks x batch 2: half the optimizer steps
    assert (out / ADAPTER_DIR / "adapter_config.json").is_file()
    # The checkpoint loads and evaluates: sample a response from it.
    model, tok = load_policy(out, cpu)
    prompts = pl.DataFrame(
        {"prompt_id": ["q"], "prompt": ["my router is slow"], "task_type": ["troubleshooting"]}
    )
    sample = sample_responses(model, tok, prompts, 1, max_new_tokens=12, seed=0)
    assert sample.height == 1 and sample["n_tokens"][0] > 0
