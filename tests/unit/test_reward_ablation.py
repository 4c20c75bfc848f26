"""The pair-strategy ablation: the loop in-process for each strategy from one base, on a tiny configuration."""

from __future__ import annotations

import json

import polars as pl
import pytest

from prefscale.cli import main
from prefscale.config.recipe import load_recipe
from prefscale.tools.ablation import ABLATION_SCHEMA, run_pair_ablation

TINY = {
    "policy": {
        "embedded": {
            "vocab_size": 400,
            "hidden_size": 32,
            "num_layers": 1,
            "num_heads": 2,
            "intermediate_size": 64,
            "corpus_prompts": 40,
            "responses_per_prompt": 2,
            "train_steps": 30,
            "batch_size": 16,
        }
    },
    "data": {"pool_size": 40, "prompts_per_iteration": 6, "heldout_size": 3},
    "generation": {"num_candidates": 3, "max_new_tokens": 24, "batch_size": 64},
    "dpo": {"num_train_epochs": 1, "per_device_train_batch_size": 4, "max_length": 128},
    "evaluation": {"samples_per_prompt": 2},
}


def test_both_strategies_from_one_base(tmp_path, cpu):
    recipe = load_recipe("embedded", TINY)
    steps = []
    result = run_pair_ablation(
        recipe,
        ["best_vs_worst", "random_pair"],
        work_dir=tmp_path / "work",
        compute=cpu,
        iterations=1,
        log=steps.append,
        keep=True,
    )
    board = result.leaderboard
    assert board.schema == pl.Schema(ABLATION_SCHEMA)
    assert board.select("strategy", "iteration").rows() == [
        ("best_vs_worst", 0),
        ("best_vs_worst", 1),
        ("random_pair", 0),
        ("random_pair", 1),
    ]
    base = board.filter(pl.col("iteration") == 0)
    assert base["win_rate"].to_list() == [0.5, 0.5] and base["adherence_gain"].to_list() == [0.0, 0.0]
    assert base["n_pairs"].is_null().all()
    trained = board.filter(pl.col("iteration") == 1)
    assert (trained["n_total"] == 3 * 2).all()
    assert trained["n_pairs"].is_between(1, 6).all()
    assert trained["win_rate"].is_between(0, 1).all()
    assert steps == ["base policy", "best_vs_worst: iteration 1", "random_pair: iteration 1"]
    assert (tmp_path / "work" / "random_pair" / "iteration-1" / "config.json").is_file()
    assert (trained["mean_margin"] > 0).all()


def test_bad_arguments(tmp_path, cpu):
    recipe = load_recipe("embedded", TINY)
    with pytest.raises(ValueError, match="unknown pair strategies"):
        run_pair_ablation(recipe, ["best_vs_worst", "nope"], work_dir=tmp_path, compute=cpu)
    with pytest.raises(ValueError, match=r"iterations must be in 1\.\.3"):
        run_pair_ablation(recipe, ["random_pair"], work_dir=tmp_path, compute=cpu, iterations=4)
    with pytest.raises(ValueError, match="at least one"):
        run_pair_ablation(recipe, [], work_dir=tmp_path, compute=cpu)


def test_cli_reports_unknown_strategy(capsys):
    assert main(["ablation", "pairs", "--strategies", "nope", "--overrides", json.dumps(TINY)]) == 2
    assert "unknown pair strategies ['nope']" in capsys.readouterr().err
