from __future__ import annotations

import hashlib
import json
import re

import polars as pl
import pytest

from prefscale.config.data import DataConfig
from prefscale.data.prompts import PromptsFileError, build_pool, load_prompts_file, split_pool


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --- load_prompts_file: formats -----------------------------------------------------------------------------


def test_load_jsonl_with_task_type_strips_whitespace(tmp_path):
    p = _jsonl(
        tmp_path / "p.jsonl",
        [
            {"prompt": "  my router is slow  ", "task_type": "troubleshooting"},
            {"prompt": "\twhy is my bill high?\n", "task_type": "billing"},
        ],
    )
    df = load_prompts_file(p)
    assert df.columns == ["prompt", "task_type"]
    assert df.schema == {"prompt": pl.String, "task_type": pl.String}
    assert df["prompt"].to_list() == ["my router is slow", "why is my bill high?"]
    assert df["task_type"].to_list() == ["troubleshooting", "billing"]


def test_load_jsonl_without_task_type_defaults_to_general(tmp_path):
    p = _jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}, {"prompt": " b "}])
    df = load_prompts_file(str(p))  # a str path works too
    assert df.to_dicts() == [
        {"prompt": "a", "task_type": "general"},
        {"prompt": "b", "task_type": "general"},
    ]


def test_load_jsonl_null_task_type_defaults_to_general(tmp_path):
    p = _jsonl(
        tmp_path / "p.jsonl", [{"prompt": "a", "task_type": None}, {"prompt": "b", "task_type": "billing"}]
    )
    assert load_prompts_file(p)["task_type"].to_list() == ["general", "billing"]


def test_load_csv_with_and_without_task_type(tmp_path):
    with_tt = tmp_path / "with.csv"
    with_tt.write_text('prompt,task_type,extra\n"  hello there ",complaint,1\nsecond,billing,2\n')
    df = load_prompts_file(with_tt)
    assert df.to_dicts() == [
        {"prompt": "hello there", "task_type": "complaint"},
        {"prompt": "second", "task_type": "billing"},
    ]

    without = tmp_path / "without.csv"
    without.write_text('prompt\n" spaced "\nplain\n')
    df = load_prompts_file(without)
    assert df.to_dicts() == [
        {"prompt": "spaced", "task_type": "general"},
        {"prompt": "plain", "task_type": "general"},
    ]


def test_load_parquet_with_and_without_task_type(tmp_path):
    with_tt = tmp_path / "with.parquet"
    pl.DataFrame({"prompt": [" x ", "y"], "task_type": ["billing", "complaint"]}).write_parquet(with_tt)
    assert load_prompts_file(with_tt).to_dicts() == [
        {"prompt": "x", "task_type": "billing"},
        {"prompt": "y", "task_type": "complaint"},
    ]

    without = tmp_path / "without.parquet"
    pl.DataFrame({"id": [1], "prompt": ["only one\n"]}).write_parquet(without)
    assert load_prompts_file(without).to_dicts() == [{"prompt": "only one", "task_type": "general"}]


# --- load_prompts_file: errors ------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    p = tmp_path / "nope.jsonl"
    with pytest.raises(PromptsFileError, match="prompts file not found") as exc:
        load_prompts_file(p)
    assert str(p) in str(exc.value)
    assert isinstance(exc.value, ValueError)


def test_directory_is_not_a_file(tmp_path):
    d = tmp_path / "dir.jsonl"
    d.mkdir()
    with pytest.raises(PromptsFileError, match="not found"):
        load_prompts_file(d)


@pytest.mark.parametrize("suffix", [".txt", ".json", ".tsv", ""])
def test_unsupported_suffix(tmp_path, suffix):
    p = tmp_path / f"prompts{suffix}"
    p.write_text('{"prompt": "x"}\n')
    with pytest.raises(PromptsFileError, match="unsupported format") as exc:
        load_prompts_file(p)
    msg = str(exc.value)
    assert repr(suffix) in msg
    assert ".jsonl" in msg and ".csv" in msg and ".parquet" in msg


def test_empty_csv_with_header_only(tmp_path):
    p = tmp_path / "empty.csv"
    p.write_text("prompt,task_type\n")
    with pytest.raises(PromptsFileError, match=r"is empty$") as exc:
        load_prompts_file(p)
    assert str(p) in str(exc.value)


def test_empty_parquet_zero_rows(tmp_path):
    p = tmp_path / "empty.parquet"
    pl.DataFrame({"prompt": []}, schema={"prompt": pl.String}).write_parquet(p)
    with pytest.raises(PromptsFileError, match=r"is empty$"):
        load_prompts_file(p)


def test_zero_byte_jsonl_is_rejected(tmp_path):
    p = tmp_path / "zero.jsonl"
    p.write_bytes(b"")
    with pytest.raises(PromptsFileError) as exc:
        load_prompts_file(p)
    assert str(p) in str(exc.value)


def test_zero_byte_jsonl_says_empty(tmp_path):
    p = tmp_path / "zero.jsonl"
    p.write_bytes(b"")
    with pytest.raises(PromptsFileError, match=r"is empty$"):
        load_prompts_file(p)


def test_no_prompt_column(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("text,task_type\nhello,billing\n")
    with pytest.raises(PromptsFileError, match="has no 'prompt' column") as exc:
        load_prompts_file(p)
    assert "['text', 'task_type']" in str(exc.value)


def test_non_text_prompt_column(tmp_path):
    p = _jsonl(tmp_path / "p.jsonl", [{"prompt": 1}, {"prompt": 2}])
    with pytest.raises(PromptsFileError, match="line 1: 'prompt' must be text, got int"):
        load_prompts_file(p)

    c = tmp_path / "p.csv"
    c.write_text("prompt\n1.5\n2.5\n")
    with pytest.raises(PromptsFileError, match="'prompt' must be text, got Float64"):
        load_prompts_file(c)


@pytest.mark.parametrize(
    ("rows", "row_no"),
    [
        ([{"prompt": "ok"}, {"prompt": "   "}, {"prompt": "fine"}], 2),
        ([{"prompt": ""}, {"prompt": "ok"}], 1),
        ([{"prompt": "a"}, {"prompt": "b"}, {"prompt": None}], 3),
        ([{"prompt": "a"}, {"prompt": "\t\n"}, {"prompt": ""}], 2),  # the first bad row is named
    ],
)
def test_blank_prompt_names_one_based_row(tmp_path, rows, row_no):
    p = _jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(PromptsFileError, match=rf"empty prompt at row {row_no} \(line {row_no}\)$"):
        load_prompts_file(p)


def test_blank_prompt_in_csv(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text('prompt\nfirst\nsecond\n""\n')
    with pytest.raises(PromptsFileError, match=r"empty prompt at row 3$"):
        load_prompts_file(p)


def test_all_null_prompts_jsonl_names_row(tmp_path):
    p = _jsonl(tmp_path / "p.jsonl", [{"prompt": None}])
    with pytest.raises(PromptsFileError, match=r"empty prompt at row 1 \(line 1\)$"):
        load_prompts_file(p)


def test_malformed_jsonl(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"prompt": "fine"}\n{"prompt": "broken\n{"prompt": "also fine"}\n')
    with pytest.raises(PromptsFileError, match="is malformed") as exc:
        load_prompts_file(p)
    assert str(p) in str(exc.value)
    assert exc.value.__cause__ is None  # the polars error is summarised, not chained


# --- build_pool ---------------------------------------------------------------------------------------------


def test_build_pool_embedded_is_deterministic():
    cfg = DataConfig(source="embedded", pool_size=40)
    a = build_pool(cfg, seed=3)
    b = build_pool(cfg, seed=3)
    assert a.columns == ["prompt_id", "task_type", "prompt"]
    assert a.schema == {"prompt_id": pl.String, "task_type": pl.String, "prompt": pl.String}
    assert a.equals(b)
    assert a.height == 40
    assert a["prompt_id"].n_unique() == 40
    assert all(re.fullmatch(r"p[0-9a-f]{12}", i) for i in a["prompt_id"])
    assert set(a["task_type"]) == {"troubleshooting", "billing", "plan_question", "complaint"}
    assert not a.equals(build_pool(cfg, seed=4))


def test_build_pool_file_dedups_case_and_whitespace(tmp_path):
    p = _jsonl(
        tmp_path / "p.jsonl",
        [
            {"prompt": "Hello  World", "task_type": "complaint"},
            {"prompt": "hello world", "task_type": "billing"},
            {"prompt": "  HELLO\tworld "},
            {"prompt": "Goodbye"},
            {"prompt": "goodbye"},
            {"prompt": "something else"},
        ],
    )
    pool = build_pool(DataConfig(source="file", path=str(p)), seed=0)
    # first occurrence wins, order is kept
    assert pool["prompt"].to_list() == ["Hello  World", "Goodbye", "something else"]
    assert pool["task_type"].to_list() == ["complaint", "general", "general"]
    assert pool["prompt_id"].n_unique() == 3


def test_prompt_id_is_stable_content_hash(tmp_path):
    a = _jsonl(tmp_path / "a.jsonl", [{"prompt": "first"}, {"prompt": "shared text"}])
    b = _jsonl(tmp_path / "b.jsonl", [{"prompt": "shared text"}, {"prompt": "other"}])
    pa = build_pool(DataConfig(source="file", path=str(a)), seed=1)
    pb = build_pool(DataConfig(source="file", path=str(b)), seed=99)
    id_a = pa.filter(pl.col("prompt") == "shared text")["prompt_id"].item()
    id_b = pb.filter(pl.col("prompt") == "shared text")["prompt_id"].item()
    assert id_a == id_b
    assert id_a == "p" + hashlib.sha256(b"shared text").hexdigest()[:12]
    assert pa.filter(pl.col("prompt") == "first")["prompt_id"].item() != id_a


def test_build_pool_file_errors_propagate(tmp_path):
    with pytest.raises(PromptsFileError, match="not found"):
        build_pool(DataConfig(source="file", path=str(tmp_path / "missing.csv")), seed=0)


# --- split_pool ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool():
    return build_pool(DataConfig(source="embedded", pool_size=40), seed=5)


def test_split_pool_disjoint_and_sized(pool):
    cfg = DataConfig(pool_size=40, prompts_per_iteration=7, heldout_size=5)
    parts = split_pool(pool, cfg, iterations=3, seed=11)
    assert sorted(parts) == ["1", "2", "3", "heldout"]
    assert parts["heldout"].height == 5
    for k in ("1", "2", "3"):
        assert parts[k].height == 7
        assert parts[k].columns == pool.columns
    ids = {k: set(v["prompt_id"]) for k, v in parts.items()}
    names = list(ids)
    for i, a in enumerate(names):
        assert len(ids[a]) == parts[a].height  # no duplicates inside a split
        for b in names[i + 1 :]:
            assert not ids[a] & ids[b], (a, b)
    assert set().union(*ids.values()) <= set(pool["prompt_id"])
    # each split is sorted by prompt_id
    for v in parts.values():
        assert v["prompt_id"].to_list() == sorted(v["prompt_id"].to_list())


def test_split_pool_same_seed_same_split(pool):
    cfg = DataConfig(prompts_per_iteration=10, heldout_size=6)
    a = split_pool(pool, cfg, iterations=2, seed=7)
    b = split_pool(pool, cfg, iterations=2, seed=7)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].equals(b[k])
    c = split_pool(pool, cfg, iterations=2, seed=8)
    assert any(not a[k].equals(c[k]) for k in a)


def test_split_pool_uses_whole_pool_when_exact(pool):
    cfg = DataConfig(prompts_per_iteration=10, heldout_size=10)
    parts = split_pool(pool, cfg, iterations=3, seed=0)
    assert set().union(*(set(v["prompt_id"]) for v in parts.values())) == set(pool["prompt_id"])


def test_split_pool_too_small_names_numbers(pool):
    cfg = DataConfig(prompts_per_iteration=12, heldout_size=5)
    with pytest.raises(ValueError) as exc:
        split_pool(pool, cfg, iterations=3, seed=0)
    msg = str(exc.value)
    assert "40 distinct prompts" in msg
    assert "3 iterations x 12 + 5 held-out need 41" in msg


# --- reference answers (`data.reference_column`) -------------------------------------------------------------


def test_a_reference_column_is_kept_through_the_pool_and_its_bad_values_are_named(tmp_path):
    rows = [
        {"prompt": "Why is the sky blue?", "reference": "Rayleigh scattering."},
        {"prompt": "why is the SKY blue?", "reference": "a duplicate: dropped with its prompt"},
        {"prompt": "Name a prime.", "reference": None},
        {"prompt": "Say hi."},
    ]
    p = _jsonl(tmp_path / "p.jsonl", rows)
    assert load_prompts_file(p).columns == ["prompt", "task_type", "reference"]
    pool = build_pool(DataConfig(source="file", path=str(p)), seed=0)
    assert pool.columns == ["prompt_id", "task_type", "prompt", "reference"]
    assert pool["reference"].to_list() == ["Rayleigh scattering.", None, None]
    csv = tmp_path / "p.csv"
    pl.DataFrame({"prompt": ["a", "b"], "gold": ["A.", None]}).write_csv(csv)
    assert load_prompts_file(csv, "gold")["reference"].to_list() == ["A.", None]
    assert "reference" not in load_prompts_file(csv).columns  # no `reference` column: no references
    with pytest.raises(PromptsFileError, match=r"has no column 'answer' \(data.reference_column\)"):
        load_prompts_file(csv, "answer")
    bad = _jsonl(tmp_path / "bad.jsonl", [{"prompt": "a", "reference": "x"}, {"prompt": "b", "reference": 2}])
    with pytest.raises(PromptsFileError, match="line 2: 'reference' must be text or null, got int"):
        load_prompts_file(bad)
    nums = tmp_path / "nums.csv"
    pl.DataFrame({"prompt": ["a"], "reference": [1]}).write_csv(nums)
    with pytest.raises(PromptsFileError, match="'reference' must be text, got Int64"):
        load_prompts_file(nums)


def test_reference_column_is_refused_for_the_embedded_domain():
    with pytest.raises(
        ValueError, match=r"data\.reference_column is only used by sources 'file' and 'hf_dataset'"
    ):
        DataConfig(source="embedded", reference_column="gold")
    assert "reference" not in build_pool(DataConfig(source="embedded", pool_size=8), seed=0).columns
