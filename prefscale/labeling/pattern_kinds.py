"""SME labeling functions: declared in recipes, compiled to vectorised polars expressions.

Each labeling function (LF) votes HIGH (1), LOW (0) or ABSTAIN (-1) on every (prompt, response) row. LFs are
noisy, partial heuristics of what SMEs want; the label model (`prefscale.labeling.label_model`) denoises their votes.

`apply_lfs` is the production path (one vectorised polars pass). Every LF also has `row_vote(row)`, an exact
per-row Python equivalent (Python's `re`, no polars per row), and `snorkel_lfs` wraps those as Snorkel
`LabelingFunction`s, so the same recipe runs under Snorkel's appliers and the two paths can be checked
against each other (`prefscale bench lf`). The other way round, `kind: snorkel` (`SnorkelLF`) runs a team's
existing Snorkel `LabelingFunction` as Snorkel's `PandasLFApplier` would.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import polars as pl
from pydantic import Field, field_validator

from prefscale.labeling.regex_dialect import _rust_count, python_regex
from prefscale.labeling.votes import ABSTAIN, HIGH, LOW, LabelingFunctionError, _LFCommon, _valid_vote

if TYPE_CHECKING:  # pragma: no cover
    pass

_WORDS = r"[A-Za-z']+"
_LIST_ITEM = r"(?m)^\s*(\d+[.)]|[-*•])\s+\w"
_INLINE_FLAGS = re.compile(r"^\(\?[a-zA-Z-]+\)")  # a pattern that sets its own flags keeps them


def _regex_error(pattern: str, message: str) -> str:
    """polars' regex error in one line: what is wrong and where (without polars' dump of the expression)."""
    lines = message.split("This error occurred in the following expression")[0].splitlines()
    what = next((ln.split("error:", 1)[1].strip() for ln in lines if ln.startswith("error:")), None)
    caret = next((ln for ln in lines if ln.strip() and set(ln.strip()) <= {"^"}), None)
    where = f" at character {len(caret) - len(caret.lstrip()) - 3}" if caret is not None else ""
    if what is None:  # an unexpected shape: keep polars' words, on one line
        what = " ".join(" ".join(lines).split()) or "does not compile"
    return f"invalid regex {pattern!r}: {what}{where} (Rust regex syntax, as polars runs it)"


def _check_regex(v: str) -> str:
    try:
        pl.select(pl.lit("x").str.contains(v))
    except Exception as e:  # polars raises ComputeError for bad patterns
        raise ValueError(_regex_error(v, str(e))) from None
    return v


def _text(row: Mapping[str, Any], column: str) -> str | None:
    """A text cell of a row, or None for a null (None, NaN or pandas' NA: anything that is not a str)."""
    value = row[column]
    return value if isinstance(value, str) else None


class _LFBase(_LFCommon):
    vote: Literal["high", "low"] = Field(
        description="the vote cast when the pattern fires (high or low); it abstains otherwise"
    )

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

    uses_word_count: ClassVar[bool] = False  # reads the shared word count `apply_lfs` computes once

    def input_columns(self) -> set[str]:
        """The columns `fires` reads, besides `task_type` (scope)."""
        return {"response"}

    def fires(self, words: pl.Expr) -> pl.Expr:  # pragma: no cover - every kind overrides it
        """Whether the pattern fires on each row, as a polars expression (`words`: the response's word count)."""
        raise NotImplementedError

    def _row_fires(self, row: Mapping[str, Any]) -> bool:  # pragma: no cover - every kind overrides it
        raise NotImplementedError


class RegexLF(_LFBase):
    """Fires when `pattern` matches at least `min_count` times (case-insensitive unless the pattern says)."""

    kind: Literal["regex"] = Field(default="regex", description="regex: a pattern searched in the text")
    pattern: str = Field(
        description="a regex (Rust regex syntax, as polars runs it), case-insensitive unless it opens with "
        "its own inline flags such as (?-i)"
    )
    min_count: int = Field(
        default=1, ge=1, description="fire only when the pattern matches at least this often"
    )
    field: Literal["response", "prompt"] = Field(
        default="response", description="the column searched: the response or the prompt"
    )

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        return _check_regex(v)

    @property
    def rust_pattern(self) -> str:
        """The pattern as polars runs it: `(?i)` is prepended unless the pattern opens with its own flags."""
        return self.pattern if _INLINE_FLAGS.match(self.pattern) else f"(?i){self.pattern}"

    def input_columns(self) -> set[str]:
        return {self.field}

    def fires(self, words: pl.Expr) -> pl.Expr:
        src = pl.col(self.field)
        if self.min_count == 1:  # one match is enough: stop at the first instead of counting them all
            return src.str.contains(self.rust_pattern)
        return src.str.count_matches(self.rust_pattern) >= self.min_count

    def _row_fires(self, row: Mapping[str, Any]) -> bool:
        text = _text(row, self.field)
        if text is None:
            return False
        rx = python_regex(self.rust_pattern, text)
        return rx.search(text) is not None if self.min_count == 1 else _rust_count(rx, text) >= self.min_count


class ListFormatLF(_LFBase):
    """Fires when at least `min_items` lines start like list items (`1.`, `-`, `*`)."""

    kind: Literal["list_format"] = Field(
        default="list_format", description="list_format: the response is formatted as a list"
    )
    min_items: int = Field(
        default=2,
        ge=1,
        description="lines of the response that must start like list items (1. 1) - * •) for it to fire",
    )

    @property
    def rust_pattern(self) -> str:
        return _LIST_ITEM

    def fires(self, words: pl.Expr) -> pl.Expr:
        return pl.col("response").str.count_matches(_LIST_ITEM) >= self.min_items

    def _row_fires(self, row: Mapping[str, Any]) -> bool:
        text = _text(row, "response")
        return text is not None and _rust_count(python_regex(_LIST_ITEM, text), text) >= self.min_items


class OrderedLF(_LFBase):
    """Fires when the patterns all occur, in this order (e.g. acknowledge → steps → follow-up)."""

    kind: Literal["ordered"] = Field(
        default="ordered", description="ordered: several patterns occur in the response in a given order"
    )
    patterns: tuple[str, ...] = Field(
        min_length=2,
        description="two or more regexes that must all match the response in this order (anything, newlines "
        "included, between them; case-insensitive)",
    )

    @field_validator("patterns")
    @classmethod
    def _compile(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_regex(p) for p in v)

    @property
    def rust_pattern(self) -> str:
        """One pattern: the parts in order, anything (newlines included) between, case-insensitive."""
        return "(?is)" + ".*?".join(f"(?:{p})" for p in self.patterns)

    def fires(self, words: pl.Expr) -> pl.Expr:
        return pl.col("response").str.contains(self.rust_pattern)

    def _row_fires(self, row: Mapping[str, Any]) -> bool:
        text = _text(row, "response")
        return text is not None and python_regex(self.rust_pattern, text).search(text) is not None


class WordRatioLF(_LFBase):
    """Fires when words from `words` make up at least `min_ratio` of the response's words."""

    kind: Literal["word_ratio"] = Field(
        default="word_ratio", description="word_ratio: the share of the response's words from a word list"
    )
    words: tuple[str, ...] = Field(
        min_length=1, description="the words counted (whole words, case-insensitive, matched literally)"
    )
    min_ratio: float = Field(
        gt=0,
        le=1,
        description="fire when hits / all words of the response (words: runs of letters and ') is at least "
        "this, in (0, 1]",
    )

    @property
    def rust_pattern(self) -> str:
        """The hits pattern: any of `words`, whole words, case-insensitive (the total uses `_WORDS`)."""
        alt = "|".join(re.escape(w) for w in self.words)
        return rf"(?i)\b(?:{alt})\b"

    uses_word_count: ClassVar[bool] = True

    def fires(self, words: pl.Expr) -> pl.Expr:
        hits = pl.col("response").str.count_matches(self.rust_pattern)
        return (words > 0) & (hits / words.cast(pl.Float64).clip(lower_bound=1) >= self.min_ratio)

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

    kind: Literal["length"] = Field(
        default="length", description="length: the response's word count is out of range"
    )
    min_words: int | None = Field(
        default=None,
        ge=0,
        description="fire when the response has fewer words than this; null: no lower bound",
    )
    max_words: int | None = Field(
        default=None,
        ge=1,
        description="fire when the response has more words than this; null: no upper bound",
    )

    uses_word_count: ClassVar[bool] = True

    def fires(self, words: pl.Expr) -> pl.Expr:
        cond = pl.lit(False)
        if self.min_words is not None:
            cond = cond | (words < self.min_words)
        if self.max_words is not None:
            cond = cond | (words > self.max_words)
        return cond

    def _row_fires(self, row: Mapping[str, Any]) -> bool:
        text = _text(row, "response")
        if text is None:
            return False
        n = _rust_count(python_regex(_WORDS, text), text)
        return (self.min_words is not None and n < self.min_words) or (
            self.max_words is not None and n > self.max_words
        )


class RepetitionLF(_LFBase):
    """Fires when at least `min_repeated_share` of the response's lines (those of `min_line_chars` or more,
    compared stripped and case-folded) repeat an earlier line: a reply that loops or restates itself."""

    kind: Literal["repetition"] = Field(
        default="repetition", description="repetition: the response repeats its own lines"
    )
    min_line_chars: int = Field(
        default=20,
        ge=1,
        description="lines shorter than this (stripped) are not compared: blank lines, bullets, short labels",
    )
    min_repeated_share: float = Field(
        default=0.2,
        gt=0,
        le=1,
        description="fire when (lines - distinct lines) / lines, over the compared lines, is at least this",
    )

    def fires(self, words: pl.Expr) -> pl.Expr:
        lines = (
            pl.col("response")
            .str.split("\n")
            .list.eval(pl.element().str.strip_chars().str.to_lowercase())
            .list.eval(pl.element().filter(pl.element().str.len_chars() >= self.min_line_chars))
        )
        n = lines.list.len()
        return (n > 0) & (
            (n - lines.list.n_unique()) / n.cast(pl.Float64).clip(lower_bound=1) >= self.min_repeated_share
        )

    def _row_fires(self, row: Mapping[str, Any]) -> bool:
        text = _text(row, "response")
        if text is None:
            return False
        lines = [x.strip().lower() for x in text.split("\n")]
        lines = [x for x in lines if len(x) >= self.min_line_chars]
        return bool(lines) and (len(lines) - len(set(lines))) / len(lines) >= self.min_repeated_share


class FinishLF(_LFBase):
    """A metric LF on generation metadata: fires when the sample was cut at the token limit."""

    kind: Literal["unfinished"] = Field(
        default="unfinished",
        description="unfinished: the sample was cut at generation.max_new_tokens (finish_reason length)",
    )

    def input_columns(self) -> set[str]:
        return {"finish_reason"}

    def fires(self, words: pl.Expr) -> pl.Expr:
        return pl.col("finish_reason") == "length"

    def _row_fires(self, row: Mapping[str, Any]) -> bool:
        return _text(row, "finish_reason") == "length"


class PythonLF(_LFCommon):
    """A Python function `module:function` called on each row (a mapping of column → value); it returns HIGH (1),
    LOW (0) or ABSTAIN (-1). Applied row-wise; its version also hashes the function's source code."""

    kind: Literal["python"] = Field(
        default="python", description="python: a Python function votes on each row"
    )
    callable: str = Field(
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$",
        description="`package.module:function`, importable; called with each row (column -> value), it returns "
        "1 (high), 0 (low) or -1 (abstain)",
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


class SnorkelLF(_LFCommon):
    """A Snorkel `LabelingFunction` as it is (`@labeling_function()`, with its `resources` and `pre`
    preprocessors), named by `package.module:attribute` and applied as Snorkel's `PandasLFApplier` applies it:
    each row of the candidates frame (`to_pandas()`) is a pandas Series, so `x.response`, `x.prompt`,
    `x.task_type`, ... work, and the LF's preprocessors run first.

    Snorkel's labels are prefscale's votes: 1 high, 0 low, -1 abstain; anything else (another class, a bool, a
    float) fails with the function's name and the row. `name` is the label matrix column: the Snorkel LF's own
    `.name` is not used (reading it would import the module when the recipe is parsed). Rows out of
    `task_types` abstain without calling the LF. Its version also hashes the source of the LF's function and of
    its preprocessors, and its resources.
    """

    kind: Literal["snorkel"] = Field(
        default="snorkel",
        description="snorkel: a Snorkel LabelingFunction votes on each row, as PandasLFApplier applies it",
    )
    object: str = Field(
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$",
        description="`package.module:name` of a `snorkel.labeling.LabelingFunction` (e.g. made by "
        "`@labeling_function()`), importable; called with each row as a pandas Series (`x.response`, "
        "`x.prompt`, `x.task_type`, ... every candidate column), it returns 1 (high), 0 (low) or -1 (abstain)",
    )

    def resolve(self) -> Any:
        """The Snorkel `LabelingFunction` itself (imported on first use); TypeError when it is not one."""
        return _import_snorkel_lf(self.object)

    @property
    def version(self) -> str:
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        try:
            fingerprint = _snorkel_fingerprint(self.resolve())
        except Exception:  # not importable (yet): the definition alone
            fingerprint = ""
        return hashlib.sha256((blob + "\0" + fingerprint).encode()).hexdigest()[:12]

    def row_vote(self, row: Mapping[str, Any]) -> int:
        """This LF's vote on one row: a pandas Series is passed as it is (as `PandasLFApplier` passes it), any
        other mapping as a Series of its items."""
        import pandas as pd  # heavy import, kept local

        if not self.in_scope(row):
            return ABSTAIN
        x = row if isinstance(row, pd.Series) else pd.Series(dict(row), dtype=object)
        return self.checked_vote(self.resolve()(x))

    def checked_vote(self, value: Any, row: int | None = None, candidate_id: Any = None) -> int:
        """Snorkel's label as a vote (1 → HIGH, 0 → LOW, -1 → ABSTAIN); LabelingFunctionError otherwise."""
        if not _valid_vote(value):
            where = f" for candidate {candidate_id} (row {row})" if row is not None else ""
            raise LabelingFunctionError(
                f"labeling function {self.name!r} (snorkel {self.object}) returned {value!r}{where}; expected "
                "1 (high), 0 (low) or -1 (abstain)",
                self.name,
                row,
                candidate_id,
            )
        return int(value)


def add_lf_module_dirs(folders: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Put the recipe's `labeling.modules` folders on the import path (appended once each, so a team module never
    shadows an installed package), so `kind: python` / `kind: snorkel` modules in them import in this process
    without PYTHONPATH; folders that do not exist are skipped (`prefscale recipe validate` names them). Returns
    the folders added now."""
    added = []
    on_path = {os.path.abspath(p or os.curdir) for p in sys.path}
    for folder in folders:
        path = os.path.abspath(os.path.expanduser(os.fspath(folder)))
        if path not in on_path and os.path.isdir(path):
            sys.path.append(path)
            on_path.add(path)
            added.append(path)
    if added:
        importlib.invalidate_caches()  # a module written since the last import attempt must be found
    return added


def _import_module(name: str) -> Any:
    """`importlib.import_module`, and, when the module is not found and the working directory is not on
    `sys.path` (the `prefscale` console script), again with it appended: team modules live in the repository
    (or in a recipe's `labeling.modules` folders, put on the path by `add_lf_module_dirs` when it is loaded)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        cwd = os.getcwd()
        on_path = {os.path.abspath(p or os.curdir) for p in sys.path}
        if cwd in on_path or e.name != name.split(".")[0]:
            raise
        sys.path.append(cwd)
        return importlib.import_module(name)


@functools.cache
def _import_object(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    obj: Any = _import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@functools.cache
def _import_callable(spec: str) -> Any:
    obj = _import_object(spec)
    if not callable(obj):
        raise TypeError(f"{spec} is not callable")
    return obj


def _is_snorkel_lf(obj: Any) -> bool:
    """Whether `obj` is a Snorkel `LabelingFunction`, without importing Snorkel (slow: it imports torch): an
    object can only be one once its module has imported Snorkel."""
    core = sys.modules.get("snorkel.labeling.lf.core")
    return core is not None and isinstance(obj, core.LabelingFunction)


class _NotASnorkelLF(TypeError):
    """The object imported, but it is not a Snorkel `LabelingFunction`."""


def _import_snorkel_lf(spec: str) -> Any:
    obj = _import_object(spec)
    if not _is_snorkel_lf(obj):
        raise _NotASnorkelLF(
            f"{spec} is a {type(obj).__name__}, not a snorkel.labeling.LabelingFunction "
            "(make it with @labeling_function())"
        )
    return obj


def _stable(value: Any) -> Any:
    """A JSON stand-in for a resource: sets sorted, other objects by their repr without memory addresses."""
    if isinstance(value, set | frozenset):
        return sorted(repr(v) for v in value)
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


def _source(obj: Any) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):  # a builtin, a lambda typed in a REPL, ...: its name
        return getattr(obj, "__qualname__", type(obj).__qualname__)


def _snorkel_fingerprint(lf: Any) -> str:
    """What a Snorkel LF's behaviour depends on: its function's source, its resources, and each preprocessor's
    function (or class) source with its own preprocessors, in order."""
    parts = [_source(lf._f), json.dumps(lf._resources, sort_keys=True, default=_stable)]
    pending = list(lf._pre)
    while pending:
        pre = pending.pop(0)
        f = getattr(pre, "_f", None)
        parts.append(_source(f if f is not None else type(pre)))
        pending[:0] = list(getattr(pre, "_pre", []))
    return "\0".join(parts)


def python_lf_problems(functions: Sequence[Any]) -> list[str]:
    """One message per `kind: python` or `kind: snorkel` function whose object cannot be imported now (a missing
    module, a missing name, an import that raises) or is not what its kind calls (not callable; not a Snorkel
    `LabelingFunction`; a Snorkel one declared `kind: python`); [] when all import. Functions whose module fails to
    import the same way share one message."""
    problems: list[str | tuple[str, str]] = []  # a message, or the (module, why) key of a shared failure
    broken: dict[tuple[str, str], list[tuple[str, str]]] = {}  # (module, why) -> its (function, spec)s
    for lf in functions:
        if not isinstance(lf, PythonLF | SnorkelLF):
            continue
        spec = lf.callable if isinstance(lf, PythonLF) else lf.object
        try:
            obj = lf.resolve()
        except _NotASnorkelLF as e:  # imported, but not a Snorkel LF
            problems.append(f"labeling function {lf.name!r}: {e}")
            continue
        except Exception as e:  # whatever importing the team's module raises is the message
            why = f"{type(e).__name__}: {e}".splitlines()[0]
            if isinstance(e, AttributeError | TypeError):  # the module imported; this name is wrong
                problems.append(f"labeling function {lf.name!r}: cannot import {spec} ({why})")
                continue
            module = spec.partition(":")[0]
            if isinstance(e, ModuleNotFoundError) and e.name == module.split(".")[0]:
                why += (
                    "; put it in a folder that labeling.modules lists (relative to the recipe file, e.g. "
                    "`modules: [.]` for one beside it) or under the working directory (the repository root for "
                    "`make` and Dagster)"
                )
            if (module, why) not in broken:
                problems.append((module, why))
            broken.setdefault((module, why), []).append((lf.name, spec))
            continue
        if isinstance(lf, PythonLF) and _is_snorkel_lf(obj):
            problems.append(
                f"labeling function {lf.name!r}: {spec} is a snorkel.labeling.LabelingFunction; declare it "
                f"`kind: snorkel` with `object: {spec}` so it is applied as PandasLFApplier applies it"
            )
    return [p if isinstance(p, str) else _import_failure(*p, broken[p]) for p in problems]


def _import_failure(module: str, why: str, lfs: Sequence[tuple[str, str]]) -> str:
    """One message for the functions a module's failed import breaks."""
    if len(lfs) == 1:
        (name, spec), *_ = lfs
        return f"labeling function {name!r}: cannot import {spec} ({why})"
    names = ", ".join(repr(name) for name, _ in lfs)
    return f"labeling functions {names}: cannot import {module} ({why})"
