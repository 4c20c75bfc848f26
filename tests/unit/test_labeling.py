from __future__ import annotations

import polars as pl
import pytest
from pydantic import TypeAdapter, ValidationError

from prefscale.labeling.analysis import lf_catalog, lf_summary
from prefscale.labeling.apply import apply_lfs
from prefscale.labeling.pattern_kinds import (
    FinishLF,
    LengthLF,
    ListFormatLF,
    OrderedLF,
    RegexLF,
    WordRatioLF,
)
from prefscale.labeling.registry import LabelingFunction
from prefscale.labeling.votes import ABSTAIN, HIGH, LOW, VOTE_DTYPE, validate_lfs


def frame(responses, task_types=None, finish=None):
    n = len(responses)
    return pl.DataFrame(
        {
            "candidate_id": [f"c{i}" for i in range(n)],
            "response": responses,
            "task_type": task_types or ["billing"] * n,
            "finish_reason": finish or ["stop"] * n,
        }
    )


def votes_of(rows, lf):
    out = apply_lfs(rows, [lf])
    assert out.schema[lf.name] == VOTE_DTYPE
    return out[lf.name].to_list()


def test_regex_lf_is_case_insensitive_by_default():
    lf = RegexLF(name="company", pattern=r"\blumora\b", vote="high")
    rows = frame(["Thanks, LUMORA here", "the lumora team", "lumorax", "nothing", None])
    assert votes_of(rows, lf) == [HIGH, HIGH, ABSTAIN, ABSTAIN, ABSTAIN]


def test_regex_lf_low_vote_and_min_count():
    lf = RegexLF(name="many_steps", pattern=r"\bstep\b", min_count=2, vote="low")
    rows = frame(["step one, step two", "one step only", "STEP and Step"])
    assert votes_of(rows, lf) == [LOW, ABSTAIN, LOW]


def test_regex_lf_inline_flags_override_case_insensitivity():
    lf = RegexLF(name="exact", pattern="(?-i)Lumora", vote="high")
    assert votes_of(frame(["Lumora", "lumora"]), lf) == [HIGH, ABSTAIN]


def test_regex_lf_non_capturing_group_stays_case_insensitive():
    lf = RegexLF(name="company", pattern="(?:lumora)", vote="high")
    assert votes_of(frame(["LUMORA"]), lf) == [HIGH]


def test_regex_lf_on_prompt_field():
    lf = RegexLF(name="asks_refund", pattern="refund", field="prompt", vote="high")
    rows = frame(["a refund is coming", "ok"]).with_columns(prompt=pl.Series(["hello", "i want a REFUND"]))
    assert votes_of(rows, lf) == [ABSTAIN, HIGH]


def test_list_format_lf():
    lf = ListFormatLF(name="list", min_items=2, vote="high")
    rows = frame(
        [
            "Do this:\n1. Unplug it.\n2. Plug it in.",
            "Do this:\n1) Unplug it.\n2) Plug it in.",
            "- one\n- two\n* three",
            "1. only one item",
            "First unplug it, then plug it in.",
        ]
    )
    assert votes_of(rows, lf) == [HIGH, HIGH, HIGH, ABSTAIN, ABSTAIN]
    three = ListFormatLF(name="list3", min_items=3, vote="high")
    assert votes_of(rows, three) == [ABSTAIN, ABSTAIN, HIGH, ABSTAIN, ABSTAIN]


def test_ordered_lf_requires_the_order():
    lf = OrderedLF(
        name="workflow",
        patterns=("understand|sorry", r"\n1\.|first", "let me know|anything else|reply here"),
        vote="high",
    )
    rows = frame(
        [
            "I understand.\n1. Unplug it.\n2. Plug it in.\nLet me know.",
            "SORRY. First unplug it. Then ANYTHING ELSE?",
            "Let me know. I understand.\n1. Unplug it.",
            "I understand.\n1. Unplug it.",
            "1. Unplug it.\nI understand. Let me know.",
        ]
    )
    assert votes_of(rows, lf) == [HIGH, HIGH, ABSTAIN, ABSTAIN, ABSTAIN]


def test_ordered_lf_needs_two_patterns():
    with pytest.raises(ValidationError):
        OrderedLF(name="x", patterns=("a",), vote="high")


def test_word_ratio_lf():
    lf = WordRatioLF(name="adjectives", words=("amazing", "fantastic"), min_ratio=0.2, vote="low")
    rows = frame(
        [
            "Amazing fantastic team",  # 2/3
            "an amazing team that helps you fix the router today",  # 1/10
            "our amazing team helps",  # 1/4
            "",
            "amazingly good",  # word boundary: no hit
        ]
    )
    assert votes_of(rows, lf) == [LOW, ABSTAIN, LOW, ABSTAIN, ABSTAIN]


def test_length_lf():
    rows = frame(["too short", "this one is long enough", "one two three four five six", ""])
    short = LengthLF(name="too_short", min_words=3, vote="low")
    assert votes_of(rows, short) == [LOW, ABSTAIN, ABSTAIN, LOW]
    long = LengthLF(name="too_long", max_words=5, vote="low")
    assert votes_of(rows, long) == [ABSTAIN, ABSTAIN, LOW, ABSTAIN]
    both = LengthLF(name="out_of_range", min_words=3, max_words=5, vote="low")
    assert votes_of(rows, both) == [LOW, ABSTAIN, LOW, LOW]


def test_unfinished_lf_reads_finish_reason():
    lf = FinishLF(name="unfinished", vote="low")
    rows = frame(["a", "b", "c"], finish=["stop", "length", None])
    assert votes_of(rows, lf) == [ABSTAIN, LOW, ABSTAIN]


def test_task_types_scope_abstains_elsewhere():
    lf = RegexLF(name="refund", pattern="refund", vote="high", task_types=("billing", "complaint"))
    rows = frame(
        ["refund", "refund", "refund", "nothing"],
        task_types=["billing", "troubleshooting", "complaint", "billing"],
    )
    assert votes_of(rows, lf) == [HIGH, ABSTAIN, HIGH, ABSTAIN]


def test_apply_lfs_matrix_shape_dtype_and_values():
    lfs = [
        RegexLF(name="company", pattern="lumora", vote="high"),
        ListFormatLF(name="list_format", vote="high"),
        RegexLF(name="sensitive", pattern="obviously", vote="low"),
        LengthLF(name="too_short", min_words=4, vote="low"),
        FinishLF(name="unfinished", vote="low"),
    ]
    rows = frame(
        ["Lumora here.\n1. a b\n2. c d", "Obviously.", "plain words and nothing more"],
        finish=["stop", "length", "stop"],
    )
    out = apply_lfs(rows, lfs)
    assert out.columns == ["candidate_id", "company", "list_format", "sensitive", "too_short", "unfinished"]
    assert out["candidate_id"].to_list() == ["c0", "c1", "c2"]
    assert all(out.schema[lf.name] == pl.Int8 for lf in lfs)
    assert out.select(pl.exclude("candidate_id")).rows() == [
        (HIGH, HIGH, ABSTAIN, ABSTAIN, ABSTAIN),
        (ABSTAIN, ABSTAIN, LOW, LOW, LOW),
        (ABSTAIN, ABSTAIN, ABSTAIN, ABSTAIN, ABSTAIN),
    ]
    values = set(out.select(pl.exclude("candidate_id")).unpivot()["value"].to_list())
    assert values <= {ABSTAIN, LOW, HIGH}


def test_version_tracks_the_definition():
    a = RegexLF(name="a", pattern="x", vote="high")
    assert a.version == RegexLF(name="a", pattern="x", vote="high").version
    assert len(a.version) == 12
    assert a.version != RegexLF(name="a", pattern="y", vote="high").version
    assert a.version != RegexLF(name="a", pattern="x", vote="low").version
    assert a.version != RegexLF(name="a", pattern="x", vote="high", min_count=2).version
    assert a.version != RegexLF(name="a", pattern="x", vote="high", task_types=("billing",)).version


def test_duplicate_names_rejected():
    lfs = [RegexLF(name="a", pattern="x", vote="high"), ListFormatLF(name="a", vote="high")]
    with pytest.raises(ValueError, match="duplicate labeling function names: \\['a'\\]"):
        validate_lfs(lfs)
    with pytest.raises(ValueError, match="duplicate"):
        apply_lfs(frame(["x"]), lfs)


def test_empty_lf_set_rejected():
    with pytest.raises(ValueError, match="at least one"):
        apply_lfs(frame(["x"]), [])


@pytest.mark.parametrize("pattern", ["(unclosed", "[a-", "*x"])
def test_invalid_regex_rejected_at_construction(pattern):
    with pytest.raises(ValidationError, match="invalid regex"):
        RegexLF(name="bad", pattern=pattern, vote="high")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "Bad-Name", "pattern": "x", "vote": "high"},
        {"name": "ok", "pattern": "x", "vote": "maybe"},
        {"name": "ok", "pattern": "x", "vote": "high", "min_count": 0},
        {"name": "ok", "pattern": "x", "vote": "high", "typo": 1},
    ],
)
def test_invalid_lf_fields_rejected(kwargs):
    with pytest.raises(ValidationError):
        RegexLF(**kwargs)


def test_discriminated_union_parses_by_kind():
    adapter = TypeAdapter(LabelingFunction)
    lf = adapter.validate_python(
        {"name": "w", "kind": "word_ratio", "words": ["a"], "min_ratio": 0.5, "vote": "low"}
    )
    assert isinstance(lf, WordRatioLF)
    assert isinstance(adapter.validate_python({"name": "u", "kind": "unfinished", "vote": "low"}), FinishLF)
    with pytest.raises(ValidationError):
        adapter.validate_python({"name": "x", "kind": "nonsense", "vote": "low"})


def test_apply_lfs_missing_columns():
    lf = RegexLF(name="a", pattern="x", vote="high")
    with pytest.raises(ValueError, match="lacks columns \\['task_type'\\]"):
        apply_lfs(frame(["x"]).drop("task_type"), [lf])
    rows = frame(["x"]).drop("finish_reason")
    assert apply_lfs(rows, [lf])["a"].to_list() == [HIGH]  # finish_reason only needed by unfinished LFs
    with pytest.raises(ValueError, match="finish_reason"):
        apply_lfs(rows, [lf, FinishLF(name="unfinished", vote="low")])


def test_lf_catalog():
    lfs = [RegexLF(name="a", pattern="x", vote="high", description="d"), FinishLF(name="u", vote="low")]
    cat = lf_catalog(lfs)
    assert cat.columns == ["lf_name", "kind", "version", "vote", "description"]
    assert cat.rows() == [
        ("a", "regex", lfs[0].version, "high", "d"),
        ("u", "unfinished", lfs[1].version, "low", ""),
    ]


def test_lf_summary_hand_computed():
    votes = pl.DataFrame(
        {
            "candidate_id": ["r0", "r1", "r2", "r3", "r4"],
            #       r0  r1  r2  r3  r4
            "a": [1, 1, -1, -1, 0],
            "b": [1, 0, -1, -1, -1],
            "c": [-1, -1, 1, -1, 1],
        },
        schema_overrides={"a": pl.Int8, "b": pl.Int8, "c": pl.Int8},
    )
    s = lf_summary(votes, ["a", "b", "c"])
    assert s["lf_name"].to_list() == ["a", "b", "c"]
    # a: active r0 r1 r4; all overlap another LF; r1 (a=1,b=0) and r4 (a=0,c=1) conflict.
    # b: active r0 r1; both overlap; r1 conflicts.
    # c: active r2 r4; only r4 overlaps and conflicts.
    assert s["polarity"].to_list() == [[0, 1], [0, 1], [1]]
    assert s["coverage"].to_list() == pytest.approx([0.6, 0.4, 0.4])
    assert s["overlaps"].to_list() == pytest.approx([0.6, 0.4, 0.2])
    assert s["conflicts"].to_list() == pytest.approx([0.4, 0.2, 0.2])


def test_ordered_lf_invalid_regex_rejected_at_construction():
    try:
        OrderedLF(name="bad", patterns=("(unclosed", "x"), vote="high")
    except ValidationError:
        return
    raise AssertionError("OrderedLF accepted an invalid regex")


def test_apply_lfs_requires_prompt_column_for_prompt_field():
    lf = RegexLF(name="asks_refund", pattern="refund", field="prompt", vote="high")
    with pytest.raises(ValueError, match="prompt"):
        apply_lfs(frame(["x"]), [lf])
