"""`prefscale bench scale`: the JSON line's shape, row counts that agree from the LF votes to the dbt marts, bad
inputs, and the synthetic candidates. No timing is asserted (the numbers are in BENCHMARKS.md)."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import polars as pl
import pytest

from prefscale.cli import main
from prefscale.generation.base import CANDIDATE_SCHEMA
from prefscale.pairs.selection import UNFINISHED_PENALTY, select_pairs
from prefscale.rewards.ensemble import combine_rewards
from prefscale.tools.bench_scale import (
    CANDIDATES_PER_PROMPT,
    STAGES,
    ScaleBenchResult,
    StageResult,
    scale_candidates,
)

ROWS = 2000


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(exit code, stdout lines, work dir) of one `bench scale --json` at ROWS candidates (about a minute: each
    stage starts its own interpreter, and dbt parses and builds)."""
    work = tmp_path_factory.mktemp("bench_scale")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["bench", "scale", "--rows", str(ROWS), "--seed", "3", "--json", "--work-dir", str(work)])
    return rc, out.getvalue().strip().splitlines(), work


@pytest.fixture(scope="module")
def result(run):
    return json.loads(run[1][-1])


def test_exit_0_and_one_json_object_last(run, result):
    rc, lines, _ = run
    assert rc == 0, result.get("problems")
    assert lines[-1].startswith("{") and lines[-1].endswith("}")  # progress went to stderr
    assert result["bench"] == "scale" and result["rows"] == ROWS and result["seed"] == 3
    assert result["ok"] is True and result["problems"] == []


def test_totals_and_every_stage(result):
    stages = result["stages"]
    assert [s["name"] for s in stages] == list(STAGES)
    for s in stages:
        assert {"name", "seconds", "peak_rss_mb", "rows"} <= s.keys()
        assert s["seconds"] >= 0 and s["peak_rss_mb"] > 0 and isinstance(s["rows"], int)
    assert result["seconds"] == pytest.approx(sum(s["seconds"] for s in stages), abs=0.01)
    assert result["peak_rss_mb"] == max(s["peak_rss_mb"] for s in stages)


def test_row_counts_agree_from_votes_to_marts(result):
    s = {x["name"]: x for x in result["stages"]}
    prompts = ROWS // CANDIDATES_PER_PROMPT
    assert result["prompts"] == prompts
    assert s["lf_votes"]["rows"] == s["quality_labels"]["rows"] == s["reward_scores"]["rows"] == ROWS
    pairs = s["preference_pairs"]
    assert 0 < pairs["rows"] <= prompts
    assert pairs["rows"] + pairs["dropped_prompts"] == prompts
    assert pairs["check_failures"] == 0
    dbt = s["dbt_marts"]
    assert dbt["rows"] == ROWS  # candidates in the warehouse
    assert dbt["pair_stats_pairs"] == pairs["rows"]
    assert dbt["reward_distribution_n"] == ROWS
    assert dbt["lf_summary_rows"] == s["lf_votes"]["lfs"]


def test_the_temporary_home_is_removed(run):
    assert list(run[2].iterdir()) == []


@pytest.mark.parametrize("rows", ["0", "-3", "many"])
def test_bad_rows_is_an_argparse_error(rows, capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "scale", "--rows", rows])
    assert e.value.code == 2
    assert "--rows" in capsys.readouterr().err


def test_a_recipe_with_a_model_reward_source_exits_2(capsys):
    assert main(["bench", "scale", "--rows", "10", "--recipe", "snorkel-mistral-pairrm"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "need a model" in err


def test_unknown_recipe_exits_2(capsys):
    assert main(["bench", "scale", "--rows", "10", "--recipe", "no_such_recipe"]) == 2
    assert "unknown recipe 'no_such_recipe'" in capsys.readouterr().err


def test_summary_lines_and_totals():
    stages = tuple(StageResult(n, 1.5, 100.0 + k, 10) for k, n in enumerate(STAGES))
    r = ScaleBenchResult(
        "embedded", 10, 2, 0, stages, 0.1, (), {"cpus": 2, "cpu": "x", "python": "3", "polars": "2"}
    )
    assert r.ok and r.seconds == pytest.approx(7.5) and r.peak_rss_mb == 104.0
    lines = r.summary_lines()
    assert all(any(line.startswith(n) for line in lines) for n in STAGES)
    assert lines[-1].startswith("total") and "7.50" in lines[-1]
    assert r.to_dict()["stages"][0] == {"name": "lf_votes", "seconds": 1.5, "peak_rss_mb": 100.0, "rows": 10}


def test_scale_candidates_have_the_candidates_columns_and_five_per_prompt():
    c = scale_candidates(23, seed=1)
    assert c.schema == pl.Schema(CANDIDATE_SCHEMA)
    assert c["candidate_id"].is_unique().all()
    per_prompt = c.group_by("prompt_id").len()["len"].sort().to_list()
    assert per_prompt == [3, 5, 5, 5, 5]
    assert c.group_by("prompt_id").agg(pl.col("sample_idx").n_unique() == pl.len())["sample_idx"].all()
    assert set(c["finish_reason"]) <= {"stop", "length"}
    assert scale_candidates(23, seed=1).equals(c)


def test_select_pairs_agrees_with_a_per_prompt_reference():
    """Best vs worst by key (ties: lower sample_idx chosen, higher rejected), prompts in id order, on shuffled
    rows with tied rewards: what the one-pass selection must keep from the per-prompt one it replaced."""
    c = scale_candidates(600, seed=2).sample(fraction=1.0, shuffle=True, seed=0)
    rng = np.random.default_rng(0)
    scores = pl.DataFrame(
        {"candidate_id": c["candidate_id"], "score": rng.choice([0.2, 0.5, 0.5, 0.8], c.height)}
    )
    rewards = combine_rewards(c, {"label_model": scores})
    sel = select_pairs(c, rewards, seed=1, system="Be brief.")

    rows = c.join(rewards.select("candidate_id", "reward"), on="candidate_id").to_dicts()
    expected, dropped = [], []
    for pid in sorted({r["prompt_id"] for r in rows}):
        g = [r for r in rows if r["prompt_id"] == pid]
        for r in g:
            r["_key"] = r["reward"] - (UNFINISHED_PENALTY if r["finish_reason"] == "length" else 0.0)
        ranked = sorted(g, key=lambda r: (-r["_key"], r["sample_idx"]))
        best, worst = ranked[0], ranked[-1]
        if len({r["response"] for r in g}) == 1:
            dropped.append((pid, "identical candidates"))
        elif best["_key"] - worst["_key"] < 1e-6:
            dropped.append((pid, "tied rewards"))
        elif best["response"] == worst["response"]:
            dropped.append((pid, "identical best and worst"))
        else:
            expected.append((pid, best["candidate_id"], worst["candidate_id"], best["prompt"]))
    assert sel.pairs.select("prompt_id", "chosen_id", "rejected_id").rows() == [e[:3] for e in expected]
    assert sel.dropped.rows() == dropped
    first = sel.pairs.row(0, named=True)
    assert first["prompt"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": expected[0][3]},
    ]
    assert first["chosen"] == [
        {
            "role": "assistant",
            "content": c.filter(pl.col("candidate_id") == first["chosen_id"])["response"][0],
        }
    ]
