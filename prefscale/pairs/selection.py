"""Preference pairs: one (chosen, rejected) pair per prompt, in the `prompt/chosen/rejected` format TRL reads.

Each strategy ranks a prompt's candidates by a key: the reward, minus `UNFINISHED_PENALTY` for a sample cut at the
token limit (`unfinished_is_worst`), minus `length_penalty` × its length in characters (`length_penalized` only),
and with `length_control="regress"` (any strategy) minus `slope` × (log(1 + characters) − their mean), the slope
the reward gains per log-char, fitted by least squares over the candidates of the call (`pairs/length.py`): over
the finished ones when `unfinished_is_worst` (the others rank last whatever their reward), else over all. Only a
positive slope is removed (times `length_control_strength`, the share removed): a reward that prefers shorter
replies is left as is. With `length_control="anchored"` the key is the reward minus `slope` ×
max(0, log(1 + characters) − anchor), the slope and anchor a `LengthAnchor` fitted once on the base policy's
candidates (given as `length_anchor`; fitted on this call's candidates when not given, as for the first
iteration). The slope removed is returned as `PairSelection.length_slope` (0.0 when nothing was), and the anchor
as `PairSelection.length_anchor`. `length_control="shorter_on_ties"` keeps the key and breaks its ties by length:
of candidates with the same key, the shorter ranks higher, so the chosen side is the shortest of the best and the
rejected side the longest of the worst, and no pair trades reward for length.

| strategy | chosen | rejected |
|---|---|---|
| `best_vs_worst` (Snorkel, SPPO) | highest key | lowest key |
| `min_margin` | highest key | lowest key; a margin below `min_margin` is reported as such, not as a tie |
| `length_penalized` (RLHFlow `max_min_p`) | highest `key - λ·len` | lowest `key - λ·len` |
| `best_vs_random` (RLHFlow `max_random`) | highest key | a random other candidate at least `min_margin` below it |
| `random_pair` (RLHFlow `random`) | the higher of a random pair at least `min_margin` apart | the lower one |
| `length_matched` | the higher of the widest-margin pair whose lengths are within `max_length_ratio` | the lower one |

Ties on the key go to the lower `sample_idx` for chosen and the higher for rejected (with `shorter_on_ties`, to the
shorter response for chosen and the longer for rejected first). Random draws are seeded per
prompt from `seed` and the prompt id, so a selection does not depend on row order or on the other prompts.
Every strategy drops a prompt whose candidates are all identical or whose best and worst keys are less than
`min_margin` apart; `DROP_REASONS` lists each reason and the strategies that give it.
`chosen_reward`, `rejected_reward` and `margin` are always the raw rewards, whatever the key.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import polars as pl

from prefscale.pairs.length import LENGTH_CONTROLS, LengthAnchor, fit_length_anchor, length_slope
from prefscale.pairs.registry import PAIR_STRATEGIES
from prefscale.pairs.strategies import (
    BELOW_MIN_MARGIN,
    IDENTICAL_BEST_AND_WORST,
    IDENTICAL_CANDIDATES,
    NO_ELIGIBLE_PAIR,
    TIED_REWARDS,
    Draw,
    PickFn,
)

UNFINISHED_PENALTY = 1e3  # ranks a sample cut at the token limit below every finished one
TIE_TOLERANCE = 1e-6  # key differences below this are ties (the default `min_margin`)

DROP_REASONS = {
    IDENTICAL_CANDIDATES: "every candidate of the prompt has the same response (all strategies)",
    TIED_REWARDS: "best and worst keys differ by less than min_margin (by less than 1e-6 with min_margin)",
    BELOW_MIN_MARGIN: "min_margin: best and worst keys differ by at least 1e-6 but less than min_margin",
    IDENTICAL_BEST_AND_WORST: "best and worst have the same response (best_vs_worst, min_margin, length_penalized)",
    NO_ELIGIBLE_PAIR: "every pair min_margin apart repeats a response (random_pair, best_vs_random), or none "
    "is within max_length_ratio (length_matched)",
}

PAIR_SCHEMA = {
    "prompt_id": pl.String,
    "prompt": pl.List(pl.Struct({"role": pl.String, "content": pl.String})),
    "chosen": pl.List(pl.Struct({"role": pl.String, "content": pl.String})),
    "rejected": pl.List(pl.Struct({"role": pl.String, "content": pl.String})),
    "chosen_id": pl.String,
    "rejected_id": pl.String,
    "chosen_reward": pl.Float64,
    "rejected_reward": pl.Float64,
    "margin": pl.Float64,
    "length_diff": pl.Int32,
    "rejected_unfinished": pl.Boolean,
}
DROPPED_SCHEMA = {"prompt_id": pl.String, "reason": pl.String}


@dataclass(frozen=True)
class PairSelection:
    pairs: pl.DataFrame
    dropped: pl.DataFrame  # prompt_id, reason
    length_slope: float = 0.0  # reward per log-char removed from the ranking key (regress, anchored)
    length_anchor: LengthAnchor | None = None  # anchored only: the base's slope and mean log length


def select_pairs(
    candidates: pl.DataFrame,
    rewards: pl.DataFrame,
    *,
    strategy: str = "best_vs_worst",
    min_margin: float = TIE_TOLERANCE,
    unfinished_is_worst: bool = True,
    length_penalty: float = 0.0,
    length_control: str = "none",
    length_control_strength: float = 1.0,
    max_length_ratio: float = 1.25,
    length_anchor: LengthAnchor | None = None,
    seed: int = 0,
    system: str | None = None,
) -> PairSelection:
    """One (chosen, rejected) pair per prompt by `strategy` (see the module docstring), and the dropped prompts.

    `length_penalty` (λ, per character) is used by `length_penalized` only and must stay 0 with the others.
    `length_control` (`none` or `regress`) removes the reward's learned length slope from the key, any strategy;
    `length_control_strength` (in (0, 1]) is the share of that slope removed. `length_anchor` (`anchored` only)
    is the base's fitted `LengthAnchor`; without it the anchor is fitted here. `max_length_ratio` (>= 1) bounds
    how much longer one side of a `length_matched` pair may be than the other.
    `seed` drives `random_pair` and `best_vs_random`; the other strategies are deterministic without it.
    `system` (the recipe's `policy.system_prompt`) opens each pair's `prompt` messages, as the candidates saw it.
    """
    pick = PAIR_STRATEGIES.get(strategy)  # UnknownEntryError (a ValueError) naming the known strategies
    if length_penalty < 0:
        raise ValueError(f"length_penalty must be >= 0, got {length_penalty}")
    if length_penalty and strategy != "length_penalized":
        raise ValueError(f"length_penalty={length_penalty} is only used by strategy 'length_penalized'")
    if length_control not in LENGTH_CONTROLS:
        raise ValueError(f"unknown length_control {length_control!r}; known: {', '.join(LENGTH_CONTROLS)}")
    if length_control in ("regress", "anchored") and length_penalty:
        raise ValueError(f"length_control={length_control!r} and length_penalty={length_penalty}: use one")
    if max_length_ratio < 1:
        raise ValueError(f"max_length_ratio must be >= 1, got {max_length_ratio}")
    if not 0 < length_control_strength <= 1:
        raise ValueError(f"length_control_strength must be in (0, 1], got {length_control_strength}")
    if length_anchor is not None and length_control != "anchored":
        raise ValueError(f"length_anchor is only used with length_control 'anchored', not {length_control!r}")
    df = candidates.join(rewards.select("candidate_id", "reward"), on="candidate_id", how="inner")
    if df.height != candidates.height:
        raise ValueError(f"{candidates.height - df.height} candidates have no reward score")
    length = pl.col("response").str.len_chars()
    key = pl.col("reward").cast(pl.Float64)
    if unfinished_is_worst:
        key = key - pl.when(pl.col("finish_reason") == "length").then(UNFINISHED_PENALTY).otherwise(0.0)
    if length_penalty:
        key = key - length_penalty * length
    df = df.with_columns(length.alias("_len"))
    log_len = pl.col("_len").cast(pl.Float64).log1p()
    slope, anchor = 0.0, None
    if length_control == "regress":
        slope = length_control_strength * _fitted_slope(df, unfinished_is_worst)
        if slope:
            key = key - slope * (log_len - log_len.mean())
    elif length_control == "anchored":
        anchor = length_anchor or _fitted_anchor(df, unfinished_is_worst)
        slope = length_control_strength * anchor.slope
        if slope:
            key = key - slope * (log_len - anchor.log_chars).clip(lower_bound=0.0)
    df = df.with_columns(key.alias("_key"))
    # One sort for all prompts (by prompt, then best key first, ties to the lower sample_idx) and one pass over
    # the rows: per-prompt frames cost more than the strategies themselves at a million candidates.
    by = ["prompt_id", "_key", *(["_len"] if length_control == "shorter_on_ties" else []), "sample_idx"]
    ranked_all = df.sort("prompt_id", "sample_idx").sort(
        by, descending=[False, True, *[False] * (len(by) - 2)], maintain_order=True
    )
    pairs, dropped = [], []
    for pid, ranked in _by_prompt(ranked_all):
        picked = _pick(ranked, Draw(pid, seed, min_margin, max_length_ratio), pick)
        if isinstance(picked, str):
            dropped.append((pid, picked))
        else:
            pairs.append(_pair_fields(pid, *picked))
    return PairSelection(
        pairs=_pairs_frame(pairs, system),
        dropped=pl.DataFrame(dropped, schema=DROPPED_SCHEMA, orient="row"),
        length_slope=slope,
        length_anchor=anchor,
    )


def base_length_anchor(
    candidates: pl.DataFrame, rewards: pl.DataFrame, *, unfinished_is_worst: bool = True
) -> LengthAnchor:
    """The `LengthAnchor` `anchored` keeps for later iterations, fitted on the base policy's scored candidates
    (the first iteration's) as `select_pairs` fits it there."""
    df = candidates.join(rewards.select("candidate_id", "reward"), on="candidate_id", how="inner")
    if df.height == 0:
        raise ValueError("cannot anchor length control: the base's candidates have no reward scores")
    return _fitted_anchor(
        df.with_columns(pl.col("response").str.len_chars().alias("_len")), unfinished_is_worst
    )


def _fitted_anchor(df: pl.DataFrame, unfinished_is_worst: bool) -> LengthAnchor:
    """The `LengthAnchor` of the candidates ranked by their reward (all of them when every one was cut off)."""
    fit = _fit_rows(df, unfinished_is_worst)
    fit = fit if fit.height else df
    return fit_length_anchor(fit["_len"].to_numpy(), fit["reward"].cast(pl.Float64).to_numpy())


def _fitted_slope(df: pl.DataFrame, unfinished_is_worst: bool) -> float:
    """The positive part of the reward's slope on log(1 + chars), over the candidates ranked by their reward."""
    fit = _fit_rows(df, unfinished_is_worst)
    return max(0.0, length_slope(fit["_len"].to_numpy(), fit["reward"].cast(pl.Float64).to_numpy()))


def _fit_rows(df: pl.DataFrame, unfinished_is_worst: bool) -> pl.DataFrame:
    """The candidates a length fit reads: the finished ones when unfinished_is_worst (the others rank last)."""
    return df.filter(pl.col("finish_reason").ne_missing("length")) if unfinished_is_worst else df


def _by_prompt(ranked_all: pl.DataFrame) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(prompt_id, its rows as dicts) for each run of equal `prompt_id` in a frame sorted by it."""
    group: list[dict[str, Any]] = []
    for row in ranked_all.iter_rows(named=True, buffer_size=8192):
        if group and row["prompt_id"] != group[0]["prompt_id"]:
            yield group[0]["prompt_id"], group
            group = []
        group.append(row)
    if group:
        yield group[0]["prompt_id"], group


def _pick(
    ranked: list[dict[str, Any]], draw: Draw, pick: PickFn
) -> tuple[dict[str, Any], dict[str, Any]] | str:
    """(chosen, rejected) rows of one prompt's candidates (ranked best first), or the reason to drop it."""
    if len({r["response"] for r in ranked}) == 1:
        return IDENTICAL_CANDIDATES
    gap = ranked[0]["_key"] - ranked[-1]["_key"]
    if gap < draw.min_margin:
        return TIED_REWARDS if gap < TIE_TOLERANCE else pick.below_margin
    return pick(ranked, draw)


_FLAT_PAIR_SCHEMA = {
    "prompt_id": pl.String,
    "prompt": pl.String,
    "chosen": pl.String,
    "rejected": pl.String,
    **{k: v for k, v in PAIR_SCHEMA.items() if k not in ("prompt_id", "prompt", "chosen", "rejected")},
}


def _pair_fields(pid: str, chosen: dict[str, Any], rejected: dict[str, Any]) -> tuple[Any, ...]:
    """One pair's `_FLAT_PAIR_SCHEMA` values: the prompt and both responses as plain text."""
    return (
        pid,
        chosen["prompt"],
        chosen["response"],
        rejected["response"],
        chosen["candidate_id"],
        rejected["candidate_id"],
        chosen["reward"],
        rejected["reward"],
        chosen["reward"] - rejected["reward"],
        chosen["_len"] - rejected["_len"],
        rejected["finish_reason"] == "length",
    )


def _messages(*turns: tuple[str, pl.Expr]) -> pl.Expr:
    return pl.concat_list(
        pl.struct(pl.lit(role, pl.String).alias("role"), content.alias("content")) for role, content in turns
    )


def _pairs_frame(rows: list[tuple[Any, ...]], system: str | None) -> pl.DataFrame:
    """`PAIR_SCHEMA` from `_pair_fields` rows: the prompt as `prompt_messages(prompt, system)`, each response
    as one assistant message (built as columns: Python message dicts cost more than the selection)."""
    flat = pl.DataFrame(rows, schema=_FLAT_PAIR_SCHEMA, orient="row")
    head = [("system", pl.lit(system, pl.String))] if system else []
    return flat.with_columns(
        _messages(*head, ("user", pl.col("prompt"))).alias("prompt"),
        _messages(("assistant", pl.col("chosen"))).alias("chosen"),
        _messages(("assistant", pl.col("rejected"))).alias("rejected"),
    ).cast(PAIR_SCHEMA)
