"""The `smollm2-lumora` recipe: what it sets, and its code paths run on a tiny stand-in for SmolLM2.

The real run (SmolLM2-135M-Instruct, three iterations on CPU) is a benchmark (BENCHMARKS.md), not a test. Here
the recipe's own sections drive the loop (`run_pair_ablation`: candidates with the system prompt, its labeling
functions, the label model, best_vs_worst_finished pairs, DPO with the NLL term, the held-out evaluation) with the
policy swapped for the tiny embedded Llama and every size cut down.
"""

from __future__ import annotations

import polars as pl
import pytest

from prefscale.config.recipe import load_recipe
from prefscale.tools.ablation import run_pair_ablation

STAND_IN = {
    "policy": {
        "source": "embedded",
        "gguf": None,
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
        },
    },
    "data": {"pool_size": 40, "prompts_per_iteration": 6, "heldout_size": 3},
    "generation": {"num_candidates": 4, "max_new_tokens": 24, "batch_size": 64},
    "dpo": {"num_train_epochs": 1, "per_device_train_batch_size": 4, "max_length": 160},
}


def test_the_recipe_aligns_a_real_model_to_the_lumora_smes():
    r = load_recipe("smollm2-lumora")
    assert r.policy.source == "gguf" and r.policy.gguf.file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "Lumora" in r.policy.system_prompt
    assert r.data.source == "embedded" and r.iterations >= 3
    embedded = {lf.name for lf in load_recipe("embedded").labeling.functions}
    assert embedded <= {lf.name for lf in r.labeling.functions}  # the SMEs' functions, and more
    assert r.pairs.strategy == "best_vs_worst_finished" and r.dpo.sft_weight > 0
    assert {"rubric", "weak_supervision"} <= set(r.evaluation.all_judges) and r.evaluation.best_of_n_enabled


def test_its_code_paths_on_a_tiny_stand_in(tmp_path, cpu):
    recipe = load_recipe("smollm2-lumora", STAND_IN)
    assert recipe.policy.system_prompt  # kept: the stand-in answers as Lumora's assistant too
    result = run_pair_ablation(
        recipe, [recipe.pairs.strategy], work_dir=tmp_path / "work", compute=cpu, iterations=1
    )
    board = result.leaderboard
    assert board["strategy"].to_list() == ["best_vs_worst_finished"] * 2
    trained = board.filter(pl.col("iteration") == 1).row(0, named=True)
    assert 1 <= trained["n_pairs"] <= 6 and trained["n_total"] == 3 * recipe.evaluation.samples_per_prompt
    assert 0 <= trained["win_rate"] <= 1 and trained["mean_adherence"] == pytest.approx(
        trained["adherence_gain"] + board.filter(pl.col("iteration") == 0)["mean_adherence"][0]
    )
