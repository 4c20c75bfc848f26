"""Reward sources in the recipe, the weighted ensemble, PairRM as a source, plots and the curated SFT subset."""

from __future__ import annotations

import base64

import numpy as np
import polars as pl
import pytest

from prefscale.config.base import RecipeError
from prefscale.config.recipe import load_recipe
from prefscale.pairs.selection import select_pairs
from prefscale.rewards.base import REWARD_SCHEMA
from prefscale.rewards.curation import SFT_SCHEMA, curate_sft
from prefscale.rewards.ensemble import combine_rewards
from prefscale.rewards.sources import label_model_rewards, label_model_scores, pairrm_model_ref, source_scores
from prefscale.rewards.summary import describe_sources, distribution_png, png_markdown, source_correlations


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


CANDS = candidates(
    [
        ("p1", 0, "a", "stop"),
        ("p1", 1, "bb", "stop"),
        ("p1", 2, "ccc", "stop"),
        ("p2", 0, "d", "stop"),
        ("p2", 1, "ee", "length"),
    ]
)


def scores(values):
    return pl.DataFrame({"candidate_id": CANDS["candidate_id"], "score": values})


# --- the recipe -------------------------------------------------------------------------------------------------


def test_embedded_recipe_keeps_the_shorthand():
    r = load_recipe("embedded")
    assert r.reward.source == "label_model"
    assert r.reward.names == ("label_model",)
    assert r.reward.sources[0].weight == 1.0
    assert r.sft.top_quantile == 0.25 and r.sft.scope == "global"


def test_recipe_reward_sources_list_and_single_line():
    r = load_recipe(
        "embedded",
        {
            "reward": {
                "source": None,  # null: drop the shipped shorthand so the list applies
                "sources": [
                    {"source": "label_model", "weight": 2},
                    {"source": "pairrm", "weight": 0.5, "model": "tiny"},
                    {"source": "reward_model"},
                ],
                "ensemble": "rank",
                "reward_model": {"init": "scratch", "epochs": 3},
            }
        },
    )
    assert r.reward.source == "ensemble"
    assert r.reward.names == ("label_model", "pairrm", "reward_model")
    assert [s.weight for s in r.reward.sources] == [2.0, 0.5, 1.0]
    assert r.reward.ensemble == "rank" and r.reward.reward_model.init == "scratch"
    one = load_recipe("embedded", {"reward": {"source": "pairrm", "model": "./rankers/pairrm"}})
    assert one.reward.names == ("pairrm",) and one.reward.sources[0].model == "./rankers/pairrm"


@pytest.mark.parametrize(
    ("reward", "message"),
    [
        ({"source": "gpt4"}, "reward.sources.0.source: Input should be"),
        ({"source": "label_model", "model": "x"}, "model is only used by source 'pairrm'"),
        ({"source": "label_model", "sources": [{"source": "pairrm"}]}, "either reward.source"),
        ({"source": None, "sources": []}, "must list at least one source"),
        (
            {"source": None, "sources": [{"source": "pairrm"}, {"source": "pairrm"}]},
            "listed more than once: ['pairrm']",
        ),
        ({"source": None, "sources": [{"source": "pairrm", "weight": 0}]}, "weight: Input should be greater"),
        ({"ensemble": "max"}, "reward.ensemble"),
        ({"weights": [1]}, "reward.weights: unknown key"),
    ],
)
def test_bad_reward_config_is_a_recipe_error(reward, message):
    with pytest.raises(RecipeError) as e:
        load_recipe("embedded", {"reward": reward})
    assert message in str(e.value)


def test_sft_config_bounds():
    with pytest.raises(RecipeError, match=r"sft\.top_quantile"):
        load_recipe("embedded", {"sft": {"top_quantile": 0}})
    assert (
        load_recipe("embedded", {"sft": {"top_quantile": 1, "scope": "per_prompt"}}).sft.scope == "per_prompt"
    )


# --- the ensemble -------------------------------------------------------------------------------------------


def test_one_source_is_its_raw_score():
    r = combine_rewards(CANDS, {"label_model": scores([0.2, 0.9, 0.5, 0.7, 0.7])})
    assert r.columns == [*REWARD_SCHEMA, "score_label_model"]
    assert r["reward"].to_list() == [0.2, 0.9, 0.5, 0.7, 0.7]
    assert r["rank"].to_list() == [3, 1, 2, 1, 1]
    assert set(r["source"]) == {"label_model"}
    # label_model_rewards is that, in the historical schema
    labels = pl.DataFrame({"candidate_id": CANDS["candidate_id"], "p_high": [0.2, 0.9, 0.5, 0.7, 0.7]})
    assert label_model_rewards(CANDS, labels).equals(r.select(list(REWARD_SCHEMA)))


def test_zscore_ensemble_is_the_weighted_mean_of_per_prompt_z_scores():
    a = [0.1, 0.5, 0.9, 0.3, 0.3]  # p2 ties: z = 0 for both
    b = [3.0, 1.0, 2.0, -1.0, 1.0]
    r = combine_rewards(
        CANDS, {"label_model": scores(a), "pairrm": scores(b)}, {"label_model": 3, "pairrm": 1}
    )
    assert r.columns == [*REWARD_SCHEMA, "score_label_model", "score_pairrm"]
    assert set(r["source"]) == {"ensemble"}

    def z(x):
        x = np.array(x, dtype=float)
        return (x - x.mean()) / x.std() if x.std() else np.zeros_like(x)

    expected = np.r_[0.75 * z(a[:3]) + 0.25 * z(b[:3]), 0.75 * z(a[3:]) + 0.25 * z(b[3:])]
    np.testing.assert_allclose(r["reward"].to_numpy(), expected)
    assert r["rank"].to_list() == [3, 2, 1, 2, 1]
    assert r["score_pairrm"].to_list() == b  # raw scores kept


def test_rank_and_none_ensembles():
    a = [0.1, 0.5, 0.9, 0.3, 0.4]
    b = [30.0, 10.0, 20.0, 5.0, 1.0]
    rank = combine_rewards(CANDS, {"label_model": scores(a), "pairrm": scores(b)}, ensemble="rank")
    # p1: a ranks (0, .5, 1), b ranks (1, 0, .5); p2: a (0, 1), b (1, 0)
    np.testing.assert_allclose(rank["reward"].to_numpy(), [0.5, 0.25, 0.75, 0.5, 0.5])
    raw = combine_rewards(CANDS, {"label_model": scores(a), "pairrm": scores(b)}, ensemble="none")
    np.testing.assert_allclose(raw["reward"].to_numpy(), (np.array(a) + np.array(b)) / 2)


def test_combine_rejects_bad_inputs():
    with pytest.raises(ValueError, match="at least one reward source"):
        combine_rewards(CANDS, {})
    with pytest.raises(ValueError, match="unknown ensemble"):
        combine_rewards(CANDS, {"label_model": scores([0.0] * 5)}, ensemble="max")
    with pytest.raises(ValueError, match=r"'pairrm': 2 candidates have no score"):
        combine_rewards(
            CANDS,
            {"label_model": scores([0.0] * 5), "pairrm": scores([0.0] * 5).head(3)},
        )
    with pytest.raises(ValueError, match="more than once"):
        combine_rewards(CANDS, {"label_model": pl.concat([scores([0.0] * 5), scores([0.0] * 5)])})
    with pytest.raises(ValueError, match="weights must be > 0"):
        combine_rewards(CANDS, {"label_model": scores([0.0] * 5)}, {"label_model": 0.0})
    with pytest.raises(ValueError, match="weights for"):
        combine_rewards(CANDS, {"label_model": scores([0.0] * 5)}, {"pairrm": 1.0})


def test_non_finite_scores_stay_visible():
    r = combine_rewards(
        CANDS,
        {
            "label_model": scores([0.1, 0.2, 0.3, 0.4, 0.5]),
            "pairrm": scores([1.0, float("nan"), 2.0, 3.0, 4.0]),
        },
    )
    assert r.filter(pl.col("prompt_id") == "p1")["reward"].is_nan().all()  # the check in the asset fails
    assert r.filter(pl.col("prompt_id") == "p2")["reward"].is_finite().all()


def test_pairs_read_the_new_frame():
    r = combine_rewards(CANDS, {"label_model": scores([0.1, 0.5, 0.9, 0.3, 0.4])})
    sel = select_pairs(CANDS, r)
    assert sel.pairs["chosen_id"].to_list() == ["p1-2", "p2-0"]  # p2-1 was cut at the limit: worst


def test_source_correlations_and_plot():
    r = combine_rewards(
        CANDS, {"label_model": scores([0.1, 0.5, 0.9, 0.3, 0.4]), "pairrm": scores([1.0, 2.0, 3.0, 0.0, 1.0])}
    )
    corr = source_correlations(r)
    assert corr.columns == ["a", "b", "spearman"]
    assert corr.height == 3  # label_model~pairrm, label_model~reward, pairrm~reward
    png = distribution_png(r)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    md = png_markdown(png, "rewards")
    assert md.startswith("![rewards](data:image/png;base64,")
    assert base64.b64decode(md.split(",", 1)[1].rstrip(")")) == png
    assert distribution_png(r) == png  # deterministic (no timestamp in the file)


def test_describe_sources_and_pairrm_defaults():
    r = load_recipe(
        "embedded",
        {
            "reward": {
                "source": None,
                "sources": [{"source": "label_model"}, {"source": "pairrm", "weight": 0.5}],
            }
        },
    )
    assert describe_sources(r.reward.sources, "zscore") == "zscore(label_model×1, pairrm×0.5)"
    assert describe_sources(r.reward.sources[:1], "zscore") == "label_model"
    assert pairrm_model_ref(None, "embedded") == "tiny"
    assert pairrm_model_ref(None, "pretrained") == "llm-blender/PairRM"
    assert pairrm_model_ref("./mine", "embedded") == "./mine"


def test_tiny_pairrm_source_keeps_the_matrix_and_joins_an_ensemble():
    cands = candidates(
        [
            ("p1", 0, "Restart the router and wait.", "stop"),
            ("p1", 1, "No idea.", "stop"),
            ("p1", 2, "Call us.", "stop"),
            ("p2", 0, "Your promotion ended.", "stop"),
            ("p2", 1, "Prices rise.", "stop"),
        ]
    )
    labels = pl.DataFrame({"candidate_id": cands["candidate_id"], "p_high": [0.9, 0.2, 0.4, 0.6, 0.3]})
    r = load_recipe(
        "embedded",
        {
            "reward": {
                "source": None,
                "sources": [{"source": "label_model"}, {"source": "pairrm", "weight": 0.5}],
            }
        },
    )
    got, matrix = source_scores(cands, labels, r.reward.sources, seed=3)
    assert set(got) == {"label_model", "pairrm"}
    assert matrix is not None and matrix.columns == ["candidate_id", "matrix_index", "pairrm_logits"]
    again, _ = source_scores(cands, labels, r.reward.sources, seed=3)
    assert again["pairrm"].equals(got["pairrm"])  # the tiny ranker is deterministic from its seed
    rewards = combine_rewards(cands, got, {"label_model": 1.0, "pairrm": 0.5}).join(matrix, on="candidate_id")
    for (_pid,), g in rewards.group_by("prompt_id"):
        m = np.array(g.sort("matrix_index")["pairrm_logits"].to_list())
        assert m.shape == (g.height, g.height) and np.all(np.diag(m) == 0.0)
        scores_ = (m - m.T).mean(axis=1)
        np.testing.assert_allclose(g.sort("matrix_index")["score_pairrm"].to_numpy(), scores_)
    with pytest.raises(ValueError, match="needs a trained reward model"):
        source_scores(
            cands, labels, load_recipe("embedded", {"reward": {"source": "reward_model"}}).reward.sources
        )
    with pytest.raises(ValueError, match="no quality label"):
        label_model_scores(cands, labels.head(2))


# --- the curated SFT subset ---------------------------------------------------------------------------------


def test_curate_sft_global_keeps_the_top_quantile_of_eligible_rows():
    cands = candidates(
        [
            ("p1", 0, "x", "stop"),
            ("p1", 1, "y", "stop"),
            ("p1", 2, "x", "stop"),  # duplicate of p1-0
            ("p2", 0, "z", "length"),  # cut at the limit
            ("p2", 1, "w", "stop"),
            ("p2", 2, " ", "stop"),  # empty
        ]
    )
    r = combine_rewards(
        cands,
        {
            "label_model": pl.DataFrame(
                {"candidate_id": cands["candidate_id"], "score": [0.9, 0.5, 0.9, 1.0, 0.1, 0.95]}
            )
        },
    )
    kept = curate_sft(cands, r, top_quantile=0.5)
    assert kept.schema == pl.Schema(SFT_SCHEMA)
    # eligible: p1-0 (0.9), p1-1 (0.5), p2-1 (0.1) -> ceil(0.5 * 3) = 2
    assert kept["candidate_id"].to_list() == ["p1-0", "p1-1"]
    assert kept["messages"][0].to_list() == [
        {"role": "user", "content": "question p1?"},
        {"role": "assistant", "content": "x"},
    ]
    assert kept["rank"].to_list() == [1, 3]
    per_prompt = curate_sft(cands, r, top_quantile=0.5, scope="per_prompt")
    assert per_prompt["candidate_id"].to_list() == ["p1-0", "p2-1"]  # at least one per prompt
    with_unfinished = curate_sft(cands, r, top_quantile=0.25, drop_unfinished=False)
    assert with_unfinished["candidate_id"].to_list() == ["p2-0"]
    assert curate_sft(cands, r, top_quantile=1.0).height == 3


def test_curate_sft_rejects_bad_settings():
    r = combine_rewards(CANDS, {"label_model": scores([0.1] * 5)})
    with pytest.raises(ValueError, match="top_quantile"):
        curate_sft(CANDS, r, top_quantile=0)
    with pytest.raises(ValueError, match="scope"):
        curate_sft(CANDS, r, scope="everything")
    with pytest.raises(ValueError, match="2 candidates have no reward"):
        curate_sft(CANDS, r.head(3))
