"""A model-level holdout of an LF pack on AlpacaEval annotations: some models' judgements tune, others report.

The judge's annotations play the part of SME gold: a small labelled set that tunes a threshold, never the
targets of the reward that is then scored on them. For each pair of held-out models, one labeling function's
symmetric thresholds (`high_above: t`, `low_below: -t`, or the function left out) are chosen from a grid by the
length-balanced agreement on the pairs among the *other* models, and the reward with that choice is scored on the
pairs between the two held-out models only. Every pair is thus scored once, by a setting chosen without either of
its models' annotations. With `optional_lfs`, which of those functions to keep is chosen the same way (every
subset is tried with every threshold), so a choice of functions is held out too. The label model itself is fitted
on every answer's votes without labels, as in `prefscale score`; each answer's reference (the annotation's
`output_1`) feeds the pack's `reference` LFs unless `references` is off.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from prefscale.config.labeling import DEFAULT_PACK, LFPack, load_lf_pack
from prefscale.rewards.text_scores import label_model_scores
from prefscale.tools.score import (
    alpaca_answers_and_pairs,
    annotation_files,
    pair_agreement,
    pairs_with_rewards,
    scored_answers,
)

DEFAULT_GRID: tuple[float | None, ...] = (None, 0.02, 0.04, 0.05, 0.06, 0.07, 0.08, 0.10)


def pack_variant(pack: LFPack, lf: str, threshold: float | None) -> LFPack:
    """`pack` with labeling function `lf` voting high at >= threshold and low at <= -threshold (None: left out)."""
    names = [f.name for f in pack.functions]
    if lf not in names:
        raise ValueError(f"LF pack {pack.name!r} has no labeling function {lf!r}; it has {names}")
    if threshold is None:
        functions = tuple(f for f in pack.functions if f.name != lf)
    else:
        # validated again, so a threshold the kind does not accept fails here, naming the field
        functions = tuple(
            f.model_validate({**f.model_dump(), "high_above": threshold, "low_below": -threshold})
            if f.name == lf
            else f
            for f in pack.functions
        )
    return pack.model_copy(update={"functions": functions})


def model_holdout(
    directory: str | Path,
    *,
    pack: str | Path = DEFAULT_PACK,
    lf: str = "consensus",
    grid: Sequence[float | None] = DEFAULT_GRID,
    min_gap: float = 0.5,
    seed: int = 0,
    references: bool = True,
    optional_lfs: Sequence[str] = (),
) -> dict[str, Any]:
    """Agreement with the judge on a model-level holdout, `lf`'s threshold (and which of `optional_lfs` to keep)
    tuned per split (module docstring).

    Returns the pooled agreement over every held-out pair (`pair_agreement`'s keys), each split's held-out models,
    chosen threshold and its tuning score, and, for reference, every grid value scored on all pairs at once (which
    is *not* a holdout: it shows what tuning on the evaluation data would have picked).
    """
    files = annotation_files(directory)
    answers, pairs = alpaca_answers_and_pairs(files, min_gap)
    if pairs.height == 0:
        raise ValueError(f"no pairs with a preference gap >= {min_gap} in {directory}")
    models = sorted(set(answers["generator"].to_list()))
    if len(models) < 4:
        raise ValueError(
            f"a model-level holdout needs annotations of 4 or more models; {directory} has {models}"
        )
    base = load_lf_pack(pack)
    names = [f.name for f in base.functions]
    unknown = [n for n in optional_lfs if n not in names or n == lf]
    if unknown:
        raise ValueError(
            f"optional functions {unknown} are not in LF pack {base.name!r} (or are the tuned {lf!r})"
        )
    dropped = [
        frozenset(c) for k in range(len(optional_lfs) + 1) for c in itertools.combinations(optional_lfs, k)
    ]
    joined: dict[tuple[frozenset[str], float | None], pl.DataFrame] = {}
    for left_out in dropped:
        kept = base.model_copy(
            update={"functions": tuple(f for f in base.functions if f.name not in left_out)}
        )
        for t in grid:
            scores = label_model_scores(
                answers["instruction"].to_list(),
                answers["output"].to_list(),
                pack_variant(kept, lf, t),
                references=answers["reference"].to_list() if references else None,
                seed=seed,
            )
            joined[(left_out, t)] = pairs_with_rewards(pairs, scored_answers(answers, scores.rewards)[0])
    splits, held_parts = [], []
    for held in itertools.combinations(models, 2):
        train = [m for m in models if m not in held]

        def among(frame: pl.DataFrame, group: Sequence[str]) -> pl.DataFrame:
            return frame.filter(pl.col("winner").is_in(group) & pl.col("loser").is_in(group))

        tuning = {v: _balanced(among(joined[v], train)) for v in joined}
        # ties go to the fuller pack, then to a threshold over none, then to the lower threshold
        best = max(joined, key=lambda v: (tuning[v], -len(v[0]), v[1] is not None, -(v[1] or 0.0)))
        part = among(joined[best], held)
        held_parts.append(part)
        splits.append(
            {
                "held_out": list(held),
                "threshold": best[1],
                "left_out": sorted(best[0]),
                "tuning_length_balanced": tuning[best],
                "held_out_pairs": part.height,
            }
        )
    return {
        "files": [p.name for p in files],
        "models": models,
        "lf": lf,
        "optional_lfs": list(optional_lfs),
        "references": references,
        "grid": list(grid),
        "held_out": pair_agreement(pl.concat(held_parts)),
        "splits": splits,
        "all_pairs_by_threshold": {str(t): pair_agreement(joined[(frozenset(), t)]) for t in grid},
    }


def _balanced(part: pl.DataFrame) -> float:
    """Length-balanced agreement, or plain agreement when the judge never (or always) preferred the shorter."""
    a = pair_agreement(part)
    value = a["length_balanced_accuracy"]
    return float(a["reward_accuracy"] if np.isnan(value) else value) if part.height else float("-inf")
