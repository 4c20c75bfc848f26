"""The checks' core: pair margins, pair → candidate references, and loading a checkpoint folder."""

import shutil

import polars as pl
import pytest
from safetensors.torch import load_file, save_file

from prefscale.pairs.checks import non_positive_margins, unknown_candidate_refs
from prefscale.pairs.selection import select_pairs
from prefscale.rewards.ensemble import combine_rewards
from prefscale.training.checks import checkpoint_loads


def _candidates() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "candidate_id": ["a-0", "a-1", "b-0", "b-1"],
            "prompt_id": ["a", "a", "b", "b"],
            "sample_idx": [0, 1, 0, 1],
            "prompt": ["qa", "qa", "qb", "qb"],
            "response": ["short", "a longer answer", "x", "y y"],
            "finish_reason": ["stop"] * 4,
        }
    )


def _pairs() -> pl.DataFrame:
    cands = _candidates()
    rewards = combine_rewards(
        cands,
        {"label_model": pl.DataFrame({"candidate_id": cands["candidate_id"], "score": [0.1, 0.9, 0.2, 0.4]})},
    )
    return select_pairs(cands, rewards).pairs


def test_real_pairs_pass_both_checks():
    pairs = _pairs()
    assert pairs.height == 2
    assert non_positive_margins(pairs).height == 0
    assert unknown_candidate_refs(pairs, _candidates()).height == 0


def test_zero_negative_and_nan_margins_are_reported():
    pairs = _pairs().with_columns(pl.Series("margin", [0.0, float("nan")]))
    assert non_positive_margins(pairs)["prompt_id"].to_list() == ["a", "b"]
    assert non_positive_margins(_pairs().with_columns(pl.lit(-0.5).alias("margin"))).height == 2
    with pytest.raises(ValueError, match="no 'margin' column"):
        non_positive_margins(_pairs().drop("margin"))


def test_a_cut_off_rejected_response_may_have_the_higher_reward():
    cands = _candidates().with_columns(
        pl.when(pl.col("candidate_id") == "a-1")
        .then(pl.lit("length"))
        .otherwise("finish_reason")
        .alias("finish_reason")
    )
    rewards = combine_rewards(
        cands,
        {"label_model": pl.DataFrame({"candidate_id": cands["candidate_id"], "score": [0.1, 0.9, 0.2, 0.4]})},
    )
    pairs = select_pairs(cands, rewards, unfinished_is_worst=True).pairs
    a = pairs.filter(pl.col("prompt_id") == "a").row(0, named=True)
    assert a["rejected_id"] == "a-1" and a["margin"] < 0  # finished 0.1 chosen over cut-off 0.9
    assert non_positive_margins(pairs, cands, unfinished_is_worst=True).height == 0
    assert non_positive_margins(pairs, unfinished_is_worst=True).height == 0  # rejected_unfinished suffices
    assert non_positive_margins(pairs, cands)["prompt_id"].to_list() == ["a"]  # on the raw reward it fails
    # a cut-off response chosen over a finished one is never what the key ranks first
    swapped = pairs.with_columns(
        pl.col("chosen_id").alias("rejected_id"), pl.col("rejected_id").alias("chosen_id")
    )
    swapped = swapped.with_columns(-pl.col("margin"))
    assert "a" in non_positive_margins(swapped, cands, unfinished_is_worst=True)["prompt_id"].to_list()


def test_length_penalty_enters_the_key_margin():
    cands = _candidates()
    rewards = combine_rewards(
        cands,
        {"label_model": pl.DataFrame({"candidate_id": cands["candidate_id"], "score": [0.1, 0.9, 0.2, 0.4]})},
    )
    pairs = select_pairs(cands, rewards, strategy="length_penalized", length_penalty=0.01).pairs
    assert non_positive_margins(pairs, cands, length_penalty=0.01).height == 0
    # with a penalty large enough, the longer chosen response would no longer be ranked first
    assert non_positive_margins(pairs, cands, length_penalty=1.0).height > 0


def test_bad_references_are_named_by_kind():
    pairs = _pairs()
    bad = pairs.with_columns(
        pl.when(pl.col("prompt_id") == "a").then(pl.lit("zz-9")).otherwise("chosen_id").alias("chosen_id"),
        pl.when(pl.col("prompt_id") == "b").then(pl.lit("a-0")).otherwise("rejected_id").alias("rejected_id"),
    )
    found = unknown_candidate_refs(bad, _candidates())
    assert found.rows() == [
        ("a", "chosen", "zz-9", "unknown candidate_id"),
        ("b", "rejected", "a-0", "candidate of another prompt"),
    ]
    edited = pairs.with_columns(
        pl.when(pl.col("prompt_id") == "a")
        .then(pl.lit([{"role": "assistant", "content": "edited"}]))
        .otherwise(pl.col("chosen"))
        .alias("chosen")
    )
    assert unknown_candidate_refs(edited, _candidates())["problem"].to_list() == [
        "response differs from the candidate's"
    ]


def test_a_saved_policy_loads_and_runs(tiny_policy):
    folder, _ = tiny_policy
    result = checkpoint_loads(folder)
    assert result.ok, result.error
    assert result.parameters > 0 and result.logits_shape[0] == 1
    assert result.metadata()["parameters"] == result.parameters


def test_corrupt_missing_or_nan_weights_fail_with_the_folder_named(tiny_policy, tmp_path):
    folder, _ = tiny_policy
    broken = tmp_path / "truncated"
    shutil.copytree(folder, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])
    result = checkpoint_loads(broken)
    assert not result.ok and result.error.startswith(f"{broken}: ")
    assert "error" in result.metadata()

    missing = tmp_path / "no_weights"
    shutil.copytree(folder, missing)
    (missing / "model.safetensors").unlink()
    assert not checkpoint_loads(missing).ok

    nan = tmp_path / "nan"
    shutil.copytree(folder, nan)
    state = load_file(str(nan / "model.safetensors"))
    state = {k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, str(nan / "model.safetensors"), metadata={"format": "pt"})
    result = checkpoint_loads(nan)
    assert not result.ok and "non-finite logits" in result.error
