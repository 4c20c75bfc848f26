"""The recipe's `dpo` section: its schema, its one-to-one mapping onto TRL's DPOConfig, and failing before compute."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from prefscale.cli import main
from prefscale.commands.train import launcher, train_dpo_args, work_dir_lock
from prefscale.compute import Compute
from prefscale.config.base import RecipeError
from prefscale.config.recipe import load_recipe
from prefscale.config.training import DPOSettings
from prefscale.training.dpo import (
    ADAPTER_DIR,
    build_dpo_config,
    dpo_fingerprint,
    last_complete_checkpoint,
    train_dpo,
    work_dir_for,
)
from tests.unit.test_dpo_resume import make_pairs

CPU = Compute("cpu", torch.float32)


@pytest.mark.parametrize(
    ("dpo", "where"),
    [
        ({"loss_type": "kto_pair"}, "dpo.loss_type"),
        ({"beta": 0}, "dpo.beta"),
        ({"beta": -0.1}, "dpo.beta"),
        ({"label_smoothing": 0.5}, "dpo.label_smoothing"),
        ({"ld_alpha": 1.5}, "dpo.ld_alpha"),
        ({"lr_scheduler_type": "cosine_annealing"}, "dpo.lr_scheduler_type"),
        ({"reference": "sft"}, "dpo.reference"),
        ({"save_steps": 0}, "dpo.save_steps"),
        ({"num_processes": 0}, "dpo.num_processes"),
        ({"lora": {"r": 0}}, "dpo.lora.r"),
        ({"max_length": 8}, "dpo.max_length"),
    ],
)
def test_invalid_dpo_settings_are_recipe_errors(dpo, where):
    with pytest.raises(RecipeError, match=where.replace(".", r"\.")):
        load_recipe("embedded", {"dpo": dpo})


@pytest.mark.parametrize("loss", ["sigmoid", "ipo", "robust", "hinge", "sppo_hard", "sigmoid_norm"])
def test_every_loss_type_maps_onto_dpo_config_and_trains(loss, tiny_policy, tmp_path, cpu):
    settings = DPOSettings(
        loss_type=loss,
        label_smoothing=0.1 if loss == "robust" else 0.0,
        num_train_epochs=1,
        per_device_train_batch_size=2,
        max_length=128,
        save_steps=None,
    )
    assert build_dpo_config(settings, tmp_path, CPU, seed=5).loss_type == [loss]
    rep = train_dpo(tiny_policy[0], make_pairs(2), settings, tmp_path / "out", tmp_path / "w", cpu, seed=0)
    assert rep.steps == 1 and rep.history and all(v == v for v in rep.final.values())  # finite, not NaN


def test_defaults_are_the_previous_behaviour():
    d = load_recipe("embedded").dpo
    assert (d.loss_type, d.beta, d.learning_rate, d.lr_scheduler_type, d.warmup_ratio) == (
        "sigmoid",
        0.1,
        2e-3,
        "cosine",
        0.1,
    )
    assert (d.num_train_epochs, d.per_device_train_batch_size, d.gradient_accumulation_steps) == (2, 16, 1)
    assert (d.max_length, d.gradient_checkpointing, d.precompute_ref_log_probs) == (256, False, False)
    assert d.reference == "previous" and d.num_processes == 1 and d.accelerate_config is None
    assert d.lora is not None and (d.lora.r, d.lora.alpha, d.lora.target_modules) == (16, 32, "all-linear")


def test_settings_map_one_to_one_onto_dpo_config(tmp_path):
    s = DPOSettings(
        loss_type="robust",
        beta=0.25,
        label_smoothing=0.1,
        ld_alpha=0.5,
        learning_rate=5e-4,
        lr_scheduler_type="linear",
        warmup_ratio=0.05,
        num_train_epochs=3,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        max_length=512,
        gradient_checkpointing=True,
        precompute_ref_log_probs=True,
        save_steps=7,
        save_total_limit=3,
    )
    cfg = build_dpo_config(s, tmp_path / "w", CPU, seed=11)
    assert cfg.loss_type == ["robust"] and cfg.beta == 0.25 and cfg.label_smoothing == 0.1
    assert (
        cfg.ld_alpha == 0.5 and build_dpo_config(DPOSettings(), tmp_path / "d", CPU, seed=1).ld_alpha is None
    )
    assert cfg.learning_rate == 5e-4 and cfg.lr_scheduler_type.value == "linear" and cfg.warmup_steps == 0.05
    assert cfg.num_train_epochs == 3 and cfg.per_device_train_batch_size == 4
    assert cfg.gradient_accumulation_steps == 2 and cfg.max_length == 512
    assert cfg.gradient_checkpointing is True and cfg.precompute_ref_log_probs is True
    assert cfg.save_strategy.value == "steps" and cfg.save_steps == 7 and cfg.save_total_limit == 3
    assert cfg.save_only_model is False  # optimizer + RNG state: needed to resume
    assert cfg.output_dir == str(tmp_path / "w") and cfg.seed == 11 and cfg.bf16 is False
    off = build_dpo_config(s.model_copy(update={"save_steps": None}), tmp_path / "w", CPU, seed=11)
    assert off.save_strategy.value == "no"


def test_fingerprint_and_work_dir_follow_inputs_and_settings(tmp_path):
    s = DPOSettings()
    kw = {"policy_sha256": "a" * 64, "pairs_sha256": "b" * 64, "settings": s, "seed": 1, "compute": CPU}
    fp = dpo_fingerprint(**kw)
    assert fp == dpo_fingerprint(**kw)
    assert fp != dpo_fingerprint(**{**kw, "pairs_sha256": "c" * 64})
    assert fp != dpo_fingerprint(**{**kw, "settings": s.model_copy(update={"beta": 0.2})})
    assert fp != dpo_fingerprint(**{**kw, "seed": 2})
    assert fp != dpo_fingerprint(**kw, world_size=2)
    assert work_dir_for(tmp_path, "2", fp) == tmp_path / "work" / "dpo_checkpoint" / "2" / fp[:16]


def test_last_complete_checkpoint_skips_a_half_written_one(tmp_path):
    assert last_complete_checkpoint(tmp_path / "missing") is None
    for step, state in [(4, {"global_step": 4}), (8, {"global_step": 8}), (12, None)]:
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        if state is not None:
            (d / "trainer_state.json").write_text(json.dumps(state))
    (tmp_path / "checkpoint-16").mkdir()
    (tmp_path / "checkpoint-16" / "trainer_state.json").write_text('{"global_st')  # killed mid-write
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-8"


def test_launcher_uses_accelerate_for_several_processes_or_a_config():
    assert launcher(1)[-2:] == ["-m", "prefscale.cli"] and "launch" not in launcher(1)
    multi = launcher(2, main_process_port=29999)
    assert "--multi_gpu" in multi and multi[multi.index("--num_processes") + 1] == "2"
    assert multi[-2:] == ["-m", "prefscale.cli"] and "29999" in multi
    zero = launcher(8, "deploy/accelerate/deepspeed_zero2.yaml")
    assert zero[zero.index("--config_file") + 1] == "deploy/accelerate/deepspeed_zero2.yaml"
    assert "--multi_gpu" not in zero


def test_work_dir_is_locked_while_training(tmp_path):
    with work_dir_lock(tmp_path / "w"), pytest.raises(ValueError, match="in use"):  # noqa: SIM117
        with work_dir_lock(tmp_path / "w"):
            pass
    with work_dir_lock(tmp_path / "w"):  # released
        pass


def _args(base: Path, pairs: Path, out: Path, work: Path, settings_json: str) -> list[str]:
    args = train_dpo_args(
        policy=base, pairs=pairs, out=out, work_dir=work, settings=DPOSettings(), seed=0, device="cpu"
    )
    args[args.index("--settings-json") + 1] = settings_json
    return args


@pytest.mark.parametrize(
    ("settings_json", "expected"),
    [
        ('{"loss_type": "kto_pair"}', "dpo.loss_type"),
        ('{"beta": 0}', "dpo.beta"),
        ('{"max_length": 16}', "dpo.max_length=16 is not longer than the longest prompt"),
    ],
)
def test_train_dpo_command_rejects_bad_settings_before_training(
    tiny_policy, tmp_path, capsys, monkeypatch, settings_json, expected
):
    make_pairs(4).write_parquet(tmp_path / "pairs.parquet")
    started = []
    monkeypatch.setattr("trl.DPOTrainer.train", lambda self, *a, **k: started.append(1))
    code = main(
        _args(tiny_policy[0], tmp_path / "pairs.parquet", tmp_path / "out", tmp_path / "w", settings_json)
    )
    assert code == 2
    assert expected in capsys.readouterr().err
    assert not started
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_train_dpo_command_rejects_missing_inputs(tiny_policy, tmp_path, capsys):
    code = main(
        _args(
            tiny_policy[0], tmp_path / "nope.parquet", tmp_path / "out", tmp_path / "w", "{}"
        )  # no pairs file
    )
    assert code == 2 and "--pairs" in capsys.readouterr().err
    code = main(_args(tmp_path, tmp_path / "nope.parquet", tmp_path / "out", tmp_path / "w", "{}"))
    assert code == 2 and "not a model folder" in capsys.readouterr().err


def test_full_fine_tune_with_the_fixed_base_as_reference(tiny_policy, tmp_path, cpu):
    """`lora: null` + `reference: base` from a later iteration's starting point: a separate frozen reference."""
    base, _ = tiny_policy
    pairs = make_pairs(4)
    s = DPOSettings(
        num_train_epochs=1,
        per_device_train_batch_size=4,
        max_length=128,
        learning_rate=1e-3,
        warmup_ratio=0.0,
        save_steps=None,
    )
    train_dpo(base, pairs, s, tmp_path / "it1", tmp_path / "w1", cpu, seed=0)
    full = s.model_copy(update={"lora": None, "reference": "base", "loss_type": "sigmoid_norm"})
    rep = train_dpo(
        tmp_path / "it1", pairs, full, tmp_path / "it2", tmp_path / "w2", cpu, seed=0, reference_dir=base
    )
    assert rep.steps == 1 and not (tmp_path / "it2" / ADAPTER_DIR).exists()  # no adapter without LoRA
    before, after = (
        load_file(tmp_path / "it1" / "model.safetensors"),
        load_file(tmp_path / "it2" / "model.safetensors"),
    )
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # against the base the policy starts off-reference: the first step's rewards are not both zero
    assert rep.history[0]["rewards/chosen"] != 0.0 or rep.history[0]["rewards/rejected"] != 0.0


def test_precomputed_reference_log_probs_give_the_same_model(tiny_policy, tmp_path, cpu):
    base, _ = tiny_policy
    pairs = make_pairs(4)
    s = DPOSettings(num_train_epochs=1, per_device_train_batch_size=2, max_length=128, save_steps=None)
    train_dpo(base, pairs, s, tmp_path / "a", tmp_path / "wa", cpu, seed=0)
    pre = s.model_copy(update={"precompute_ref_log_probs": True})
    train_dpo(base, pairs, pre, tmp_path / "b", tmp_path / "wb", cpu, seed=0)
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), k
