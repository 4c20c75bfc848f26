"""SME labeling functions: declared in recipes, compiled to vectorised polars expressions.

Each labeling function (LF) votes HIGH (1), LOW (0) or ABSTAIN (-1) on every (prompt, response) row. LFs are
noisy, partial heuristics of what SMEs want; the label model (`prefscale.label_model`) denoises their votes.

`apply_lfs` is the production path (one vectorised polars pass). Every LF also has `row_vote(row)`, an exact
per-row Python equivalent (Python's `re`, no polars per row), and `snorkel_lfs` wraps those as Snorkel
`LabelingFunction`s, so the same recipe runs under Snorkel's appliers and the two paths can be checked
against each other (`prefscale bench lf`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:  # pragma: no cover
    from snorkel.labeling import LabelingFunction as SnorkelLF

ABSTAIN, LOW, HIGH = -1, 0, 1
VOTE_DTYPE = pl.Int8
_VOTES = (ABSTAIN, LOW, HIGH)


_WORDS = r"[A-Za-z']+"
_LIST_ITEM = r"(?m)^\s*(\d+[.)]|[-*•])\s+\w"
_INLINE_FLAGS = re.compile(r"^\(\?[a-zA-Z-]+\)")  # a pattern that sets its own flags keeps them


def _check_regex(v: str) -> str:
    try:
        pl.select(pl.lit("x").str.contains(v))
    except Exception as e:  # polars raises ComputeError for bad patterns
        raise ValueError(f"invalid regex {v!r}: {e}") from e
    return v


def _text(row: Mapping[str, Any], column: str) -> str | None:
    """A text cell of a row, or None for a null (None, NaN or pandas' NA: anything that is not a str)."""
    value = row[column]
    return value if isinstance(value, str) else None


DEFAULT_TASK_TYPE = "general"


class TaskTypeRule(BaseModel):
    """A prompt rule that assigns a task type: the first rule whose regex matches the prompt wins."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    pattern: str

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"invalid regex {v!r}: {e}") from e
        return v


def task_type_of(prompts: Sequence[str], rules: Sequence[TaskTypeRule]) -> list[str]:
    """Each prompt's task type: the first rule whose pattern matches (case-insensitive), else `general`."""
    compiled = [(r.name, re.compile(r.pattern, re.IGNORECASE)) for r in rules]
    return [next((name for name, rx in compiled if rx.search(p)), DEFAULT_TASK_TYPE) for p in prompts]


def tag_task_types(prompts: pl.DataFrame, rules: Sequence[TaskTypeRule]) -> pl.DataFrame:
    """`prompts` with `task_type` set by `rules` where it is missing (null, empty or `general`).

    A task type the data already carries is kept; with no rules the frame is returned unchanged.
    """
    if not rules or prompts.height == 0:
        return prompts
    tagged = pl.Series("_tagged", task_type_of(prompts["prompt"].to_list(), rules), dtype=pl.String)
    current = pl.col("task_type").cast(pl.String) if "task_type" in prompts.columns else pl.lit(None)
    missing = current.is_null() | current.is_in(["", DEFAULT_TASK_TYPE])
    return (
        prompts.with_columns(tagged)
        .with_columns(pl.when(missing).then(pl.col("_tagged")).otherwise(current).alias("task_type"))
        .drop("_tagged")
    )


class LabelingFunctionError(ValueError):
    """A labeling function that failed (raised, or voted outside HIGH/LOW/ABSTAIN), with the first bad row."""

    def __init__(self, message: str, lf_name: str, row: int | None = None, candidate_id: Any = None) -> None:
        super().__init__(message)
        self.lf_name, self.row, self.candidate_id = lf_name, row, candidate_id


class _LFCommon(BaseModel):
    """What every labeling function has: a name, a description (shown in the UI), an optional task-type scope,
    and a version that is the hash of its definition."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="unique identifier, snake_case")
    description: str = ""
    task_types: tuple[str, ...] | None = Field(default=None, description="only vote on these task types")

    @property
    def version(self) -> str:
        """Hash of the definition: changes whenever the function's behaviour can."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def vote_label(self) -> str:
        """The votes this function can cast, for the catalog: `high`, `low` or `high|low`."""
        return "high|low"

    def in_scope(self, row: Mapping[str, Any]) -> bool:
        if not self.task_types:
            return True
        task = row["task_type"]
        return isinstance(task, str) and task in self.task_types


class _LFBase(_LFCommon):
    vote: Literal["high", "low"] = Field(description="the vote cast when the pattern fires")

    @property
    def vote_label(self) -> str:
        return self.vote

    def row_vote(self, row: Mapping[str, Any]) -> int:
        """This LF's vote on one row (a mapping or a pandas Series), exactly as `lf_expression` votes on it."""
        if not self.in_scope(row):
            return ABSTAIN
        if not self._row_fires(row):
            return ABSTAIN
        return HIGH if self.vote == "high" else LOW

    def _row_fires(self, row: Mapping[str, Any]) -> bool:  # pragma: no cover - every kind overrides it
        raise NotImplementedError


class RegexLF(_LFBase):
    """Fires when `pattern` matches at least `min_count` times (case-insensitive unless the pattern says)."""

    kind: Literal["regex"] = "regex"
    pattern: str
    min_count: int = Field(default=1, ge=1)
    field: Literal["response", "prompt"] = "response"

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        return _check_regex(v)

    @property
    def rust_pattern(self) -> str:
        """The pattern as polars runs it: `(?i)` is prepended unless the pattern opens with its own flags."""
        return self.pattern if _INLINE_FLAGS.match(self.pattern) else f"(?i){self.pattern}"

    def _row_fires(self, row: Mapping[str, Any]) -> bool:
        text = _text(row, self.field)
        if text is None:
            return False
        rx = python_regex(self.rust_pattern, text)
        return rx.search(text) is not None if self.min_count == 1 else _rust_count(rx, text) >= self.min_count


class ListFormatLF(_LFBase):
    """Fires when at least `min_items` lines start like list items (`1.`, `-`, `*`)."""

    kind: Literal["list_format"] = "list_format"
    min_items: int = Field(default=2, ge=1)

    @property
    def rust_pattern(self) -> str:
        return _LIST_ITEM

    def _row_fires(self, row: Mapping[str, Any]) -> bool:
        text = _text(row, "response")
        return text is not None and _rust_count(python_regex(_LIST_ITEM, text), text) >= self.min_items


class OrderedLF(_LFBase):
    """Fires when the patterns all occur, in this order (e.g. acknowledge → steps → follow-up)."""

    kind: Literal["ordered"] = "ordered"
    patterns: tuple[str, ...] = Field(min_length=2)

    @field_validator("patterns")
    @classmethod
    def _compile(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_regex(p) for p in v)

    @property
    def rust_pattern(self) -> str:
        """One pattern: the parts in order, anything (newlines included) between, case-insensitive."""
        return "(?is)" + ".*?".join(f"(?:{p})" for p in self.patterns)

    def _row_fires(self, row: Mapping[str, Any]) -> bool:
        text = _text(row, "response")
        return text is not None and python_regex(self.rust_pattern, text).search(text) is not None


class WordRatioLF(_LFBase):
    """Fires when words from `words` make up at least `min_ratio` of the response's words."""

    kind: Literal["word_ratio"] = "word_ratio"
    words: tuple[str, ...] = Field(min_length=1)
    min_ratio: float = Field(gt=0, le=1)

    @property
    def rust_pattern(self) -> str:
        """The hits pattern: any of `words`, whole words, case-insensitive (the total uses `_WORDS`)."""
        alt = "|".join(re.escape(w) for w in self.words)
        return rf"(?i)\b(?:{alt})\b"

    def _row_fires(self, row: Mapping[str, Any]) -> bool:
        text = _text(row, "response")
        if text is None:
            return False
        total = _rust_count(python_regex(_WORDS, text), text)
        if total == 0:
            return False
        # polars divides the UInt32 hits by the Float64 total: both exact in a double, one IEEE division,
        # which is what Python's int / int (correctly rounded) gives too.
        return _rust_count(python_regex(self.rust_pattern, text), text) / total >= self.min_ratio


class LengthLF(_LFBase):
    """Fires when the response's word count lies outside [min_words, max_words]."""

    kind: Literal["length"] = "length"
    min_words: int | None = Field(default=None, ge=0)
    max_words: int | None = Field(default=None, ge=1)

    def _row_fires(self, row: Mapping[str, Any]) -> bool:
        text = _text(row, "response")
        if text is None:
            return False
        n = _rust_count(python_regex(_WORDS, text), text)
        return (self.min_words is not None and n < self.min_words) or (
            self.max_words is not None and n > self.max_words
        )


class FinishLF(_LFBase):
    """A metric LF on generation metadata: fires when the sample was cut at the token limit."""

    kind: Literal["unfinished"] = "unfinished"

    def _row_fires(self, row: Mapping[str, Any]) -> bool:
        return _text(row, "finish_reason") == "length"


def _valid_vote(value: Any) -> bool:
    """HIGH, LOW or ABSTAIN as an int (numpy ints too; not a bool, a float or a string)."""
    return (
        isinstance(value, int | np.integer)
        and not isinstance(value, bool | np.bool_)
        and int(value) in _VOTES
    )


class PythonLF(_LFCommon):
    """A Python function `module:function` called on each row (a mapping of column → value); it returns HIGH (1),
    LOW (0) or ABSTAIN (-1). Applied row-wise; its version also hashes the function's source code."""

    kind: Literal["python"] = "python"
    callable: str = Field(
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$", description="`package.module:function`, importable"
    )

    def resolve(self) -> Any:
        """The function itself (imported on first use)."""
        return _import_callable(self.callable)

    @property
    def version(self) -> str:
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        try:
            source = inspect.getsource(self.resolve())
        except Exception:  # not importable (yet) or no source: the definition alone
            source = ""
        return hashlib.sha256((blob + "\0" + source).encode()).hexdigest()[:12]

    def row_vote(self, row: Mapping[str, Any]) -> int:
        if not self.in_scope(row):
            return ABSTAIN
        value = self.resolve()(row)
        if not _valid_vote(value):
            raise LabelingFunctionError(
                f"labeling function {self.name!r} returned {value!r}; expected 1 (high), 0 (low) or -1 (abstain)",
                self.name,
            )
        return int(value)


@functools.cache
def _import_callable(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{spec} is not callable")
    return obj


LabelingFunction = Annotated[
    RegexLF | ListFormatLF | OrderedLF | WordRatioLF | LengthLF | FinishLF | PythonLF,
    Field(discriminator="kind"),
]


def _fires(lf: Any, words: pl.Expr) -> pl.Expr:
    resp = pl.col("response")
    if isinstance(lf, RegexLF):
        src = pl.col(lf.field)
        if lf.min_count == 1:  # one match is enough: stop at the first instead of counting them all
            return src.str.contains(lf.rust_pattern)
        return src.str.count_matches(lf.rust_pattern) >= lf.min_count
    if isinstance(lf, ListFormatLF):
        return resp.str.count_matches(_LIST_ITEM) >= lf.min_items
    if isinstance(lf, OrderedLF):
        return resp.str.contains(lf.rust_pattern)
    if isinstance(lf, WordRatioLF):
        hits = resp.str.count_matches(lf.rust_pattern)
        return (words > 0) & (hits / words.cast(pl.Float64).clip(lower_bound=1) >= lf.min_ratio)
    if isinstance(lf, LengthLF):
        cond = pl.lit(False)
        if lf.min_words is not None:
            cond = cond | (words < lf.min_words)
        if lf.max_words is not None:
            cond = cond | (words > lf.max_words)
        return cond
    if isinstance(lf, FinishLF):
        return pl.col("finish_reason") == "length"
    raise TypeError(f"unsupported labeling function {lf!r}")  # pragma: no cover


_WORD_COUNT = "__prefscale_word_count"  # apply_lfs' shared word-count column (not in its output)


def lf_expression(lf: Any, words: pl.Expr | None = None) -> pl.Expr:
    """The LF as a polars expression yielding its vote (HIGH/LOW/ABSTAIN) per row.

    `words` is the response's word count; `apply_lfs` computes it once for all LFs and passes the column.
    """
    if words is None:
        words = pl.col("response").str.count_matches(_WORDS)
    vote = HIGH if lf.vote == "high" else LOW
    fires = _fires(lf, words).fill_null(False)
    if lf.task_types:
        fires = fires & pl.col("task_type").is_in(list(lf.task_types))
    return pl.when(fires).then(pl.lit(vote, VOTE_DTYPE)).otherwise(pl.lit(ABSTAIN, VOTE_DTYPE)).alias(lf.name)


def validate_lfs(lfs: Sequence[Any]) -> None:
    """Reject an empty set or duplicate names."""
    if not lfs:
        raise ValueError("at least one labeling function is required")
    names = [lf.name for lf in lfs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate labeling function names: {dupes}")


def apply_lfs(rows: pl.DataFrame, lfs: Sequence[Any]) -> pl.DataFrame:
    """Label matrix: one Int8 column per LF (named after it), in `lfs` order, plus `candidate_id`.

    Text-pattern LFs run as one vectorised polars query; `python` LFs are called row by row. Model-backed kinds
    (`prefscale.lf_models`) need a model context: use `prefscale.lf_models.apply_all_lfs`.
    """
    validate_lfs(lfs)
    needs_model = [lf for lf in lfs if not isinstance(lf, _LFBase | PythonLF)]
    if needs_model:
        lf = needs_model[0]
        raise TypeError(
            f"labeling function {lf.name!r} (kind {lf.kind}) needs a model context: "
            "use prefscale.lf_models.apply_all_lfs(rows, lfs, context)"
        )
    pattern_lfs = [lf for lf in lfs if isinstance(lf, _LFBase)]
    needed = {"candidate_id", "response", "task_type"} if pattern_lfs else {"candidate_id"}
    if any(isinstance(lf, FinishLF) for lf in lfs):
        needed.add("finish_reason")
    if any(isinstance(lf, RegexLF) and lf.field == "prompt" for lf in lfs):
        needed.add("prompt")
    if any(isinstance(lf, PythonLF) and lf.task_types for lf in lfs):
        needed.add("task_type")
    missing = needed - set(rows.columns)
    if missing:
        raise ValueError(f"labeling input lacks columns {sorted(missing)}")
    # One lazy query: polars runs the LFs in parallel, and the word count that length and word-ratio LFs
    # share is computed once per row.
    query = rows.lazy()
    words = None
    if any(isinstance(lf, (LengthLF, WordRatioLF)) for lf in lfs):
        query = query.with_columns(pl.col("response").str.count_matches(_WORDS).alias(_WORD_COUNT))
        words = pl.col(_WORD_COUNT)
    votes = query.select(pl.col("candidate_id"), *[lf_expression(lf, words) for lf in pattern_lfs]).collect()
    names = [lf.name for lf in pattern_lfs]
    if names and not votes.select(pl.all_horizontal(pl.col(n).is_in(_VOTES) for n in names).all()).item():
        for lf in pattern_lfs:  # one scan for the common case; this loop only names the culprit
            bad = votes.filter(~pl.col(lf.name).is_in(_VOTES))
            if bad.height:
                raise ValueError(
                    f"labeling function {lf.name!r} returned {bad[lf.name][0]} "
                    f"for candidate {bad['candidate_id'][0]}"
                )
    python_lfs = [lf for lf in lfs if isinstance(lf, PythonLF)]
    if python_lfs:
        votes = votes.with_columns(
            pl.Series(lf.name, python_votes(rows, lf), dtype=VOTE_DTYPE) for lf in python_lfs
        )
    return votes.select("candidate_id", *[lf.name for lf in lfs])


def python_votes(rows: pl.DataFrame, lf: PythonLF) -> np.ndarray:
    """A `python` LF's votes, one call per row; the first row it raises on or votes outside HIGH/LOW/ABSTAIN
    fails the whole application with the function's name, that row's index (0-based) and its candidate id."""
    try:
        fn = lf.resolve()
    except Exception as e:
        raise LabelingFunctionError(
            f"labeling function {lf.name!r}: cannot import {lf.callable} ({type(e).__name__}: {e})", lf.name
        ) from e
    out = np.full(rows.height, ABSTAIN, dtype=np.int8)
    for i, row in enumerate(rows.iter_rows(named=True)):
        if not lf.in_scope(row):
            continue
        cid = row.get("candidate_id")
        try:
            value = fn(row)
        except Exception as e:
            raise LabelingFunctionError(
                f"labeling function {lf.name!r} raised {type(e).__name__}: {e} for candidate {cid} (row {i})",
                lf.name,
                i,
                cid,
            ) from e
        if not _valid_vote(value):
            raise LabelingFunctionError(
                f"labeling function {lf.name!r} returned {value!r} for candidate {cid} (row {i}); "
                "expected 1 (high), 0 (low) or -1 (abstain)",
                lf.name,
                i,
                cid,
            )
        out[i] = int(value)
    return out


def snorkel_lfs(lfs: Sequence[Any]) -> list[SnorkelLF]:
    """Each LF's `row_vote` as a Snorkel `LabelingFunction` (same name, same order), for Snorkel's appliers."""
    from snorkel.labeling import LabelingFunction as SnorkelLF  # heavy import, kept local

    validate_lfs(lfs)
    return [SnorkelLF(name=lf.name, f=lf.row_vote) for lf in lfs]


def lf_catalog(lfs: Sequence[Any]) -> pl.DataFrame:
    """Name, kind, version, vote and description of each LF (for lineage and the UI)."""
    return pl.DataFrame(
        {
            "lf_name": [lf.name for lf in lfs],
            "kind": [lf.kind for lf in lfs],
            "version": [lf.version for lf in lfs],
            "vote": [lf.vote_label for lf in lfs],
            "description": [lf.description for lf in lfs],
        }
    )


def lf_summary(votes: pl.DataFrame, lf_names: Sequence[str]) -> pl.DataFrame:
    """Coverage, overlap and conflict per LF (Snorkel's LFAnalysis definitions), vectorised."""
    n = max(votes.height, 1)
    mat = votes.select(lf_names).to_numpy()
    active = mat != ABSTAIN
    n_active = active.sum(axis=1)
    has_high = (mat == HIGH).any(axis=1)
    has_low = (mat == LOW).any(axis=1)
    rows = []
    for j, name in enumerate(lf_names):
        col = active[:, j]
        conflict = col & has_high & has_low  # binary labels: j disagrees with someone on these rows
        rows.append(
            {
                "lf_name": name,
                "polarity": sorted({int(v) for v in mat[col, j]}),
                "coverage": float(col.sum() / n),
                "overlaps": float((col & (n_active > 1)).sum() / n),
                "conflicts": float(conflict.sum() / n),
            }
        )
    return pl.DataFrame(rows)


def lf_analysis(
    votes: pl.DataFrame,
    lfs: Sequence[Any],
    gold: pl.DataFrame | None = None,
    estimated_accuracy: Mapping[str, float] | None = None,
) -> pl.DataFrame:
    """Per-LF analysis: `lf_summary` (polarity, coverage, overlaps, conflicts) plus the LF's version and kind,
    the label model's estimated accuracy when given, and its empirical accuracy against SME gold.

    `gold` has `candidate_id` and `label` (HIGH/LOW) for the rows SMEs judged; an LF's empirical accuracy is its
    correct votes over its non-abstain votes on those rows (Snorkel's `lf_empirical_accuracies` restricted to
    gold rows), null when it voted on none of them (Snorkel would report 0).
    """
    names = [lf.name for lf in lfs]
    summary = lf_summary(votes, names)
    n_gold = correct = incorrect = [0] * len(names)
    if gold is not None and gold.height:
        joined = votes.select("candidate_id", *names).join(
            gold.select("candidate_id", pl.col("label").cast(pl.Int8).alias("__gold")), on="candidate_id"
        )
        mat = joined.select(names).to_numpy()
        y = joined["__gold"].to_numpy()[:, None]
        active = mat != ABSTAIN
        correct = (active & (mat == y)).sum(axis=0).tolist()
        incorrect = (active & (mat != y)).sum(axis=0).tolist()
        n_gold = [joined.height] * len(names)
    est = estimated_accuracy or {}
    return summary.select(
        pl.col("lf_name"),
        pl.Series("lf_version", [lf.version for lf in lfs], dtype=pl.String),
        pl.Series("kind", [lf.kind for lf in lfs], dtype=pl.String),
        pl.col("polarity").list.eval(pl.element().cast(pl.String)).list.join(",").alias("polarity"),
        "coverage",
        "overlaps",
        "conflicts",
        pl.Series("estimated_accuracy", [est.get(n) for n in names], dtype=pl.Float64),
        pl.Series("n_gold", n_gold, dtype=pl.Int64),
        pl.Series("gold_correct", correct, dtype=pl.Int64),
        pl.Series("gold_incorrect", incorrect, dtype=pl.Int64),
    ).with_columns(
        pl.when(pl.col("gold_correct") + pl.col("gold_incorrect") > 0)
        .then(pl.col("gold_correct") / (pl.col("gold_correct") + pl.col("gold_incorrect")))
        .otherwise(None)
        .alias("empirical_accuracy")
    )


# --- polars' regex dialect in Python's `re` -----------------------------------------------------------------
#
# polars runs patterns with Rust's `regex` crate. Handing the same pattern to Python's `re` would not give
# the same votes:
# * Unicode `\w`, `\d`, `\s` (and so `\b`) cover different code points: Rust's `\w` includes combining marks
#   and connector punctuation, Python's includes numerals such as '²' and '½';
# * `(?i)` is Unicode simple case folding in Rust; Python also folds 'i' with 'ı' and 'İ';
# * without `(?m)`, Rust's `$` matches only at the very end, Python's also before a final newline;
# * Rust switches flags anywhere (`a(?i)b`) and nests repetitions (`a**`); Python rejects both;
# * `count_matches` drops an empty match that touches the previous match; `re.finditer` reports it.
# So `python_regex` translates the Rust pattern into a flag-free Python pattern of the same meaning: every
# flag is resolved while parsing, and every character class (`[...]`, `\w`, `\p{..}`, `.`, a literal under
# `(?i)`) is written out as the exact set of code points that polars' own engine matches, found once per
# class by asking polars about every code point. `_rust_count` counts matches the way the Rust iterator does.


@functools.cache
def _all_chars() -> pl.Series:
    """One string holding every Unicode scalar value (surrogates excluded), in order."""
    cps = np.concatenate([np.arange(0xD800), np.arange(0xE000, 0x110000)]).astype("<u4")
    return pl.Series([cps.tobytes().decode("utf-32-le")])


_ASCII = np.arange(0x80)
_ASCII_CHARS = pl.Series([chr(c) for c in range(0x80)])


@functools.cache
def _case_sensitive() -> pl.Series:
    """The characters that some other character folds to or from (Rust's own Unicode tables)."""
    cps = _rust_class(r"[\p{Changes_When_Casemapped}\p{Changes_When_Casefolded}]", "", ascii_only=False)
    return pl.Series([chr(c) for c in cps.tolist()])


def _hex(c: int) -> str:
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}" if c < 0x10000 else f"\\U{c:08x}"


def _py_class(cps: np.ndarray) -> str:
    """A Python atom matching exactly the code points `cps` (sorted, unique), one character wide."""
    if len(cps) == 0:
        return "(?:(?!))"
    if len(cps) == 1:
        return re.escape(chr(int(cps[0])))
    bmp, astral = cps[cps <= 0xFFFF], cps[cps > 0xFFFF]
    if len(bmp) and len(astral):
        # `re` tests a class with only BMP members against one bitmap, but walks a class that also holds
        # astral ranges range by range (Unicode `\w` has hundreds). The astral part is tried only for an
        # astral character.
        return f"(?:{_py_ranges(bmp)}|(?![\\x00-\\uffff]){_py_ranges(astral)})"
    return _py_ranges(cps)


def _py_ranges(cps: np.ndarray) -> str:
    breaks = np.flatnonzero(np.diff(cps) != 1)
    starts, ends = np.r_[0, breaks + 1], np.r_[breaks, len(cps) - 1]
    spans = ((int(cps[a]), int(cps[b])) for a, b in zip(starts.tolist(), ends.tolist(), strict=True))
    return "[" + "".join(_hex(lo) if lo == hi else f"{_hex(lo)}-{_hex(hi)}" for lo, hi in spans) + "]"


@functools.cache
def _rust_class(atom: str, flags: str, ascii_only: bool) -> np.ndarray:
    """The code points the Rust one-character `atom` (a class or an escape) matches under inline `flags`:
    all of them, or (`ascii_only`) the ASCII ones."""
    if ascii_only:
        return _ASCII[_ASCII_CHARS.str.contains(f"{flags}^(?:{atom})$").to_numpy()]
    # One pass of polars' engine over a string of every character: what it deletes is the class.
    left = _all_chars().str.replace_all(f"{flags}(?:{atom})", "").item()
    member = np.ones(0x110000, dtype=bool)
    member[0xD800:0xE000] = False
    member[np.frombuffer(left.encode("utf-32-le"), dtype="<u4")] = False
    return np.flatnonzero(member)


@functools.cache
def _rust_literal(c: str, flags: str, ascii_only: bool) -> np.ndarray:
    """The code points the literal character `c` matches under inline `flags` (which hold `i`)."""
    if ascii_only or "-u" in flags:  # a small universe, or ASCII-only folding: ask polars directly
        return _rust_class(f"\\x{{{ord(c):x}}}", flags, ascii_only)
    cased = _case_sensitive()
    if not cased.str.contains(f"^\\x{{{ord(c):x}}}$").any():
        return np.array([ord(c)])
    mates = cased.filter(cased.str.contains(f"(?i)^\\x{{{ord(c):x}}}$"))
    return np.array(sorted({ord(m) for m in mates} | {ord(c)}))


@dataclass(frozen=True)
class _Flags:
    i: bool = False
    m: bool = False
    s: bool = False
    U: bool = False
    u: bool = True
    x: bool = False
    R: bool = False

    def updated(self, spec: str) -> _Flags:
        on, changes = True, {}
        for ch in spec:
            if ch == "-":
                on = False
            elif ch in "imsUuxR":
                changes[ch] = on
            else:
                raise ValueError(f"unsupported regex flag {ch!r}")
        return replace(self, **changes)

    @property
    def class_flags(self) -> str:
        """The inline flags that change what a character class matches."""
        on = "".join(f for f in "ix" if getattr(self, f))
        return f"(?{on}{'' if self.u else '-u'})" if on or not self.u else ""


def _word_assertion(kind: str, word: str) -> str:
    w = word
    if w == "ascii" and kind == "b":
        # Compiled with re.ASCII, `re`'s own `\b` is Rust's on ASCII text (and faster). Not `\B`: before
        # Python 3.14 it never matches the empty string.
        return "(?:\\b)"
    if w == "ascii":
        w = "[0-9A-Za-z_]"
    return {
        "b": f"(?:(?<={w})(?!{w})|(?<!{w})(?={w}))",
        "B": f"(?:(?<={w})(?={w})|(?<!{w})(?!{w}))",
        "start": f"(?:(?<!{w})(?={w}))",
        "end": f"(?:(?<={w})(?!{w}))",
        "start-half": f"(?:(?<!{w}))",
        "end-half": f"(?:(?!{w}))",
    }[kind]


_ESCAPED_CHARS = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "a": "\a"}
_HEX_ESCAPE = re.compile(r"\{([0-9A-Fa-f]{1,8})\}")
_POSIX_CLASS = re.compile(r"\[:\^?[a-z]+:\]")
_REPEAT = re.compile(r"\{\s*(\d+)\s*(?:(,)\s*(\d*)\s*)?\}")
_SPECIAL_WORD_BOUNDARY = re.compile(r"\{(start|end|start-half|end-half)\}")


class _Translator:
    """Recursive-descent translation of one Rust regex into a flag-free Python `re` pattern."""

    def __init__(self, pattern: str, ascii_text: bool) -> None:
        self.p, self.i, self.ascii_text = pattern, 0, ascii_text

    def _chars(self, cps: np.ndarray) -> str:
        """The atom for a set of code points; for an ASCII-only text, only the ASCII ones can occur."""
        return _py_class(cps[cps < 0x80] if self.ascii_text else cps)

    def run(self) -> str:
        out = self._alternation(_Flags())
        if self.i != len(self.p):
            raise self._error("unbalanced ')'")
        return out

    def _error(self, what: str) -> ValueError:
        return ValueError(f"cannot translate regex {self.p!r} at offset {self.i}: {what}")

    def _skip_ignored(self, flags: _Flags) -> None:
        """In `(?x)` mode, skip whitespace (Unicode White_Space, as Rust) and `#` comments."""
        while flags.x and self.i < len(self.p):
            c = self.p[self.i]
            if c == "#":
                end = self.p.find("\n", self.i)
                self.i = len(self.p) if end < 0 else end + 1
            elif c.isspace() and c not in "\x1c\x1d\x1e\x1f":
                self.i += 1
            else:
                return

    def _alternation(self, flags: _Flags) -> str:
        branches: list[str] = []
        items: list[tuple[str, bool]] = []  # (Python atom, already repeated)
        while True:
            self._skip_ignored(flags)
            if self.i >= len(self.p) or self.p[self.i] == ")":
                break
            c = self.p[self.i]
            if c == "|":
                branches.append("".join(t for t, _ in items))
                items = []
                self.i += 1
            elif c == "(":
                group = self._group(flags)
                if isinstance(group, _Flags):  # `(?flags)`: the rest of this group, later branches included
                    flags = group
                else:
                    items.append((group, False))
            elif c in "*+?{":
                if not items:
                    raise self._error("repetition operator missing expression")
                rep = self._repetition(flags)
                atom, repeated = items[-1]
                items[-1] = ((f"(?:{atom})" if repeated else atom) + rep, True)  # Rust nests `a**`
            else:
                items.append((self._atom(flags), False))
        branches.append("".join(t for t, _ in items))
        return "|".join(branches)

    def _group(self, flags: _Flags) -> str | _Flags:
        p = self.p
        self.i += 1
        inner = flags
        if p.startswith("?", self.i):
            self.i += 1
            if p.startswith(("P<", "<"), self.i):  # named capture: captures do not change what matches
                self.i = p.index(">", self.i) + 1
            else:
                m = re.compile(r"[A-Za-z-]*").match(p, self.i)
                assert m is not None
                self.i = m.end()
                inner = flags.updated(m.group())
                if p.startswith(")", self.i):
                    self.i += 1
                    return inner
                if not p.startswith(":", self.i):
                    raise self._error("unsupported group")
                self.i += 1
        body = self._alternation(inner)
        if not p.startswith(")", self.i):
            raise self._error("unclosed group")
        self.i += 1
        return f"(?:{body})"

    def _repetition(self, flags: _Flags) -> str:
        p = self.p
        if p[self.i] == "{":
            m = _REPEAT.match(p, self.i)
            if m is None:
                raise self._error("bad counted repetition")
            lo, comma, hi = m.groups()
            rep = f"{{{int(lo)}{',' if comma else ''}{int(hi) if hi else ''}}}"
            self.i = m.end()
        else:
            rep = p[self.i]
            self.i += 1
        lazy = p.startswith("?", self.i)
        if lazy:
            self.i += 1
        return rep + ("?" if lazy != flags.U else "")  # `(?U)` swaps greedy and lazy

    def _atom(self, flags: _Flags) -> str:
        c = self.p[self.i]
        if c == "[":
            return self._chars(_rust_class(self._class_text(), flags.class_flags, self.ascii_text))
        if c == "\\":
            return self._escape(flags)
        self.i += 1
        if c == ".":
            return "(?s:.)" if flags.s else "[^\\n\\r]" if flags.R else "[^\\n]"
        if c == "^":
            if not flags.m:
                return "(?:\\A)"
            return "(?:\\A|(?<=\\n)|(?<=\\r)(?!\\n))" if flags.R else "(?:\\A|(?<=\\n))"
        if c == "$":
            if not flags.m:
                return "(?:\\Z)"  # Rust's `$` never matches before a final newline
            return "(?:\\Z|(?=\\r)|(?<!\\r)(?=\\n))" if flags.R else "(?:\\Z|(?=\\n))"
        return self._literal(c, flags)

    def _literal(self, c: str, flags: _Flags) -> str:
        return self._chars(_rust_literal(c, flags.class_flags, self.ascii_text)) if flags.i else re.escape(c)

    def _word(self, flags: _Flags) -> str:
        # Rust's Unicode `\w` and its ASCII `\w` agree on ASCII characters.
        return (
            "ascii" if self.ascii_text else self._chars(_rust_class("\\w", "" if flags.u else "(?-u)", False))
        )

    def _escape(self, flags: _Flags) -> str:
        p, start = self.p, self.i
        if start + 1 >= len(p):
            raise self._error("trailing backslash")
        c = p[start + 1]
        self.i = start + 2
        if c in "dDsSwW":
            return self._chars(_rust_class(p[start : self.i], flags.class_flags, self.ascii_text))
        if c in "pP":
            self.i = p.index("}", self.i) + 1 if p.startswith("{", self.i) else self.i + 1
            return self._chars(_rust_class(p[start : self.i], flags.class_flags, self.ascii_text))
        if c in "bB<>":
            kind = {"<": "start", ">": "end"}.get(c, c)
            if c == "b" and (m := _SPECIAL_WORD_BOUNDARY.match(p, self.i)):
                kind, self.i = m.group(1), m.end()
            return _word_assertion(kind, self._word(flags))
        if c == "A":
            return "(?:\\A)"
        if c == "z":
            return "(?:\\Z)"
        if c in _ESCAPED_CHARS:
            return self._literal(_ESCAPED_CHARS[c], flags)
        if c in "xuU":
            m = _HEX_ESCAPE.match(p, self.i)
            if m is None:
                width = {"x": 2, "u": 4, "U": 8}[c]
                m = re.compile(f"([0-9A-Fa-f]{{{width}}})").match(p, self.i)
            if m is None:
                raise self._error("bad hex escape")
            self.i = m.end()
            return self._literal(chr(int(m.group(1), 16)), flags)
        if c.isascii() and not c.isalnum():  # an escaped punctuation (or space) is the character itself
            return self._literal(c, flags)
        raise self._error(f"unsupported escape \\{c}")

    def _class_text(self) -> str:
        """The text of the bracket class at the cursor (nested classes and `[:posix:]` included)."""
        p, start = self.p, self.i

        def after_open(i: int) -> int:  # `^` and a leading `]` belong to the class
            i += 1 if p.startswith("^", i) else 0
            return i + 1 if p.startswith("]", i) else i

        i, depth = after_open(start + 1), 1
        while i < len(p):
            c = p[i]
            if c == "\\":
                i += 2
            elif c == "[" and (m := _POSIX_CLASS.match(p, i)):
                i = m.end()
            elif c == "[":
                i, depth = after_open(i + 1), depth + 1
            elif c == "]":
                i, depth = i + 1, depth - 1
                if depth == 0:
                    self.i = i
                    return p[start:i]
            else:
                i += 1
        raise self._error("unclosed class")


def python_regex(pattern: str, text: str | None = None) -> re.Pattern[str]:
    """Python's `re` compilation of the polars (Rust `regex`) `pattern`: it matches exactly what polars does.

    Given the `text` it will search, and if that text is ASCII, the translation is specialised to ASCII text
    (small classes, `re`'s own `\\b`): the same matches, several times faster.
    """
    return _python_regex(pattern, text is not None and text.isascii())


@functools.cache
def _python_regex(pattern: str, ascii_text: bool) -> re.Pattern[str]:
    return re.compile(_Translator(pattern, ascii_text).run(), re.ASCII if ascii_text else 0)


def _rust_count(rx: re.Pattern[str], text: str) -> int:
    """Non-overlapping matches of `rx` in `text`, counted as polars' `count_matches` counts them."""
    found = rx.findall(text)  # translated patterns have no capture groups: one str per match
    if "" not in found:
        return len(found)  # no empty match: Python's and Rust's iteration agree
    # Rust's iterator skips an empty match that ends where the previous match ended, then searches from
    # the next character; Python's reports it (and may then match non-empty text at the same spot).
    n, pos, last_end = 0, 0, -1
    while pos <= len(text):
        m = rx.search(text, pos)
        if m is None:
            break
        start, end = m.span()
        if start == end:
            pos = end + 1
            if end == last_end:
                continue
        else:
            pos = end
        n, last_end = n + 1, end
    return n
