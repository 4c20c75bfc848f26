from __future__ import annotations

import polars as pl
import pytest

from prefscale.pairs.selection import PAIR_SCHEMA, UNFINISHED_PENALTY, select_pairs
from prefscale.rewards.base import REWARD_SCHEMA
from prefscale.rewards.sources import label_model_rewards
from prefscale.rewards.summary import reward_summary


def candidates(rows):
    """rows: (prompt_id, sample_idx, response, finish_reason)."""
    return pl.DataFrame(
        {
            "candidate_id": [f"{p}-{k}" for p, k, _, _ in rows],
            "prompt_id": [p for p, _, _, _ in rows],
            "sample_idx": [k for _, k, _, _ in rows],
            "task_type": ["billing"] * len(rows),
            "prompt": [f"question {p}?" for p, _, _, _ in rows],
            "response": [r for _, _, r, _ in rows],
            "finish_reason": [f for _, _, _, f in rows],
        },
        schema_overrides={"sample_idx": pl.Int32},
    )


def rewards_for(cands, values):
    return pl.DataFrame({"candidate_id": cands["candidate_id"], "reward": values})


# --- rewards ------------------------------------------------------------------------------------------------


def test_label_model_rewards_rank_within_prompt():
    cands = candidates(
        [
            ("p1", 0, "a", "stop"),
            ("p1", 1, "b", "stop"),
            ("p1", 2, "c", "stop"),
            ("p2", 0, "d", "stop"),
            ("p2", 1, "e", "stop"),
        ]
    )
    labels = pl.DataFrame(
        {
            "candidate_id": ["p2-1", "p1-0", "p1-1", "p1-2", "p2-0", "extra"],
            "p_high": [0.7, 0.2, 0.9, 0.5, 0.7, 0.1],
        }
    )
    r = label_model_rewards(cands, labels)
    assert r.schema == pl.Schema(REWARD_SCHEMA)
    assert r.height == 5  # labels for other candidates are ignored
    got = {cid: (rew, rank) for cid, rew, rank in r.select("candidate_id", "reward", "rank").iter_rows()}
    assert got == {
        "p1-0": (0.2, 3),
        "p1-1": (0.9, 1),
        "p1-2": (0.5, 2),
        "p2-0": (0.7, 1),  # ties share the best rank
        "p2-1": (0.7, 1),
    }
    assert set(r["source"]) == {"label_model"}
    assert dict(r.select("candidate_id", "prompt_id").iter_rows()) == dict(
        cands.select("candidate_id", "prompt_id").iter_rows()
    )


def test_label_model_rewards_missing_labels():
    cands = candidates([("p1", 0, "a", "stop"), ("p1", 1, "b", "stop")])
    labels = pl.DataFrame({"candidate_id": ["p1-0"], "p_high": [0.3]})
    with pytest.raises(ValueError, match=r"1 candidates have no quality label, e.g. \['p1-1'\]"):
        label_model_rewards(cands, labels)


def test_reward_summary():
    s = reward_summary(pl.DataFrame({"reward": [0.0, 0.5, 1.0]}))
    assert s == pytest.approx({"mean": 0.5, "std": 0.5, "min": 0.0, "max": 1.0})


# --- pairs --------------------------------------------------------------------------------------------------


@pytest.fixture
def scenario():
    cands = candidates(
        [
            # p1: a clear best and worst
            ("p1", 0, "low", "stop"),
            ("p1", 1, "the best answer", "stop"),
            ("p1", 2, "middle", "stop"),
            # p2: every candidate identical
            ("p2", 0, "same", "stop"),
            ("p2", 1, "same", "stop"),
            # p3: distinct candidates, tied rewards
            ("p3", 0, "one", "stop"),
            ("p3", 1, "two", "stop"),
            # p4: the highest reward was cut at the token limit
            ("p4", 0, "cut off mid sent", "length"),
            ("p4", 1, "finished well", "stop"),
            ("p4", 2, "finished badly", "stop"),
            # p5: best and worst are the same text
            ("p5", 0, "dup", "stop"),
            ("p5", 1, "other", "stop"),
            ("p5", 2, "dup", "stop"),
        ]
    )
    rewards = rewards_for(cands, [0.1, 0.9, 0.5, 0.4, 0.4, 0.6, 0.6, 0.95, 0.6, 0.3, 0.9, 0.5, 0.1])
    return cands, rewards


def test_select_pairs_best_vs_worst(scenario):
    sel = select_pairs(*scenario)
    assert sel.pairs.schema == pl.Schema(PAIR_SCHEMA)
    assert sel.pairs["prompt_id"].to_list() == ["p1", "p4"]
    p1 = sel.pairs.row(0, named=True)
    assert (p1["chosen_id"], p1["rejected_id"]) == ("p1-1", "p1-0")
    assert p1["chosen_reward"] == pytest.approx(0.9)
    assert p1["rejected_reward"] == pytest.approx(0.1)
    assert p1["margin"] == pytest.approx(0.8)
    assert p1["length_diff"] == len("the best answer") - len("low")
    assert p1["rejected_unfinished"] is False


def test_select_pairs_conversational_format(scenario):
    p1 = select_pairs(*scenario).pairs.row(0, named=True)
    assert p1["prompt"] == [{"role": "user", "content": "question p1?"}]
    assert p1["chosen"] == [{"role": "assistant", "content": "the best answer"}]
    assert p1["rejected"] == [{"role": "assistant", "content": "low"}]


def test_select_pairs_drop_reasons(scenario):
    dropped = select_pairs(*scenario).dropped
    assert dropped.schema == pl.Schema({"prompt_id": pl.String, "reason": pl.String})
    assert dropped.rows() == [
        ("p2", "identical candidates"),
        ("p3", "tied rewards"),
        ("p5", "identical best and worst"),
    ]


def test_unfinished_candidate_ranks_last(scenario):
    p4 = select_pairs(*scenario).pairs.filter(pl.col("prompt_id") == "p4").row(0, named=True)
    assert p4["chosen_id"] == "p4-1"
    assert p4["rejected_id"] == "p4-0"
    assert p4["rejected_unfinished"] is True
    assert p4["rejected_reward"] == pytest.approx(0.95)  # its reward was the highest


def test_unfinished_ranked_by_reward_when_disabled(scenario):
    sel = select_pairs(*scenario, unfinished_is_worst=False)
    p4 = sel.pairs.filter(pl.col("prompt_id") == "p4").row(0, named=True)
    assert (p4["chosen_id"], p4["rejected_id"]) == ("p4-0", "p4-2")
    assert p4["rejected_unfinished"] is False
    assert p4["margin"] == pytest.approx(0.65)


def test_min_margin_drops_near_ties():
    cands = candidates([("p1", 0, "a", "stop"), ("p1", 1, "b", "stop")])
    rewards = rewards_for(cands, [0.5, 0.5 + 1e-9])
    assert select_pairs(cands, rewards).dropped.rows() == [("p1", "tied rewards")]
    assert select_pairs(cands, rewards, min_margin=0.0).pairs.height == 1
    wide = rewards_for(cands, [0.5, 0.6])
    assert select_pairs(cands, wide, min_margin=0.2).dropped.rows() == [("p1", "tied rewards")]


def test_unfinished_penalty_exceeds_any_reward_range():
    assert UNFINISHED_PENALTY > 1.0  # rewards are probabilities


def test_select_pairs_ignores_input_order(scenario):
    cands, rewards = scenario
    a = select_pairs(cands, rewards).pairs
    b = select_pairs(cands.reverse(), rewards.reverse()).pairs
    assert a.equals(b)


def test_select_pairs_missing_reward(scenario):
    cands, rewards = scenario
    with pytest.raises(ValueError, match="1 candidates have no reward score"):
        select_pairs(cands, rewards.slice(1))


def test_select_pairs_unknown_strategy(scenario):
    with pytest.raises(ValueError, match="unknown pair strategy 'random'"):
        select_pairs(*scenario, strategy="random")


def test_select_pairs_empty_when_nothing_qualifies():
    cands = candidates([("p1", 0, "same", "stop"), ("p1", 1, "same", "stop")])
    sel = select_pairs(cands, rewards_for(cands, [0.2, 0.8]))
    assert sel.pairs.height == 0
    assert sel.pairs.schema == pl.Schema(PAIR_SCHEMA)
