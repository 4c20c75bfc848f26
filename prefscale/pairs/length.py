"""How much a reward rewards length: the least-squares slope of the reward on log(1 + characters).

`pairs.length_control: regress` ranks a prompt's candidates by `reward - slope·(log1p(chars) - mean)`, the slope
fitted over one iteration's candidates (`select_pairs`); `prefscale score`'s `length_controlled` removes the same
trend to measure what a reward sees beyond length. `anchored` fits the slope once, on the base policy's
candidates (the first iteration's), and charges it only for length beyond their mean log length (`LengthAnchor`):
`reward - slope·max(0, log1p(chars) - anchor)`. A reply as long as the base's costs nothing, so the selection does
not push below the base's length; DPO on such pairs still can (measured in BENCHMARKS.md). A log scale, because
one more sentence matters more in a short reply than in a long one (alpaca_eval's length-controlled GLM also reads
the log length).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LENGTH_CONTROLS = ("none", "regress", "anchored", "shorter_on_ties")
"""`pairs.length_control` values: `none` ranks by the reward, `regress` by the reward less its learned length trend,
`anchored` by the reward less the base's slope times the length beyond the base's mean, `shorter_on_ties` by the
reward with its ties broken toward the shorter reply."""


@dataclass(frozen=True)
class LengthAnchor:
    """`anchored` length control, fitted once on the base policy's candidates: the reward's slope per log-char
    (its positive part) and their mean log(1 + characters), above which length is charged."""

    slope: float
    log_chars: float

    @property
    def chars(self) -> float:
        """The anchor in characters (exp(log_chars) - 1)."""
        return math.expm1(self.log_chars)


def fit_length_anchor(
    chars: Sequence[float] | np.ndarray, reward: Sequence[float] | np.ndarray
) -> LengthAnchor:
    """The `LengthAnchor` of one set of candidates: `max(0, length_slope)` and the mean log length of those
    with a finite reward. ValueError when none has one."""
    x, y = log_length(chars), np.asarray(reward, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"{x.size} lengths but {y.size} rewards")
    keep = np.isfinite(y)
    if not keep.any():
        raise ValueError("cannot anchor length control: no candidate with a finite reward")
    return LengthAnchor(slope=max(0.0, length_slope(chars, reward)), log_chars=float(x[keep].mean()))


def log_length(chars: Sequence[float] | np.ndarray) -> np.ndarray:
    """log(1 + characters), the length scale the slope is fitted on."""
    return np.log1p(np.asarray(chars, dtype=np.float64))


def length_slope(chars: Sequence[float] | np.ndarray, reward: Sequence[float] | np.ndarray) -> float:
    """Least-squares slope of `reward` on `log_length(chars)` (reward per log-char); 0.0 when the lengths do not
    vary. Rows with a non-finite reward are left out of the fit."""
    x, y = log_length(chars), np.asarray(reward, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"{x.size} lengths but {y.size} rewards")
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 2:
        return 0.0
    var = float(np.var(x))
    return float(np.mean((x - x.mean()) * (y - y.mean())) / var) if var > 0 else 0.0


def describe_length_control(length_control: str, slope: float, anchor: LengthAnchor | None = None) -> str:
    """What a selection removed, for a person: `length slope removed: 0.0123 per log-char`, with `anchored` the
    length it is charged above, or `none`."""
    if length_control == "none":
        return "none"
    if length_control == "shorter_on_ties":
        return "ties on the reward go to the shorter reply"
    if slope <= 0:
        return "length slope removed: 0 (the reward does not rise with length)"
    above = f" beyond {anchor.chars:.0f} chars (the base's geometric mean)" if anchor is not None else ""
    return f"length slope removed: {slope:.4f} per log-char{above}"
