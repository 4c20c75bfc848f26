from __future__ import annotations

import math

import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from prefscale.config.training import DPOSettings
from prefscale.pairs.selection import PAIR_SCHEMA
from prefscale.policy.io import load_policy
from prefscale.training.dpo import train_dpo

SETTINGS = DPOSettings(num_train_epochs=1, per_device_train_batch_size=4, max_length=128, learning_rate=1e-3)
CHOSEN = (
    "Thank you for reaching out. I am sorry about this.\n1. Unplug the router.\n2. Plug it back in.\n"
    "Let me know if there is anything else I can help with."
)
REJECTED = "Have you tried restarting the router? Obviously not our fault."


def make_pairs(n=8, prompt="my router is very slow every evening. what should i do?"):
    return pl.DataFrame(
        [
            {
                "prompt_id": f"p{i}",
                "prompt": [{"role": "user", "content": f"{prompt} ({i})"}],
                "chosen": [{"role": "assistant", "content": CHOSEN}],
                "rejected": [{"role": "assistant", "content": REJECTED}],
                "chosen_id": f"p{i}-0",
                "rejected_id": f"p{i}-1",
                "chosen_reward": 0.9,
                "rejected_reward": 0.1,
                "margin": 0.8,
                "length_diff": len(CHOSEN) - len(REJECTED),
                "rejected_unfinished": False,
            }
            for i in range(n)
        ],
        schema=PAIR_SCHEMA,
    )


@pytest.fixture(scope="module")
def trained(tiny_policy, tmp_path_factory, cpu):
    base, _ = tiny_policy
    root = tmp_path_factory.mktemp("dpo")
    report = train_dpo(base, make_pairs(), SETTINGS, root / "out", root / "work", cpu, seed=0)
    return base, root / "out", report


def test_dpo_report(trained):
    _, _, report = trained
    assert report.steps == 2  # 8 pairs / batch 4 / 1 epoch
    assert len(report.history) == report.steps
    assert set(report.final) == {
        "loss",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
    }
    assert math.isfinite(report.final["loss"])
    assert all(math.isfinite(h["loss"]) for h in report.history)
    assert report.seconds > 0


def test_dpo_output_loads_and_is_merged(trained, cpu):
    _, out, _ = trained
    model, tokenizer = load_policy(out, cpu)
    assert tokenizer.padding_side == "left"
    assert tokenizer.chat_template is not None
    # merged: a plain causal LM, no LoRA parameters left
    assert not any("lora" in name for name, _ in model.named_parameters())
    ids = tokenizer("<|user|>\nhi\n<|assistant|>\n", return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        logits = model(**ids).logits
    assert torch.isfinite(logits).all()


def test_dpo_changes_the_weights(trained):
    base, out, _ = trained
    before = load_file(base / "model.safetensors")
    after = load_file(out / "model.safetensors")
    assert sorted(before) == sorted(after)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "DPO left every weight unchanged"
    # LoRA targets linear layers only
    assert all("proj" in k for k in changed)


def test_dpo_full_finetune_without_lora(tiny_policy, tmp_path, cpu):
    base, _ = tiny_policy
    settings = SETTINGS.model_copy(update={"lora": None, "warmup_ratio": 0.0})
    report = train_dpo(base, make_pairs(4), settings, tmp_path / "out", tmp_path / "work", cpu, seed=0)
    assert report.steps == 1
    after = load_file(tmp_path / "out" / "model.safetensors")
    before = load_file(base / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_dpo_rejects_empty_pairs(tiny_policy, tmp_path, cpu):
    base, _ = tiny_policy
    with pytest.raises(ValueError, match="no preference pairs"):
        train_dpo(base, make_pairs(0), SETTINGS, tmp_path / "out", tmp_path / "work", cpu, seed=0)


def test_dpo_rejects_max_length_shorter_than_prompt(tiny_policy, tmp_path, cpu):
    base, _ = tiny_policy
    long_prompt = " ".join(["my router keeps dropping the connection every evening"] * 8)
    settings = SETTINGS.model_copy(update={"max_length": 16})
    try:
        train_dpo(
            base, make_pairs(4, long_prompt), settings, tmp_path / "out", tmp_path / "work", cpu, seed=0
        )
    except ValueError as e:
        assert "max_length" in str(e), f"unrelated ValueError: {e}"
    else:
        raise AssertionError("train_dpo accepted a max_length shorter than the prompt")
