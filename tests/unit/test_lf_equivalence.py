"""`row_vote` (Python's `re`, one row at a time) votes exactly as `apply_lfs` (polars' Rust regex, vectorised)."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import polars as pl
import pytest
from snorkel.labeling import LabelingFunction as SnorkelLF
from snorkel.labeling import PandasLFApplier

import prefscale.labeling.apply as labeling_apply
from prefscale.cli import main
from prefscale.config.recipe import load_recipe
from prefscale.labeling.apply import apply_lfs, snorkel_lfs
from prefscale.labeling.pattern_kinds import FinishLF, LengthLF, ListFormatLF, OrderedLF, RegexLF, WordRatioLF
from prefscale.labeling.regex_dialect import _rust_count, python_regex
from prefscale.labeling.votes import ABSTAIN, HIGH, LOW
from prefscale.tools.bench_lf import bench_lf, synthetic_candidates

TASKS = ("troubleshooting", "billing", "plan_question", "complaint")

# Hand-written edge cases: empty, null, case variants, apostrophes, several lines (\n, \r\n, blank lines),
# list markers, and the characters where Rust's and Python's regex engines disagree (dotless/dotted i, long
# s, the Kelvin sign, combining marks, superscript digits, non-ASCII digits and spaces, astral characters).
EDGE_RESPONSES: list[str | None] = [
    "",
    None,
    " ",
    "\n",
    "Lumora",
    "LUMORA here. Thank you!",
    "the lumora team thanks you",
    "lumorax and xlumora",
    "LUMORA\u0301 with a combining accent",
    "Luſ Lumora with a long s",
    "lumora_team",
    "Thank you. I understand.\n1. Unplug the router.\n2. Plug it back in.\nLet me know if it helps.",
    "Sorry! FIRST, unplug it. Then ANYTHING ELSE?",
    "let me know. I understand.\n1. Unplug it.",
    "I understand.\r\n1. Unplug it.\r\n2. Plug it in.\r\nReply here",
    "Do this:\n\n  - one\n  - two\n* three",
    "• first\n• second",
    "1) one\n2) two\n3) three",
    "1.no space\n2.either",
    "\u0663. arabic-indic digit\n\u0664. another",
    "\u00a0- nbsp item\n\u00a0- nbsp item two",
    "\u2028- separator\n- item",
    "Have you tried restarting it?",
    "Have you tried restarting it?\n",
    "Here is the fix.\nDid that work?  \n",
    "Here is the fix.\nDid that work? No more text follows but this line is much longer than sixty chars?",
    "x" * 70 + "?",
    "Obviously this is not our fault.",
    "CALM DOWN, that was STUPID",
    "faultless and calm downstairs",
    "Our amazing, fantastic, incredible team",
    "AMAZING",
    "amazingly good",
    "amazing\u0301 team",
    "amazing² team",
    "amazing_team",
    "don't do that, it's amazing",
    "DON'T DON'T",
    "'quoted' words ' alone",
    "naïve café résumé",
    "cafe\u0301 time",
    "ıi İI iı thank THANK thanks THANKS ThAnK",
    "\u212aelvin sign and k and K",
    "emoji 🙂 thank 🙂 you 🙂 amazing",
    "\U0001d400\U0001d401 mathematical bold letters",
    "tab\tseparated\twords\tare\there",
    "one two three four five six seven eight nine ten eleven twelve",
    "one two three four five six seven eight nine ten eleven",
    "step one, step two, STEP three",
    "a refund is coming; REFUND",
    "help\n",
    "help",
    "Thank you.\nUnplug it, then ask us for help",
    "thank you.\nUnplug it, then ask us for help",
    "\u0130stanbul office",
]
# Patterns chosen to exercise each translation concern (see the comment above `_codepoints` in prefscale/labeling/regex_dialect.py).
REGEX_LFS = [
    RegexLF(name="company", pattern=r"\blumora\b", vote="high"),
    RegexLF(name="company_exact", pattern="(?-i)Lumora", vote="high"),
    RegexLF(name="thanks", pattern=r"\bthank", vote="high", task_types=("billing", "complaint")),
    RegexLF(name="steps", pattern=r"\bstep\b", min_count=2, vote="low"),
    RegexLF(name="asks_refund", pattern="refund", field="prompt", vote="high"),
    RegexLF(name="ends_help", pattern="help$", vote="low"),
    RegexLF(name="question_back", pattern=r"^[^\n]{0,60}\?|\n[^\n]{0,60}\?\s*$", vote="low"),
    RegexLF(name="sensitive", pattern=r"\b(obviously|stupid|fault|calm down)\b", vote="low"),
    RegexLF(name="contraction", pattern=r"\w+'\w+", vote="high"),
    RegexLF(name="digits", pattern=r"\d", min_count=2, vote="low"),
    RegexLF(name="empty_matches", pattern=r"x*", min_count=3, vote="low"),
    RegexLF(name="word_runs", pattern=r"\w*", min_count=4, vote="low"),
    RegexLF(name="dotless", pattern=r"\bi\b", vote="low"),
    RegexLF(name="kelvin", pattern="k", min_count=2, vote="low"),
    RegexLF(name="verbose", pattern="(?x) lu  mora  # the company", vote="high"),
    RegexLF(name="shouting", pattern="(?-i)[[:upper:]]{4,}", vote="low"),
    RegexLF(name="midflag", pattern="a(?-i)MAZ|(?-i)xyz", vote="low"),
    RegexLF(name="non_ascii", pattern=r"[^\x00-\x7f]", vote="low"),
    RegexLF(name="lines", pattern=r"(?m)^\S.*$", min_count=3, vote="high"),
    RegexLF(name="word_edges", pattern=r"\<\w+\>\s\B", vote="high"),
]
LIST_LFS = [
    ListFormatLF(name="list1", min_items=1, vote="high"),
    ListFormatLF(name="list2", min_items=2, vote="high"),
    ListFormatLF(name="list3", min_items=3, vote="low", task_types=("troubleshooting",)),
]
ORDERED_LFS = [
    OrderedLF(
        name="workflow",
        patterns=("understand|sorry", r"\n1\.|first", "let me know|anything else|reply here"),
        vote="high",
    ),
    OrderedLF(name="exact_then_any", patterns=("(?-i)Thank", r"\bunplug", "help$"), vote="high"),
    OrderedLF(name="lines_in_order", patterns=(r"(?m)^1", r"(?m)^2\S*"), vote="low", task_types=("billing",)),
]
WORD_RATIO_LFS = [
    WordRatioLF(
        name="adjectives",
        words=("amazing", "fantastic", "incredible", "wonderful", "brilliant", "outstanding", "superb"),
        min_ratio=0.05,
        vote="low",
    ),
    WordRatioLF(name="mostly_adjectives", words=("amazing", "fantastic"), min_ratio=1.0, vote="low"),
    WordRatioLF(name="contractions", words=("don't", "it's", "can't"), min_ratio=0.25, vote="low"),
    WordRatioLF(name="accented", words=("café", "naïve", "thank"), min_ratio=0.2, vote="high"),
]
LENGTH_LFS = [
    LengthLF(name="too_short", min_words=12, vote="low"),
    LengthLF(name="too_long", max_words=10, vote="low"),
    LengthLF(name="out_of_range", min_words=3, max_words=8, vote="low", task_types=("complaint", "billing")),
    LengthLF(name="never", min_words=0, vote="low"),
    LengthLF(name="unbounded", vote="low"),
]
FINISH_LFS = [
    FinishLF(name="unfinished", vote="low"),
    FinishLF(name="unfinished_billing", vote="high", task_types=("billing",)),
]
KINDS = {
    "regex": REGEX_LFS,
    "list_format": LIST_LFS,
    "ordered": ORDERED_LFS,
    "word_ratio": WORD_RATIO_LFS,
    "length": LENGTH_LFS,
    "unfinished": FINISH_LFS,
}


def _mutate(text: str, rng: random.Random) -> str:
    """Case flips and inserted characters on which the two regex engines could disagree."""
    odd = ["ı", "İ", "ſ", "\u212a", "\u0301", "²", "\u00a0", "\n", "\r\n", "'", "-", "•", "?", "🙂", "ǅ"]
    chars = list(text)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(chars) + 1)
        chars.insert(i, rng.choice(odd))
    out = "".join(chars)
    return out.upper() if rng.random() < 0.3 else out.swapcase() if rng.random() < 0.3 else out


@pytest.fixture(scope="module")
def rows() -> pl.DataFrame:
    """The edge cases plus generated candidates (some mutated), with task types, prompts, finish reasons."""
    rng = random.Random(7)
    gen = synthetic_candidates(300, seed=3)
    responses = EDGE_RESPONSES + [
        _mutate(r, rng) if i % 2 else r for i, r in enumerate(gen["response"].to_list())
    ]
    n = len(responses)
    prompts = gen["prompt"].to_list()
    return pl.DataFrame(
        {
            "candidate_id": [f"c{i}" for i in range(n)],
            "response": responses,
            "prompt": [None if i % 17 == 0 else prompts[i % len(prompts)] for i in range(n)],
            "task_type": [None if i % 23 == 5 else TASKS[i % len(TASKS)] for i in range(n)],
            "finish_reason": [["stop", "length", None, "LENGTH", "length"][i % 5] for i in range(n)],
        },
        schema_overrides={c: pl.String for c in ("response", "prompt", "task_type", "finish_reason")},
    )


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_row_vote_equals_apply_lfs_row_by_row(rows, kind):
    lfs = KINDS[kind]
    votes = apply_lfs(rows, lfs)
    dicts = rows.to_dicts()
    frame = rows.to_pandas()  # pandas rows: Series, nulls as None
    for lf in lfs:
        expected = votes[lf.name].to_list()
        assert [lf.row_vote(r) for r in dicts] == expected, lf.name
        assert frame.apply(lf.row_vote, axis=1).tolist() == expected, lf.name
        assert set(expected) <= {ABSTAIN, LOW, HIGH}


def test_edge_cases_vote_as_documented():
    lf = RegexLF(name="company", pattern=r"\blumora\b", vote="high")
    assert [lf.row_vote({"response": r}) for r in ("LUMORA!", "lumorax", "", None, float("nan"))] == [
        HIGH,
        ABSTAIN,
        ABSTAIN,
        ABSTAIN,
        ABSTAIN,
    ]
    scoped = RegexLF(name="refund", pattern="refund", vote="low", task_types=("billing",))
    assert scoped.row_vote({"response": "refund", "task_type": "billing"}) == LOW
    assert scoped.row_vote({"response": "refund", "task_type": "complaint"}) == ABSTAIN
    assert scoped.row_vote({"response": "refund", "task_type": None}) == ABSTAIN
    assert FinishLF(name="u", vote="low").row_vote({"finish_reason": "length"}) == LOW
    assert FinishLF(name="u", vote="low").row_vote({"finish_reason": None}) == ABSTAIN
    ratio = WordRatioLF(name="adj", words=("amazing",), min_ratio=0.5, vote="low")
    assert [ratio.row_vote({"response": r}) for r in ("amazing team", "amazing big team", "", "é")] == [
        LOW,
        ABSTAIN,
        ABSTAIN,
        ABSTAIN,
    ]


# Where Python's `re`, given the pattern as is, disagrees with polars; the translation must not.
@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        ("foo$", "foo\n"),  # Rust's `$` is the very end only
        ("(?i)i", "ı"),  # Python folds dotless i with i, Rust does not
        ("(?i)i", "İ"),
        (r"\bcafe\b", "cafe\u0301"),  # a combining mark is a word character for Rust
        (r"\w", "²"),  # a superscript digit is one for Python
        (r"\w", "\u203f"),  # connector punctuation: Rust's \w only
        (r"\s", "\x1c"),  # Python's \s includes the information separators
        (r"\w*", "ab c"),  # counting skips an empty match right after a match
        ("|a", "a"),
        ("a(?i)b|c", "C"),  # a flag switched mid-pattern reaches the later branches
        ("a**", "aaa"),  # nested repetition
    ],
)
def test_translation_follows_polars_where_re_does_not(pattern, text):
    series = pl.Series([text])
    want = (series.str.contains(pattern).item(), series.str.count_matches(pattern).item())
    try:
        naive = re.compile(pattern)
        assert (naive.search(text) is not None, len(naive.findall(text))) != want
    except re.error:
        pass  # or `re` rejects the pattern outright
    rx = python_regex(pattern, text)
    assert (rx.search(text) is not None, _rust_count(rx, text)) == want


def test_translation_fuzz_against_polars():
    patterns = [
        r"(?i)\blumora\b",
        r"(?m)^\s*(\d+[.)]|[-*•])\s+\w",
        r"(?i)^[^\n]{0,60}\?|\n[^\n]{0,60}\?\s*$",
        r"(?i)\b(?:amazing|don't|café)\b",
        r"[A-Za-z']+",
        r"\b{start}\w|\b{end-half}",
        r"(?mR)^x$",
        r"[a-z&&[^aeiou]]+",
        r"(?i)[[:lower:]]+\pN",
        r"(?U)a+b??",
        r"(?s).\B.",
    ]
    rng = random.Random(0)
    alphabet = [*"aAbBiIıİſkK\u212axX01 ²٣\n\r\t\u00a0\u0301_-'?é🙂", "lumora", "café", "don't", "1. "]
    texts = ["", "\n"] + [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20))) for _ in range(400)
    ]
    series = pl.Series(texts)
    for pattern in patterns:
        want = series.str.count_matches(pattern).to_list()
        got = [_rust_count(python_regex(pattern, t), t) for t in texts]
        assert got == want, pattern


def test_embedded_recipe_polars_and_snorkel_pandas_matrices_identical():
    lfs = list(load_recipe("embedded").labeling.functions)
    data = synthetic_candidates(2000, seed=11)
    votes = apply_lfs(data, lfs)
    slfs = snorkel_lfs(lfs)
    assert all(isinstance(f, SnorkelLF) for f in slfs)
    assert [f.name for f in slfs] == [lf.name for lf in lfs] == votes.columns[1:]
    matrix = PandasLFApplier(slfs).apply(data.to_pandas(), progress_bar=False)
    ours = votes.select([lf.name for lf in lfs]).to_numpy()
    assert ours.shape == matrix.shape == (2000, len(lfs))
    assert np.array_equal(ours, matrix)
    assert (data["finish_reason"] == "length").any()
    assert len(np.unique(ours)) == 3  # the sample exercises HIGH, LOW and ABSTAIN


def test_snorkel_lfs_rejects_duplicate_names():
    with pytest.raises(ValueError, match="duplicate"):
        snorkel_lfs([FinishLF(name="a", vote="low"), FinishLF(name="a", vote="high")])


def test_apply_lfs_names_the_function_and_row_with_an_invalid_vote(monkeypatch):
    real = labeling_apply.lf_expression

    def broken(lf, words=None):
        expr = real(lf, words)
        if lf.name == "bad":
            return (
                pl.when(pl.col("candidate_id") == "c1").then(pl.lit(7, pl.Int8)).otherwise(expr).alias("bad")
            )
        return expr

    monkeypatch.setattr(labeling_apply, "lf_expression", broken)
    rows = pl.DataFrame(
        {"candidate_id": ["c0", "c1", "c2"], "response": ["a", "b", "c"], "task_type": ["billing"] * 3}
    )
    lfs = [RegexLF(name="good", pattern="a", vote="high"), RegexLF(name="bad", pattern="b", vote="low")]
    with pytest.raises(ValueError, match="labeling function 'bad' returned 7 for candidate c1"):
        apply_lfs(rows, lfs)


def test_synthetic_candidates_shape():
    data = synthetic_candidates(50, seed=1)
    assert data.height == 50
    assert data.columns == ["candidate_id", "prompt_id", "task_type", "prompt", "response", "finish_reason"]
    assert data["candidate_id"].n_unique() == 50
    assert set(data["finish_reason"]) <= {"stop", "length"}
    assert data.equals(synthetic_candidates(50, seed=1))


def test_bench_lf_small():
    result = bench_lf(rows=2000)
    assert result.equal is True
    assert result.mismatch is None
    assert result.rows == 2000
    assert result.lfs == 9
    assert result.speedup > 0
    d = result.to_dict()
    assert d["speedup"] == pytest.approx(d["pandas_seconds"] / d["polars_seconds"], rel=0.01)
    json.dumps(d)


def test_cli_bench_lf_json(capsys):
    assert main(["bench", "lf", "--rows", "500", "--json"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    out = json.loads(last)
    assert out["equal"] is True
    assert out["rows"] == 500
    assert out["lfs"] == 9
    assert isinstance(out["speedup"], float) and out["speedup"] > 0
    assert out["polars_seconds"] > 0 and out["pandas_seconds"] > 0


def test_cli_bench_lf_text(capsys):
    assert main(["bench", "lf", "--rows", "100"]) == 0
    out = capsys.readouterr().out
    assert "speedup:" in out
    assert "label matrices identical: True" in out
