"""Best-of-N selection (`prefscale.best_of_n`): slots, ties, reward sources, the recipe settings."""

from __future__ import annotations

import polars as pl
import pytest

from prefscale.config.evaluation import EvaluationConfig
from prefscale.config.recipe import load_recipe
from prefscale.evaluation.best_of_n import (
    generator_name,
    pool_with_slots,
    score_pool,
    select_best,
    selection_summary,
)
from prefscale.generation.base import CANDIDATE_SCHEMA


def pool(prompts: int = 2, slots: int = 2, n: int = 3, texts=None) -> pl.DataFrame:
    rows = []
    for p in range(prompts):
        for k in range(slots * n):
            text = texts[(p, k)] if texts and (p, k) in texts else f"reply {p} {k}"
            rows.append(
                {
                    "candidate_id": f"p{p}-{k}",
                    "prompt_id": f"p{p}",
                    "sample_idx": k,
                    "task_type": "billing",
                    "prompt": f"prompt {p}",
                    "response": text,
                    "n_tokens": 3,
                    "finish_reason": "stop",
                    "latency_s": 0.1,
                }
            )
    return pl.DataFrame(rows, schema=CANDIDATE_SCHEMA)


def test_slots_interleave_so_each_holds_the_plain_sample():
    p = pool_with_slots(pool(1, slots=2, n=3), 2)
    assert p.filter(pl.col("slot") == 0)["sample_idx"].to_list() == [0, 2, 4]
    assert p.filter(pl.col("slot") == 1)["sample_idx"].to_list() == [1, 3, 5]
    with pytest.raises(ValueError, match="uneven"):
        pool_with_slots(pool(1, slots=2, n=3).head(5), 2)


def test_select_best_per_slot_with_ties_to_the_lowest_index():
    p = pool_with_slots(pool(2, slots=2, n=3), 2)
    score = {"p0-0": 0.1, "p0-2": 0.9, "p0-4": 0.5, "p0-1": 0.7, "p0-3": 0.7, "p0-5": 0.2}
    score |= {f"p1-{k}": 0.5 for k in range(6)}  # all tied: the plain sample (index = slot) wins
    scores = pl.DataFrame({"candidate_id": list(score), "score": list(score.values())})
    best = select_best(p, scores)
    assert best.columns[: len(CANDIDATE_SCHEMA)] == list(CANDIDATE_SCHEMA)
    rows = best.select(
        "candidate_id", "sample_idx", "chosen_sample", "reward", "pool_size", "response"
    ).rows()
    assert rows == [
        ("p0-0", 0, 2, 0.9, 3, "reply 0 2"),
        ("p0-1", 1, 1, 0.7, 3, "reply 0 1"),
        ("p1-0", 0, 0, 0.5, 3, "reply 1 0"),
        ("p1-1", 1, 1, 0.5, 3, "reply 1 1"),
    ]
    summary = selection_summary(best, 2)
    assert summary["kept_plain_sample_rate"] == 0.75 and summary["mean_reward_kept"] == pytest.approx(0.65)
    with pytest.raises(ValueError, match="have no score"):
        select_best(p, scores.head(3))
    with pytest.raises(ValueError, match="non-finite"):
        select_best(p, scores.with_columns(pl.lit(float("nan")).alias("score")))
    with pytest.raises(ValueError, match="slot column"):
        select_best(pool(), scores)


def test_label_model_source_prefers_what_the_lfs_like():
    recipe = load_recipe("embedded")
    good = "Thank you for reaching out to Lumora. I understand.\n1. Open settings\n2. Restart\nLet me know if that helps."
    texts = {(p, k): (good if k in (3, 4) else "ok?") for p in range(4) for k in range(6)}
    p = pool_with_slots(pool(4, slots=2, n=3, texts=texts), 2)
    scores = score_pool(
        p, "label_model", lfs=recipe.labeling.functions, label_model=recipe.labeling.label_model
    )
    best = select_best(p, scores)
    assert set(best["response"]) == {
        good
    }  # each slot's pool has one good reply (3 is in slot 1, 4 in slot 0)
    assert sorted(set(best["chosen_sample"])) == [3, 4]
    with pytest.raises(ValueError, match="labeling functions"):
        score_pool(p, "label_model")


def test_other_sources_need_their_model():
    p = pool_with_slots(pool(), 2)
    with pytest.raises(ValueError, match="trained reward model"):
        score_pool(p, "reward_model")
    with pytest.raises(ValueError, match="needs a ranker"):
        score_pool(p, "pairrm")
    with pytest.raises(ValueError, match="unknown best-of-N source"):
        score_pool(p, "vibes")


def test_pairrm_source_ranks_within_each_slot():
    p = pool_with_slots(pool(1, slots=2, n=2), 2)
    scores = score_pool(p, "pairrm", pairrm_model="tiny", seed=0)
    assert set(scores["candidate_id"]) == set(p["candidate_id"])
    assert scores["score"].is_finite().all()
    assert select_best(p, scores).height == 2


def test_recipe_settings():
    assert EvaluationConfig().best_of_n is None and not EvaluationConfig().best_of_n_enabled
    assert not EvaluationConfig(best_of_n=0).best_of_n_enabled
    assert EvaluationConfig(best_of_n=16, best_of_n_source="pairrm", best_of_n_model="tiny").best_of_n == 16
    with pytest.raises(ValueError, match="must be >= 2"):
        EvaluationConfig(best_of_n=1)
    with pytest.raises(ValueError, match="only used by best_of_n_source 'pairrm'"):
        EvaluationConfig(best_of_n=4, best_of_n_model="tiny")
    assert load_recipe("embedded").evaluation.best_of_n == 4
    assert generator_name(2, 4) == "dpo-iter2+bo4"
