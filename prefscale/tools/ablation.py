"""Pair-strategy ablation: the alignment loop in-process, without Dagster, once per strategy from the same base.

`run_pair_ablation` trains (or loads) the base policy once, samples the held-out baseline once, then for each
strategy runs the recipe's K iterations: sample candidates → labeling functions → label model → rewards →
pairs (the strategy under test) → DPO → held-out evaluation by the SME rubric judge. Everything else is the
recipe's and uses the Dagster pipeline's seeds (candidates `seed*100+i`, label model `seed`, pairs and DPO
`seed+i`, evaluation `EVAL_SEED`), so the recipe's own strategy reproduces `make run`'s leaderboard, and the
arms differ only in which two candidates form each pair. The budget is the same: the same prompts, candidates
and DPO settings; a strategy that drops more prompts trains on fewer pairs (reported as `n_pairs`).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from prefscale.compute import Compute
from prefscale.config.recipe import Recipe
from prefscale.data.prompts import build_pool, split_pool
from prefscale.evaluation.heldout import EVAL_SEED, evaluate
from prefscale.generation.sampling import sample_policy
from prefscale.labeling.apply import apply_all_lfs
from prefscale.labeling.context import LFContext
from prefscale.labeling.label_model import fit_label_model
from prefscale.pairs.selection import PAIR_STRATEGIES, select_pairs
from prefscale.policy.build import build_base_policy
from prefscale.rewards.ensemble import combine_rewards
from prefscale.rewards.reward_model import train_reward_model
from prefscale.rewards.sources import source_scores
from prefscale.training.dpo import train_dpo

ABLATION_SCHEMA = {
    "strategy": pl.String,
    "iteration": pl.Int32,
    "win_rate": pl.Float64,
    "n_total": pl.Int32,
    "avg_length": pl.Float64,
    "mean_adherence": pl.Float64,
    "adherence_gain": pl.Float64,
    "finished_adherence": pl.Float64,
    "unfinished_rate": pl.Float64,
    "n_pairs": pl.Int32,
    "mean_margin": pl.Float64,
    "mean_length_diff": pl.Float64,
}


@dataclass(frozen=True)
class AblationResult:
    leaderboard: pl.DataFrame  # ABLATION_SCHEMA: one row per strategy and iteration (0 = the base)
    seconds: float


def _sample(policy: Path, prompts: pl.DataFrame, n: int, recipe: Recipe, compute: Compute, seed: int):
    return sample_policy(policy, compute, prompts, n, recipe.generation, seed, recipe.policy.system_prompt)


def _rewards(
    cands: pl.DataFrame, recipe: Recipe, compute: Compute, work: Path, rm_dir: list[Path]
) -> pl.DataFrame:
    """The recipe's rewards for one iteration (the reward model, if a source, is trained on iteration 1)."""

    lfs = recipe.labeling.all_functions  # the model-backed ones run on the arm's base policy, as in lf_votes
    lm = recipe.labeling.label_model
    votes = apply_all_lfs(
        cands, lfs, LFContext(compute=compute, base_policy=work / "base", policy=work / "base")
    )
    labels = fit_label_model(
        votes,
        [lf.name for lf in lfs],
        **lm.fit_options(),
        seed=recipe.seed,
    ).labels
    if "reward_model" in recipe.reward.names and not rm_dir:
        out = work / "reward_model"
        train_reward_model(
            work / "base", cands, labels, recipe.reward.reward_model, out, compute, recipe.seed
        )
        rm_dir.append(out)
    scores, matrix = source_scores(
        cands,
        labels,
        recipe.reward.sources,
        policy_source=recipe.policy.source,
        seed=recipe.seed,
        device=compute.device,
        reward_model_dir=rm_dir[0] if rm_dir else None,
        compute=compute,
    )
    rewards = combine_rewards(
        cands, scores, {s.source: s.weight for s in recipe.reward.sources}, recipe.reward.ensemble
    )
    return rewards if matrix is None else rewards.join(matrix, on="candidate_id", how="left")


def run_pair_ablation(
    recipe: Recipe,
    strategies: Sequence[str] = ("best_vs_worst", "random_pair"),
    *,
    work_dir: Path,
    compute: Compute,
    iterations: int | None = None,
    log: Callable[[str], None] = lambda _msg: None,
    keep: bool = False,
) -> AblationResult:
    """The leaderboard of each pair strategy over `iterations` (default: the recipe's K); see the module docs.

    `work_dir` holds the base policy, the checkpoints and DPO scratch; it is removed at the end unless `keep`.
    """

    unknown = [s for s in strategies if s not in PAIR_STRATEGIES]
    if unknown:
        raise ValueError(f"unknown pair strategies {unknown}; known: {', '.join(PAIR_STRATEGIES)}")
    if not strategies:
        raise ValueError("give at least one pair strategy")
    k = iterations or recipe.iterations
    if not 1 <= k <= recipe.iterations:
        raise ValueError(f"iterations must be in 1..{recipe.iterations}, got {k}")
    t0 = time.perf_counter()
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        log("base policy")
        base = work_dir / "base"
        build_base_policy(recipe.policy, recipe.seed, base, compute)  # as the base_policy asset does
        splits = split_pool(
            build_pool(recipe.data, recipe.seed, recipe.labeling.task_types),
            recipe.data,
            recipe.iterations,
            recipe.seed,
        )
        heldout = splits["heldout"]
        n_eval = recipe.evaluation.samples_per_prompt
        baseline = _sample(base, heldout, n_eval, recipe, compute, EVAL_SEED)
        base_row, _ = evaluate(baseline, baseline, iteration=0, model="base")
        base_adherence = float(base_row["mean_adherence"][0])
        rows = []

        def add(strategy: str, i: int, row: pl.DataFrame, pairs: pl.DataFrame | None) -> None:
            r = row.row(0, named=True)
            rows.append(
                {
                    "strategy": strategy,
                    "iteration": i,
                    "win_rate": r["win_rate"],
                    "n_total": r["n_total"],
                    "avg_length": r["avg_length"],
                    "mean_adherence": r["mean_adherence"],
                    "adherence_gain": r["mean_adherence"] - base_adherence,
                    "finished_adherence": r["finished_adherence"],
                    "unfinished_rate": r["unfinished_rate"],
                    "n_pairs": None if pairs is None else pairs.height,
                    "mean_margin": None if pairs is None else float(pairs["margin"].mean() or 0.0),
                    "mean_length_diff": None if pairs is None else float(pairs["length_diff"].mean() or 0.0),
                }
            )

        rm_dir: list[Path] = []
        p = recipe.pairs
        for strategy in strategies:
            add(strategy, 0, base_row, None)
            policy = base
            for i in range(1, k + 1):
                log(f"{strategy}: iteration {i}")
                cands = _sample(
                    policy,
                    splits[str(i)],
                    recipe.generation.num_candidates,
                    recipe,
                    compute,
                    recipe.seed * 100 + i,
                )
                rewards = _rewards(cands, recipe, compute, work_dir, rm_dir)
                options = {
                    **p.selection_options(),
                    "strategy": strategy,
                    "length_penalty": p.length_penalty if strategy == "length_penalized" else 0.0,
                }
                sel = select_pairs(
                    cands, rewards, **options, seed=recipe.seed + i, system=recipe.policy.system_prompt
                )
                if sel.pairs.height == 0:
                    raise ValueError(f"{strategy}, iteration {i}: no preference pairs survived selection")
                out = work_dir / strategy / f"iteration-{i}"
                scratch = work_dir / strategy / f"dpo-{i}"
                train_dpo(policy, sel.pairs, recipe.dpo, out, scratch, compute, recipe.seed + i)
                shutil.rmtree(scratch, ignore_errors=True)
                samples = _sample(out, heldout, n_eval, recipe, compute, EVAL_SEED)
                row, _ = evaluate(samples, baseline, iteration=i, model=f"{strategy}[{i}]")
                add(strategy, i, row, sel.pairs)
                policy = out
        board = pl.DataFrame(rows, schema=ABLATION_SCHEMA, orient="row")
    finally:
        if not keep:
            shutil.rmtree(work_dir, ignore_errors=True)
    return AblationResult(leaderboard=board, seconds=time.perf_counter() - t0)
