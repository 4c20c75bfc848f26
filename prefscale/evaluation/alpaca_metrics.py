"""AlpacaEval metrics from an annotations file in the official alpaca_eval format.

`load_annotations` reads and validates a file (a JSON array or JSON Lines, optionally gzipped) and
`compute_metrics` turns it into the numbers of an AlpacaEval leaderboard row, with alpaca_eval's own semantics:

- a preference is a float in [1, 2]: 1 = the reference (`output_1`) is preferred, 2 = the model (`output_2`) is
  preferred, exactly 1.5 = a draw; `null`/`NaN` means the judge's answer was not parsed, and such a row is dropped
  from every preference metric (not from `avg_length`);
- `win_rate` = 100 * mean(preference - 1) and `standard_error` = 100 * its standard error of the mean (ddof 1),
  both on the leaderboard's 0-100 scale; `n_wins` / `n_wins_base` / `n_draws` count preferences above / below /
  equal to 1.5, and `discrete_win_rate` rounds each preference first (alpaca_eval's zero-one rule);
- `avg_length` = int(mean number of characters of the model outputs), over every row, as alpaca_eval does for the
  model outputs it evaluates;
- `length_controlled_winrate` is alpaca_eval's `length_controlled_minimal` GLM, the variant that can be fitted
  offline. The leaderboard's number is `length_controlled_v1`, which also needs instruction difficulties from the
  Hugging Face Hub, so the two differ (see BENCHMARKS.md).

alpaca_eval is imported lazily (it takes about two seconds and has import-time side effects), and nothing here
touches the network.
"""

from __future__ import annotations

import bisect
import gzip
import json
import logging
import math
import re
import warnings
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd

REQUIRED_KEYS: tuple[str, ...] = ("instruction", "output_1", "output_2", "preference", "generator_2")
"""Keys every annotation must have (alpaca_eval's format has more; extra keys are kept and ignored)."""

STRING_KEYS: tuple[str, ...] = ("instruction", "output_1", "output_2", "generator_2")
LC_VARIANT = "length_controlled_minimal"
"""The alpaca_eval GLM used for `length_controlled_winrate`: the one that needs no Hub download."""

_GZIP_MAGIC = b"\x1f\x8b"


class AnnotationsError(ValueError):
    """A malformed annotations file: `path`, the 1-based `line` (None when it concerns the whole file), `reason`."""

    def __init__(self, path: str | Path, line: int | None, reason: str) -> None:
        self.path, self.line, self.reason = str(path), line, reason
        where = f"{self.path}: line {line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")


# ---------------------------------------------------------------------------------------------------- loading


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AnnotationsError(path, None, "no such file") from None
    except IsADirectoryError:
        raise AnnotationsError(path, None, "is a directory, not an annotations file") from None
    except OSError as e:
        raise AnnotationsError(path, None, f"cannot read: {e.strerror or e}") from None
    if path.suffix == ".gz" and data[:2] != _GZIP_MAGIC:
        raise AnnotationsError(path, None, "named .gz but not a gzip file")
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise AnnotationsError(path, None, f"not a valid gzip file ({e})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise AnnotationsError(path, line, f"not valid UTF-8 ({e.reason} at byte {e.start})") from None


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _parse_array(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    """(line, element) for each element of a top-level JSON array, the line being where the element starts."""
    newlines = [m.start() for m in re.finditer("\n", text)]

    def line_of(offset: int) -> int:
        return bisect.bisect_left(newlines, offset) + 1

    decoder = json.JSONDecoder()
    i = _skip_ws(text, text.index("[") + 1)
    if i < len(text) and text[i] == "]":
        i = _skip_ws(text, i + 1)
    else:
        while True:
            try:
                value, end = decoder.raw_decode(text, i)
            except json.JSONDecodeError as e:
                raise AnnotationsError(path, e.lineno, f"invalid JSON: {e.msg} (column {e.colno})") from None
            yield line_of(i), value
            i = _skip_ws(text, end)
            if i >= len(text):
                raise AnnotationsError(path, line_of(i), "invalid JSON: the array is not closed with ']'")
            if text[i] == ",":
                i = _skip_ws(text, i + 1)
                continue
            if text[i] != "]":
                raise AnnotationsError(
                    path, line_of(i), f"invalid JSON: expected ',' or ']', got {text[i]!r}"
                )
            i = _skip_ws(text, i + 1)
            break
    if i < len(text):
        raise AnnotationsError(path, line_of(i), "invalid JSON: extra data after the top-level array")


def _parse_lines(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    """(line, value) for each non-blank line of a JSON Lines text (split on '\\n' only, as JSON Lines defines)."""
    for n, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as e:
            raise AnnotationsError(path, n, f"invalid JSON: {e.msg} (column {e.colno})") from None
        yield n, value


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _check_record(path: Path, line: int, rec: Any) -> None:
    if not isinstance(rec, dict):
        raise AnnotationsError(path, line, f"expected a JSON object, got {_json_type(rec)}")
    missing = [k for k in REQUIRED_KEYS if k not in rec]
    if missing:
        raise AnnotationsError(
            path, line, f"missing key{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
        )
    for key in STRING_KEYS:
        if not isinstance(rec[key], str):
            raise AnnotationsError(path, line, f"{key} must be a string, got {_json_type(rec[key])}")
    pref = rec["preference"]
    if pref is None or (isinstance(pref, float) and math.isnan(pref)):
        return  # not parsed by the judge: legitimate, dropped from the preference metrics as alpaca_eval does
    if isinstance(pref, bool) or not isinstance(pref, int | float):
        raise AnnotationsError(
            path, line, f"preference must be a number in [1, 2] or null, got {_json_type(pref)}"
        )
    if not 1 <= pref <= 2:
        raise AnnotationsError(path, line, f"preference {pref!r} is outside [1, 2]")


def load_annotations(path: str | Path) -> pd.DataFrame:
    """Read and validate an AlpacaEval annotations file: a JSON array or JSON Lines, gzipped or not.

    Returns one row per annotation (all keys kept; `preference` as float, NaN where the judge's answer was not
    parsed). Raises `AnnotationsError` naming the file, the line and the reason on the first problem: invalid
    JSON, a non-object element, a missing required key, a non-string text field, a preference that is not a
    number in [1, 2] or null, or a second distinct `generator_2` (a file holds one model's annotations).
    """
    path = Path(path)
    text = _read_text(path)
    start = _skip_ws(text, 0)
    parsed = _parse_array(path, text) if text[start : start + 1] == "[" else _parse_lines(path, text)
    records: list[dict[str, Any]] = []
    first_line, first_gen = None, None
    for (
        line,
        rec,
    ) in parsed:  # parse and check line by line, so the first problem in the file is the one reported
        _check_record(path, line, rec)
        records.append(rec)
        if first_gen is None:
            first_line, first_gen = line, rec["generator_2"]
        elif rec["generator_2"] != first_gen:
            raise AnnotationsError(
                path,
                line,
                f"mixed generators: generator_2 {rec['generator_2']!r} differs from {first_gen!r} (line "
                f"{first_line}); a file must hold the annotations of one model",
            )
    if not records:
        raise AnnotationsError(path, None, "no annotations in the file")
    frame = pd.DataFrame.from_records(records)
    frame["preference"] = pd.to_numeric(frame["preference"], errors="raise").astype(float)
    return frame


# ---------------------------------------------------------------------------------------------------- metrics


def _alpaca_eval_metrics() -> ModuleType:
    """`alpaca_eval.metrics`, imported without its import-time noise (a pkg_resources warning, root log level)."""
    root = logging.getLogger()
    level = root.level
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import alpaca_eval.metrics as metrics
    finally:
        root.setLevel(level)  # alpaca_eval.annotators sets the root logger to INFO on import
    return metrics


def _finite(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _mean_and_sem(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and standard error (ddof 1) with exactly rounded sums, so the result does not depend on row order.

    Same formula as pandas' `mean` / `sem` (which alpaca_eval uses); only the summation differs, by a few ulp. The
    exact sums reproduce the official leaderboard's bits for all four reference files, where pandas' pairwise sums
    miss one of them by 2e-15.
    """
    n = len(values)
    if n == 0:
        return None, None
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var) / math.sqrt(n)


def length_controlled_minimal(annotations: pd.DataFrame) -> tuple[float | None, str | None]:
    """alpaca_eval's `length_controlled_minimal` win rate (0-100), fitted offline; `(None, reason)` if impossible.

    This is `alpaca_eval.metrics.glm_winrate.get_length_controlled_winrate(glm_name="length_controlled_minimal")`
    without its Hub download: that function always fetches `df_gamed.csv` for the instruction difficulty, which the
    minimal formula does not use. Featurization, design matrices and the cross-validated logistic fit are
    alpaca_eval's own (`make_dmatrix_for_model`, `fit_LogisticRegressionCV`), so the numbers are identical.
    """
    glm = _alpaca_eval_metrics().glm_winrate
    info = glm.GLM_INFO[LC_VARIANT]
    df = annotations.reset_index(drop=True)
    if "generator_1" in df and df["generator_1"].iloc[0] == df["generator_2"].iloc[0]:
        return 50.0, None  # the baseline against itself, as alpaca_eval special-cases it
    preference = df["preference"].astype(float) - 1
    n_splits = int(info["kwargs"]["n_splits"])
    if int(preference.notna().sum()) < n_splits:
        return None, f"needs at least {n_splits} parsed preferences for its {n_splits}-fold fit"
    delta = df["output_1"].str.len() - df["output_2"].str.len()
    spread = delta.std()
    if not (math.isfinite(spread) and spread > 0):
        return None, "the length differences between outputs have no spread"
    train = pd.DataFrame(
        {"preference": preference, "std_delta_len": delta / spread, "not_gamed_baseline": True}
    )
    test = train[["not_gamed_baseline"]].copy()
    test["std_delta_len"] = 0  # predict as if both outputs had the same length
    import sklearn

    try:
        with warnings.catch_warnings(), sklearn.config_context():  # the fit flips a global sklearn setting
            warnings.simplefilter("ignore")
            xy_train, x_test = glm.make_dmatrix_for_model(train, test, formula=info["formula"])
            xy_train = xy_train[xy_train["preference"].notna()]
            model = glm.fit_LogisticRegressionCV(
                xy_train, "preference", is_ytrue_proba=True, **info["kwargs"]
            )
            predicted = model.predict_proba(x_test)[:, 1]
    except Exception as e:  # a degenerate file: report it rather than crash the other metrics
        return None, f"GLM fit failed: {e}"
    value = _finite(predicted.mean() * 100)
    return (value, None) if value is not None else (None, "GLM fit gave a non-finite win rate")


def compute_metrics(
    annotations: pd.DataFrame | Sequence[Mapping[str, Any]], *, length_controlled: bool = True
) -> dict[str, Any]:
    """The AlpacaEval leaderboard metrics of validated annotations (see the module docstring for definitions).

    Keys: generator, baseline, annotator, n_annotations, n_unparsed, win_rate, standard_error, n_wins,
    n_wins_base, n_draws, n_total, discrete_win_rate, avg_length, length_controlled_winrate, lc_variant (and
    lc_unavailable with the reason when the LC win rate could not be fitted). Rates are on the 0-100 scale; a
    metric that is undefined (e.g. no parsed preference) is None. `length_controlled=False` skips the GLM fit.
    """
    df = (
        annotations.copy()
        if isinstance(annotations, pd.DataFrame)
        else pd.DataFrame.from_records(annotations)
    )
    df["preference"] = df["preference"].astype(float)
    head2head = _alpaca_eval_metrics().get_winrate(df)  # counts and the discrete rate, by alpaca_eval itself
    parsed = [p - 1 for p in df["preference"].tolist() if not math.isnan(p)]
    mean, sem = _mean_and_sem(parsed)

    def single(col: str) -> str | None:
        values = df[col].dropna().unique().tolist() if col in df else []
        return str(values[0]) if len(values) == 1 else None

    out: dict[str, Any] = {
        "generator": single("generator_2"),
        "baseline": single("generator_1"),
        "annotator": single("annotator"),
        "n_annotations": len(df),
        "n_unparsed": len(df) - len(parsed),
        "win_rate": None if mean is None else mean * 100,
        "standard_error": None if sem is None else sem * 100,
        "n_wins": int(head2head["n_wins"]),
        "n_wins_base": int(head2head["n_wins_base"]),
        "n_draws": int(head2head["n_draws"]),
        "n_total": int(head2head["n_total"]),
        "discrete_win_rate": _finite(head2head["discrete_win_rate"]),
        "avg_length": int(df["output_2"].str.len().mean()),
    }
    if length_controlled:
        lc, reason = length_controlled_minimal(df)
        out["length_controlled_winrate"] = lc
        out["lc_variant"] = LC_VARIANT
        if reason is not None:
            out["lc_unavailable"] = reason
    return out
