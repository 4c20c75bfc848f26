"""`prefscale score --recipe`: a reward for each (prompt, response) row from a recipe's own labeling functions and
label model, as the pipeline's `label_model` reward gives it (P(high), no tie-break).

**Task types.** A recipe scopes its functions to the task types its prompts carry (`task_types: [...]`), so each
row gets the task type the pipeline would give a candidate of the same prompt, first found wins:

1. the row's own `task_type` (a non-empty string other than `general`);
2. the recipe's prompt pool (`data.source: embedded`, or a `file` that exists): the task type of the same prompt
   there (matched case- and whitespace-insensitively, as the pool de-duplicates), already tagged by
   `labeling.task_types` as the `prompts` asset tags it; a `hf_dataset` pool is not read (the network);
3. the recipe's `labeling.task_types` rules (first match), else `general`;

then `labeling.task_classifier`, when the recipe has one, re-tags as `lf_votes` does (its `fill` decides which).

**Model-backed functions** (`labeling.model_functions`) run as in `lf_votes`, except that `model: base_policy`
has no artifact store here: `base_policy` names the folder given (`--base-policy DIR`, e.g.
`$PREFSCALE_HOME/artifacts/base_policy/all/current` after a run of the recipe). Without one the scoring fails
naming those functions, unless `skip_model_lfs` (`--skip-model-lfs`) leaves every model-backed function out,
which the summary says. Other model references (folders, hub ids, packages, TF-IDF) load as in the pipeline.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from prefscale.config.base import RecipeError
from prefscale.config.recipe import Recipe, load_recipe
from prefscale.data.prompts import build_pool
from prefscale.labeling.analysis import lf_analysis
from prefscale.labeling.apply import apply_all_lfs
from prefscale.labeling.context import LFContext
from prefscale.labeling.label_model import fit_label_model
from prefscale.labeling.model_kinds import BASE_POLICY_ALIAS
from prefscale.labeling.task_classifier import classify_tasks
from prefscale.labeling.task_types import DEFAULT_TASK_TYPE, tag_task_types
from prefscale.rewards.text_scores import text_rows
from prefscale.tools.score import read_rows, scored_line, write_lines

# where a row's task type came from, as the summary says it
ROWS, POOL, RULES, CLASSIFIER = (
    "the rows' task_type",
    "the recipe's prompts",
    "the recipe's task_types rules (or general)",
    "its task_classifier",
)


def _norm(text: str) -> str:
    """A prompt as the pool de-duplicates it: lower case, runs of whitespace as one space, stripped."""
    return " ".join(text.lower().split())


def _pool_task_types(recipe: Recipe) -> tuple[dict[str, str], str | None]:
    """(normalized prompt -> task type of the recipe's prompt pool, a note when the pool was not read)."""
    d = recipe.data
    if d.source == "hf_dataset":
        return {}, "the recipe's hf_dataset prompts were not read (no network here)"
    if d.source == "file" and not Path(d.path or "").expanduser().is_file():
        return {}, f"the recipe's prompts file {d.path} was not found"
    try:
        pool = build_pool(d, recipe.seed, recipe.labeling.task_types)
    except ValueError as e:  # PromptsFileError included: `prefscale recipe validate` says more
        return {}, f"the recipe's prompts could not be read ({str(e).splitlines()[0]})"
    return {_norm(p): t for p, t in zip(pool["prompt"], pool["task_type"], strict=True)}, None


def _given(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() not in ("", DEFAULT_TASK_TYPE) else None


def tag_rows(
    recipe: Recipe, prompts: Sequence[str], given: Sequence[Any]
) -> tuple[pl.Series, dict[str, int], list[str]]:
    """Each row's task type (see the module docstring), how many came from where, and notes."""
    pool, note = _pool_task_types(recipe)
    types: list[str | None] = []
    origin: list[str] = []
    for p, g in zip(prompts, given, strict=True):
        own, pooled = _given(g), pool.get(_norm(p))
        types.append(own or pooled)
        origin.append(ROWS if own else POOL if pooled is not None else RULES)
    frame = pl.DataFrame(
        {"prompt": list(prompts), "task_type": types}, schema={"prompt": pl.String, "task_type": pl.String}
    )
    frame = tag_task_types(frame, recipe.labeling.task_types).with_columns(
        pl.col("task_type").fill_null(DEFAULT_TASK_TYPE)
    )
    clf = recipe.labeling.task_classifier
    if clf is not None:
        tagged = classify_tasks(frame, clf, seed=recipe.seed)
        origin = [
            CLASSIFIER if s in ("classifier", "default") else o
            for o, s in zip(origin, tagged["task_type_source"], strict=True)
        ]
        frame = tagged.with_columns(pl.col("task_type").fill_null(DEFAULT_TASK_TYPE))
    return frame["task_type"], dict(Counter(origin)), [note] if note else []


def _functions(
    recipe: Recipe, base_policy: str | Path | None, skip_model_lfs: bool
) -> tuple[list[Any], LFContext | None, list[str]]:
    """The functions to run, their model context, and notes; ValueError when base_policy is needed and absent."""
    model_lfs = list(recipe.labeling.model_functions)
    if skip_model_lfs and model_lfs:
        names = ", ".join(lf.name for lf in model_lfs)
        lfs = list(recipe.labeling.functions)
        if not lfs:
            raise ValueError(f"recipe {recipe.name!r} has only model-backed labeling functions ({names})")
        return lfs, None, [f"left out the model-backed functions {names} (--skip-model-lfs)"]
    needs_base = [lf.name for lf in model_lfs if getattr(lf, "model", None) == BASE_POLICY_ALIAS]
    if needs_base and base_policy is None:
        raise ValueError(
            f"recipe {recipe.name!r}: {', '.join(needs_base)} run on the base policy: pass --base-policy DIR "
            "(e.g. $PREFSCALE_HOME/artifacts/base_policy/all/current after a run of this recipe) or "
            "--skip-model-lfs"
        )
    if base_policy is not None and not (Path(base_policy).expanduser() / "config.json").is_file():
        raise ValueError(f"--base-policy {base_policy}: not a model folder (no config.json)")
    context = None
    if model_lfs:
        base = Path(base_policy).expanduser() if base_policy is not None else None
        context = LFContext(base_policy=base, policy=base)  # a self_judge's `policy` is the base here
    return [*recipe.labeling.functions, *model_lfs], context, []


@dataclass(frozen=True)
class RecipeScores:
    rewards: np.ndarray  # P(high) per row, in row order
    task_types: list[str]
    analysis: pl.DataFrame  # per function: polarity, coverage, overlaps, conflicts, estimated accuracy
    origins: dict[str, int]  # where the task types came from -> rows
    notes: list[str]


def recipe_scores(
    recipe: Recipe,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    task_types: Sequence[Any] | None = None,
    finish_reasons: Sequence[str | None] | None = None,
    references: Sequence[str | None] | None = None,
    base_policy: str | Path | None = None,
    skip_model_lfs: bool = False,
    seed: int | None = None,
) -> RecipeScores:
    """The recipe's functions on every row and its label model fitted on those votes (see the module docstring).

    `task_types` are the rows' own (None or `general` where they have none); `references` their reference
    answers (for `kind: reference`); `seed` defaults to the recipe's.
    """
    problems = recipe.labeling.import_problems()
    if problems:
        raise RecipeError("; ".join(problems))
    lfs, context, notes = _functions(recipe, base_policy, skip_model_lfs)
    given = list(task_types) if task_types is not None else [None] * len(prompts)
    tagged, origins, pool_notes = tag_rows(recipe, prompts, given)
    rows = text_rows(
        prompts, responses, task_types=tagged.to_list(), finish_reasons=finish_reasons, references=references
    )
    votes = apply_all_lfs(rows, lfs, context)
    names = [lf.name for lf in lfs]
    lm = recipe.labeling.label_model
    fit = fit_label_model(
        votes,
        names,
        **lm.fit_options(),
        seed=recipe.seed if seed is None else seed,
        versions={lf.name: lf.version for lf in lfs},
    )
    p_high = rows.select("candidate_id").join(fit.labels, on="candidate_id", how="left")["p_high"]
    analysis = lf_analysis(votes, lfs, None, fit.weights).select(
        "lf_name", "kind", "polarity", "coverage", "overlaps", "conflicts", "estimated_accuracy"
    )
    return RecipeScores(
        rewards=p_high.to_numpy().astype(np.float64),
        task_types=tagged.to_list(),
        analysis=analysis,
        origins=origins,
        notes=[*notes, *pool_notes],
    )


def score_file_with_recipe(
    input_path: str | Path,
    output_path: str | Path,
    recipe_ref: str,
    *,
    base_policy: str | Path | None = None,
    skip_model_lfs: bool = False,
    seed: int | None = None,
) -> dict[str, Any]:
    """Read, score with the recipe and write (as `prefscale.tools.score.score_file` does); a summary back."""
    src, dst = Path(input_path), Path(output_path)
    if src.resolve() == dst.resolve():
        raise ValueError(
            f"--output {dst} is the input file; write the scored rows to another path (the input is kept as it is)"
        )
    recipe = load_recipe(recipe_ref)
    rows = read_rows(input_path)
    records = [r.record for r in rows]
    finish = [f if isinstance(f := r.get("finish_reason"), str) else None for r in records]
    references = [r.get("reference") for r in records]
    scores = recipe_scores(
        recipe,
        [r["prompt"] for r in records],
        [r["response"] for r in records],
        task_types=[r.get("task_type") for r in records],
        finish_reasons=finish,
        references=references if any(references) else None,
        base_policy=base_policy,
        skip_model_lfs=skip_model_lfs,
        seed=seed,
    )
    rewards = scores.rewards
    write_lines(output_path, [scored_line(r, float(x)) for r, x in zip(rows, rewards, strict=True)])
    return {
        "rows": len(rows),
        "source": f"label_model (recipe {recipe.name}: {scores.analysis.height} labeling functions)",
        "mean": float(np.mean(rewards)),
        "min": float(np.min(rewards)),
        "max": float(np.max(rewards)),
        "distinct": len(np.unique(rewards)),
        "task_types": dict(sorted(Counter(scores.task_types).items())),
        "task_type_origins": scores.origins,
        "notes": scores.notes,
        "analysis": scores.analysis,
    }
