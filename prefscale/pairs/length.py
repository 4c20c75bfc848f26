"""How much a reward rewards length: the least-squares slope of the reward on log(1 + characters).

`pairs.length_control: regress` ranks a prompt's candidates by `reward - slope·(log1p(chars) - mean)`, the slope
fitted over one iteration's candidates (`select_pairs`); `prefscale score`'s `length_controlled` removes the same
trend to measure what a reward sees beyond length. A log scale, because one more sentence matters more in a
short reply than in a long one (alpaca_eval's length-controlled GLM also reads the log length).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LENGTH_CONTROLS = ("none", "regress")
"""`pairs.length_control` values: `none` ranks by the reward, `regress` by the reward less its learned length trend."""


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


def describe_length_control(length_control: str, slope: float) -> str:
    """What a selection removed, for a person: `length slope removed: 0.0123 per log-char`, or `none`."""
    if length_control == "none":
        return "none"
    if slope <= 0:
        return "length slope removed: 0 (the reward does not rise with length)"
    return f"length slope removed: {slope:.4f} per log-char"
