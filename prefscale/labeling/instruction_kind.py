"""The `instruction` labeling function: does the reply obey a constraint the prompt states?

IFEval (Zhou et al. 2023) checks verifiable instructions: a number of items, a length limit, a format. Here the
constraint is read from the prompt itself, so one function covers every prompt that states it and abstains on
the rest. Each check fires either where the reply obeys (`when: obeyed`, usually voting high) or where it breaks
the constraint (`when: broken`, usually voting low):

| check | the prompt asks for | obeyed | broken |
|---|---|---|---|
| `item_count` | N ideas / ways / tips / examples / … | a list of exactly N items | a list of another length |
| `word_limit` | at most N words ("in 50 words", "N words or less") | ≤ N words | > `tolerance` × N words |
| `sentence_limit` | N sentences ("in one sentence", "in three sentences") | ≤ N sentences | > N sentences |
| `yes_no` | a yes-no question (the whole prompt is one) | the first sentence says yes or no | it does not |
| `code` | code ("write a function", "in Python") | a code block or code lines | neither |

A list's length is its top-level numbered items (`1.`, `2)` at the start of a line), or its top-level bullets when
it has none. Sentences are the runs ending in `.`, `!` or `?` (and a last one without). Polars runs the checks
vectorised; `row_vote` is the same check in Python's `re`, rule for rule.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, get_args

import polars as pl
from pydantic import Field, model_validator

from prefscale.labeling.pattern_kinds import _WORDS, _LFBase, _text
from prefscale.labeling.regex_dialect import _rust_count, python_regex

NUMBER_WORDS = {
    "one": "1", "a single": "1", "single": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "fifteen": "15",
    "twenty": "20",
}  # fmt: skip
_NUM = r"(\d{1,4}|" + "|".join(sorted(NUMBER_WORDS, key=len, reverse=True)) + ")"
_ITEMS = (
    r"(?:ideas|ways|tips|examples|reasons|things|names|questions|steps|options|suggestions|facts|benefits|points|"
    r"items|books|movies|films|songs|places|titles|activities|topics|strategies|methods|features|differences|"
    r"advantages|disadvantages|types|kinds|recipes|games|quotes|jokes|products|countries|cities|animals|foods|"
    r"characters|slogans|taglines|hashtags|keywords|synonyms|antonyms|alternatives|tools|skills|habits|goals|"
    r"mistakes|myths|exercises|destinations|attractions|dishes|apps|websites|resources|words that)"
)
PROMPT_PATTERNS = {
    "item_count": rf"(?i)\b{_NUM}\s+(?:[a-z-]+\s+){{0,3}}?{_ITEMS}\b",
    "word_limit": rf"(?i)\b(?:in|within|under|below|no more than|not more than|less than|fewer than|at most|"
    rf"maximum of|up to|limit(?:ed)? to)\s+{_NUM}\s+words\b",
    "word_limit_or_less": rf"(?i)\b{_NUM}\s+words\s+or\s+(?:less|fewer)\b",
    "sentence_limit": rf"(?i)\b(?:in|using|with|into|within)\s+(?:just\s+|only\s+|exactly\s+)?{_NUM}\s+sentences?\b",
    "yes_no": r"(?i)\A\s*(?:is|are|can|could|does|do|did|will|would|should|has|have|was|were|am|may|must)\s[^?\n]"
    r"{0,200}\?\s*\z",
    "code": r"(?i)\b(?:write|create|implement|give me|provide|generate|show me|make)\b[^.?!\n]{0,60}\b(?:code|"
    r"function|program|script|class|method|query|regex|snippet|algorithm)\b|\b(?:in|using)\s+(?:python|"
    r"javascript|java|c\+\+|c#|typescript|rust|golang|ruby|php|sql|bash|kotlin|swift)\b",
}
RESPONSE_PATTERNS = {
    "numbered": r"(?m)^\d+[.)]\s",
    "bullet": r"(?m)^[-*•]\s",
    "sentence_end": r"[.!?]+(?:\s|\z)",
    "yes_no_first": r"(?i)\A\W{0,5}(?:[^.!?\n]{0,60}\b)?(?:yes|no)\b",
    "code": r"(?m)```|^(?:    |\t)\S|^\s*(?:def |class |function |import |#include|public |const |let |var |"
    r"SELECT |for \(|while \(|return )",
}
_NUM_RX = re.compile(rf"(?i)\b{_NUM}\b")
Check = Literal["item_count", "word_limit", "sentence_limit", "yes_no", "code"]
CHECKS: tuple[str, ...] = get_args(Check)


class InstructionLF(_LFBase):
    """Fires where the prompt states `check`'s constraint and the reply obeys it (`when: obeyed`) or breaks it
    (`when: broken`); it abstains on prompts without that constraint (see the module docstring)."""

    kind: Literal["instruction"] = Field(
        default="instruction",
        description="instruction: the prompt states a checkable constraint (a number of items, a word or "
        "sentence limit, a yes-no question, code) and the reply obeys or breaks it",
    )
    check: Check = Field(
        description="the constraint read from the prompt: item_count, word_limit, sentence_limit, yes_no or code"
    )
    when: Literal["obeyed", "broken"] = Field(
        description="fire where the reply obeys the constraint, or where it breaks it"
    )
    tolerance: float = Field(
        default=1.2,
        ge=1,
        description="word_limit only: a reply breaks the limit above this many times N words (it obeys at ≤ N)",
    )

    uses_word_count: ClassVar[bool] = True

    @model_validator(mode="after")
    def _tolerance_used(self) -> InstructionLF:
        if self.tolerance != 1.2 and self.check != "word_limit":
            raise ValueError(f"tolerance is only used by check 'word_limit', not {self.check!r}")
        return self

    def input_columns(self) -> set[str]:
        return {"prompt", "response"}

    def fires(self, words: pl.Expr) -> pl.Expr:
        prompt, response = pl.col("prompt"), pl.col("response")
        if self.check in ("yes_no", "code"):
            asked = prompt.str.contains(PROMPT_PATTERNS[self.check])
            key = "yes_no_first" if self.check == "yes_no" else "code"
            done = response.str.contains(RESPONSE_PATTERNS[key])
            return asked & (done if self.when == "obeyed" else ~done)
        if self.check == "word_limit":
            n = _number(prompt, "word_limit").fill_null(_number(prompt, "word_limit_or_less"))
            count, over = words.cast(pl.Float64), n * self.tolerance
            return _judged(n, count <= n, count > over, self.when)
        n = _number(prompt, self.check)
        if self.check == "sentence_limit":
            count = response.str.strip_chars().str.count_matches(RESPONSE_PATTERNS["sentence_end"])
            tail = ~response.str.strip_chars().str.contains(r"[.!?]\z") & (response.str.strip_chars() != "")
            count = (count + tail.cast(pl.UInt32)).cast(pl.Float64)
            return _judged(n, count <= n, count > n, self.when)
        numbered = response.str.count_matches(RESPONSE_PATTERNS["numbered"])  # item_count
        count = (
            pl.when(numbered > 0)
            .then(numbered)
            .otherwise(response.str.count_matches(RESPONSE_PATTERNS["bullet"]))
        )
        count = count.cast(pl.Float64)
        return _judged(n, count == n, (count > 0) & (count != n), self.when)

    def _row_fires(self, row: Mapping[str, Any]) -> bool:
        prompt, response = _text(row, "prompt"), _text(row, "response")
        if prompt is None or response is None:
            return False
        if self.check in ("yes_no", "code"):
            if not _search(PROMPT_PATTERNS[self.check], prompt):
                return False
            done = _search(RESPONSE_PATTERNS["yes_no_first" if self.check == "yes_no" else "code"], response)
            return done if self.when == "obeyed" else not done
        if self.check == "word_limit":
            n = _row_number("word_limit", prompt)
            n = n if n is not None else _row_number("word_limit_or_less", prompt)
            if n is None:
                return False
            count = _rust_count(python_regex(_WORDS, response), response)
            return count <= n if self.when == "obeyed" else count > n * self.tolerance
        n = _row_number(self.check, prompt)
        if n is None:
            return False
        if self.check == "sentence_limit":
            text = response.strip()
            count = _rust_count(python_regex(RESPONSE_PATTERNS["sentence_end"], text), text)
            count += int(text != "" and not _search(r"[.!?]\z", text))
            return count <= n if self.when == "obeyed" else count > n
        count = _rust_count(python_regex(RESPONSE_PATTERNS["numbered"], response), response)  # item_count
        if count == 0:
            count = _rust_count(python_regex(RESPONSE_PATTERNS["bullet"], response), response)
        return count == n if self.when == "obeyed" else 0 < count != n


def _number(prompt: pl.Expr, key: str) -> pl.Expr:
    """The N a prompt states (digits or a number word), as a float; null where it states none."""
    raw = prompt.str.extract(PROMPT_PATTERNS[key], 1).str.to_lowercase()
    return raw.replace(NUMBER_WORDS).cast(pl.Float64, strict=False)


def _row_number(key: str, prompt: str) -> float | None:
    """`_number` for one prompt: the first number in the constraint's match (Rust's leftmost match, in Python)."""
    match = python_regex(PROMPT_PATTERNS[key], prompt).search(prompt)  # counts only: its groups are not kept
    if match is None:
        return None
    raw = _NUM_RX.search(match.group(0))
    if raw is None:  # pragma: no cover - every constraint pattern holds a number
        return None
    word = raw.group(1).lower()
    return float(NUMBER_WORDS.get(word, word))


def _judged(n: pl.Expr, obeyed: pl.Expr, broken: pl.Expr, when: str) -> pl.Expr:
    return n.is_not_null() & (obeyed if when == "obeyed" else broken)


def _search(pattern: str, text: str) -> bool:
    return python_regex(pattern, text).search(text) is not None
