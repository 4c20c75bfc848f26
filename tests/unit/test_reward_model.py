"""The weak-supervision reward model: training on soft labels, scoring, and reuse of the versioned artifact."""

from __future__ import annotations

import shutil

import numpy as np
import polars as pl
import pytest

from prefscale.config.rewards import RewardModelSettings
from prefscale.rewards.reward_model import (
    REPORT_FILE,
    ensure_reward_model,
    find_reward_model,
    pair_agreement,
    reward_model_inputs,
    reward_model_params,
    reward_model_scores,
    reward_model_text,
    stored_report,
    train_reward_model,
)
from prefscale.storage import ArtifactStore, MissingArtifactError

SETTINGS = RewardModelSettings(epochs=12, batch_size=8, learning_rate=3e-3, max_length=64)


def _candidates(n_prompts: int = 6):
    rows = []
    for p in range(n_prompts):
        for k, response in enumerate(
            [
                f"Thank you for asking. Restart the router and check line {p}.",
                f"No. Line {p}.",
                f"Thanks, here are the steps for line {p}: unplug, wait, plug in.",
                f"Whatever, line {p}.",
            ]
        ):
            rows.append((f"p{p}", k, f"My internet is down on line {p}.", response))
    cands = pl.DataFrame(rows, schema=["prompt_id", "sample_idx", "prompt", "response"], orient="row")
    cands = cands.with_columns(
        (pl.col("prompt_id") + "-" + pl.col("sample_idx").cast(pl.String)).alias("candidate_id")
    )
    # the label model's soft labels: helpful answers (they thank) high, the others low
    labels = cands.select(
        "candidate_id",
        pl.when(pl.col("response").str.contains("(?i)thank")).then(0.9).otherwise(0.15).alias("p_high"),
    )
    return cands, labels


def test_trains_on_soft_labels_and_scores(tiny_policy, cpu, tmp_path):
    policy, _ = tiny_policy
    cands, labels = _candidates()
    out = tmp_path / "rm"
    rep = train_reward_model(policy, cands, labels, SETTINGS, out, cpu, seed=0)
    assert rep.steps == 12 * 3  # 24 examples in batches of 8
    assert rep.n_examples == 24 and rep.n_parameters > 0
    assert rep.final_loss < rep.first_loss
    assert rep.pearson_with_labels > 0.5 and rep.pair_agreement > 0.75
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    scores = reward_model_scores(cands, out, cpu)
    assert scores.columns == ["candidate_id", "score"] and scores.height == 24
    assert scores["score"].is_between(0, 1).all()
    joined = scores.join(labels, on="candidate_id")
    high = joined.filter(pl.col("p_high") > 0.5)["score"].mean()
    low = joined.filter(pl.col("p_high") < 0.5)["score"].mean()
    assert high > low
    # deterministic from the seed: a second run writes the same weights
    out2 = tmp_path / "rm2"
    train_reward_model(policy, cands, labels, SETTINGS, out2, cpu, seed=0)
    assert (out / "model.safetensors").read_bytes() == (out2 / "model.safetensors").read_bytes()
    assert (out / REPORT_FILE).read_text() == (out2 / REPORT_FILE).read_text()


def test_scratch_init_uses_the_policy_tokenizer(tiny_policy, cpu, tmp_path):
    policy, _ = tiny_policy
    cands, labels = _candidates(2)
    settings = RewardModelSettings(init="scratch", hidden_size=16, num_layers=1, num_heads=2, epochs=1)
    rep = train_reward_model(policy, cands, labels, settings, tmp_path / "rm", cpu, seed=1)
    assert rep.n_parameters < 40_000
    assert reward_model_scores(cands, tmp_path / "rm", cpu)["score"].is_finite().all()


def test_bad_training_inputs(tiny_policy, cpu, tmp_path):
    policy, _ = tiny_policy
    cands, labels = _candidates(1)
    with pytest.raises(ValueError, match="2 candidates have no quality label"):
        train_reward_model(policy, cands, labels.head(2), SETTINGS, tmp_path / "a", cpu, seed=0)
    with pytest.raises(ValueError, match="at least 2"):
        train_reward_model(policy, cands.head(1), labels, SETTINGS, tmp_path / "b", cpu, seed=0)


def test_text_and_pair_agreement(tiny_policy):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_policy[0])
    assert reward_model_text(tok, "hi", "hello").startswith("<|user|>\nhi\n<|assistant|>\nhello")

    class Plain:
        chat_template = None

    assert reward_model_text(Plain(), "hi", "hello") == "hi\n\nhello"
    # p1: orders agree on 2 of the 3 distinct-target pairs; p2's targets tie (skipped)
    got = pair_agreement(
        ["p1", "p1", "p1", "p2", "p2"],
        np.array([0.9, 0.5, 0.6, 0.1, 0.2]),
        np.array([1.0, 0.4, 0.3, 0.5, 0.5]),
    )
    assert got == pytest.approx(2 / 3)
    assert np.isnan(pair_agreement(["p"], np.array([1.0]), np.array([1.0])))


def test_ensure_reuses_until_an_input_or_setting_changes(tiny_policy, cpu, tmp_path):
    policy, _ = tiny_policy
    store = ArtifactStore(tmp_path / "home")
    with pytest.raises(MissingArtifactError, match="iteration 1's candidates"):
        reward_model_inputs(store)
    cands, labels = _candidates(2)
    store.write_frame("candidates", "1", cands)
    store.write_frame("quality_labels", "1", labels)
    store.publish_dir("base_policy", "all", lambda d: shutil.copytree(policy, d, dirs_exist_ok=True))
    settings = RewardModelSettings(epochs=1, batch_size=8, max_length=64)

    ref, rep = ensure_reward_model(store, settings, 0, cpu)
    assert rep is not None  # trained
    manifest = store.manifest(ref)
    assert [i["asset"] for i in manifest["inputs"]] == ["candidates", "quality_labels", "base_policy"]
    assert manifest["params"]["trained_on_iteration"] == 1
    assert stored_report(ref)["n_examples"] == 8

    again, rep2 = ensure_reward_model(store, settings, 0, cpu)
    assert rep2 is None and again.version == ref.version  # reused, not retrained

    # a later iteration's artifacts are not inputs
    store.write_frame("candidates", "2", cands.head(4))
    assert ensure_reward_model(store, settings, 0, cpu)[1] is None

    # new labels for iteration 1: retrained
    store.write_frame("quality_labels", "1", labels.with_columns(pl.lit(0.5).alias("p_high")))
    ref3, rep3 = ensure_reward_model(store, settings, 0, cpu)
    assert rep3 is not None and ref3.version != ref.version
    # other settings: retrained
    ref4, rep4 = ensure_reward_model(store, settings.model_copy(update={"learning_rate": 1e-2}), 0, cpu)
    assert rep4 is not None and ref4.version != ref3.version
    assert find_reward_model(store, reward_model_inputs(store), reward_model_params(settings, 0)) is None
    # a tampered version is never reused
    (ref4.path / "config.json").write_text("{}")
    assert (
        find_reward_model(
            store,
            reward_model_inputs(store),
            reward_model_params(settings.model_copy(update={"learning_rate": 1e-2}), 0),
        )
        is None
    )
