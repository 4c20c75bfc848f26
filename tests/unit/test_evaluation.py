from __future__ import annotations

import polars as pl
import pytest

from prefscale.evaluation import rubric
from prefscale.evaluation.heldout import ADHERENCE_SCHEMA, LEADERBOARD_SCHEMA, adherence, evaluate

GOOD = (
    "Thank you for reaching out.\n"
    "I am sorry your router keeps dropping the connection.\n"
    "At Lumora we want this fixed quickly.\n"
    "1. Unplug the router for thirty seconds.\n"
    "2. Plug it back in and wait two minutes.\n"
    "Let me know if there is anything else I can help with."
)
BAD = "Have you tried restarting the router?\nObviously this is not our fault."


def samples(responses, finish=None):
    n = len(responses)
    return pl.DataFrame(
        {
            "prompt_id": [f"p{i // 2}" for i in range(n)],
            "sample_idx": [i % 2 for i in range(n)],
            "task_type": ["troubleshooting"] * n,
            "prompt": ["q"] * n,
            "response": responses,
            "finish_reason": finish or ["stop"] * n,
        }
    )


def test_evaluate_baseline_against_itself():
    base = samples([GOOD, BAD, BAD, GOOD])
    row, adh = evaluate(base, base, iteration=0, model="base")
    assert row.schema == pl.Schema(LEADERBOARD_SCHEMA)
    assert row.height == 1
    r = row.row(0, named=True)
    assert r["iteration"] == 0
    assert r["model"] == "base"
    assert r["judge"] == "sme_rubric"
    assert r["win_rate"] == 0.5
    assert (r["n_wins"], r["n_losses"], r["n_draws"], r["n_total"]) == (0, 0, 4, 4)
    assert r["avg_length"] == pytest.approx((2 * len(GOOD) + 2 * len(BAD)) / 4)
    assert r["unfinished_rate"] == 0.0
    assert adh.schema == pl.Schema(ADHERENCE_SCHEMA)
    assert adh.height == 7
    assert adh["preference"].to_list() == list(rubric.PREFERENCES)


def test_evaluate_better_model():
    model = samples([GOOD, GOOD, GOOD, BAD], finish=["stop", "stop", "length", "stop"])
    base = samples([BAD, BAD, GOOD, BAD])
    row, adh = evaluate(model, base, iteration=2, model="iter2")
    r = row.row(0, named=True)
    # sample 0, 1: good vs bad (wins); sample 2: unfinished good vs finished good (loss); 3: draw
    assert (r["n_wins"], r["n_losses"], r["n_draws"], r["n_total"]) == (2, 1, 1, 4)
    assert r["win_rate"] == pytest.approx(2.5 / 4)
    assert r["unfinished_rate"] == pytest.approx(0.25)
    expected_scores = [
        rubric.score(GOOD, "troubleshooting"),
        rubric.score(GOOD, "troubleshooting"),
        rubric.score(GOOD, "troubleshooting", finished=False),
        rubric.score(BAD, "troubleshooting"),
    ]
    assert r["mean_rubric_score"] == pytest.approx(sum(expected_scores) / 4)
    rates = dict(adh.select("preference", "rate").iter_rows())
    assert rates["thanks_customer"] == pytest.approx(0.75)
    assert rates["no_sensitive_words"] == pytest.approx(0.75)
    assert rates["no_heavy_adjectives"] == pytest.approx(1.0)
    assert r["mean_adherence"] == pytest.approx(sum(rates.values()) / 7)
    assert set(adh["iteration"]) == {2}
    assert set(adh["model"]) == {"iter2"}


def test_evaluate_pairs_samples_by_key_not_row_order():
    model = samples([GOOD, BAD, GOOD, BAD])
    base = samples([BAD, GOOD, BAD, GOOD])
    row, _ = evaluate(model.reverse(), base, iteration=1, model="m")
    assert row["n_wins"][0] == 2
    assert row["n_losses"][0] == 2


def test_evaluate_rejects_mismatched_prompts():
    a = samples([GOOD, BAD, GOOD, BAD])
    b = a.with_columns(
        pl.when(pl.col("prompt_id") == "p1").then(pl.lit("p9")).otherwise("prompt_id").alias("prompt_id")
    )
    with pytest.raises(ValueError, match="different"):
        evaluate(a, b, iteration=1, model="m")
    with pytest.raises(ValueError, match="different"):
        evaluate(a, a.head(3), iteration=1, model="m")


def test_adherence_rates():
    rates = adherence(pl.DataFrame({"response": [GOOD, BAD]}))
    assert list(rates) == list(rubric.PREFERENCES)
    assert rates == {
        "mentions_company": 0.5,
        "list_format": 0.5,
        "follows_workflow": 0.5,
        "no_question_back": 0.5,
        "no_sensitive_words": 0.5,
        "no_heavy_adjectives": 1.0,
        "thanks_customer": 0.5,
    }
