"""`prefscale export pairs|sft`: the published artifacts as datasets in the seed dataset's format.

The home is `tests/integration/small_home.py`'s (real `select_pairs` outputs, two iterations, seconds; the
base policy is a placeholder folder: nothing here loads a model).
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import polars as pl
import pytest

from prefscale.cli import main
from prefscale.pairs.selection import select_pairs
from prefscale.rewards.curation import curate_sft
from prefscale.tools.export import EXPORT_RECORD, held_out_prompt_ids
from tests.integration.small_home import SmallHome, build_small_home

SEED_COLUMNS = ["prompt_id", "prompt", "chosen", "rejected", "messages", "score_chosen", "score_rejected"]
MESSAGE = datasets.List({"content": datasets.Value("string"), "role": datasets.Value("string")})
SYSTEM = "You are Acme's support assistant."


def _build(root: Path) -> SmallHome:
    policy = root / "policy"
    policy.mkdir(parents=True)
    (policy / "config.json").write_text("{}\n")  # base_policy is only copied by the builder
    return build_small_home(root / "home", policy, iterations=2, upto="preference_pairs")


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> SmallHome:
    return _build(tmp_path_factory.mktemp("export"))


def _export(small: SmallHome, out: Path, *args: str) -> int:
    return main(["export", *args, "--home", str(small.home), "--out", str(out)])


def _nothing_next_to(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def test_pairs_export_loads_with_the_seed_columns(small, tmp_path, capsys):
    out = tmp_path / "pairs"
    assert _export(small, out, "pairs") == 0
    assert "train_iteration_1" in capsys.readouterr().out
    dd = datasets.load_from_disk(str(out))
    assert sorted(dd) == ["test_iteration_1", "test_iteration_2", "train_iteration_1", "train_iteration_2"]
    for i in (1, 2):
        train, test = dd[f"train_iteration_{i}"], dd[f"test_iteration_{i}"]
        assert train.column_names == SEED_COLUMNS
        assert train.features["prompt"] == datasets.Value("string")
        assert train.features["chosen"] == MESSAGE == train.features["messages"]
        assert train.features["score_chosen"] == datasets.Value("float64")
        assert train.num_rows >= 1 and test.num_rows >= 1
        assert not set(train["prompt_id"]) & set(test["prompt_id"])
        pairs = small.pairs[i]
        assert sorted([*train["prompt_id"], *test["prompt_id"]]) == sorted(pairs["prompt_id"].to_list())
        for row in [*train, *test]:
            assert [m["role"] for m in row["chosen"]] == ["user", "assistant"]
            assert [m["role"] for m in row["rejected"]] == ["user", "assistant"]
            assert row["chosen"][0]["content"] == row["prompt"] == row["rejected"][0]["content"]
            assert row["messages"] == row["chosen"]
            assert isinstance(row["score_chosen"], float) and row["score_chosen"] >= row["score_rejected"]
            src = pairs.filter(pl.col("prompt_id") == row["prompt_id"]).row(0, named=True)
            assert row["chosen"][1]["content"] == src["chosen"][0]["content"]
            assert row["rejected"][1]["content"] == src["rejected"][0]["content"]
            assert (row["score_chosen"], row["score_rejected"]) == (
                src["chosen_reward"],
                src["rejected_reward"],
            )
    record = json.loads((out / EXPORT_RECORD).read_text())
    for s in record["sources"]:
        ref = small.refs[("preference_pairs", str(s["iteration"]))]
        assert (s["version"], s["sha256"]) == (ref.version, ref.digest)
    assert small.refs[("preference_pairs", "1")].version in dd["train_iteration_1"].info.description
    assert _nothing_next_to(out) == []


def test_trl_reads_the_prompt_out_of_the_conversation(small, tmp_path):
    """TRL (alignment-handbook's DPO recipe) takes the shared user turn as the prompt, as for the seed."""
    from trl.data_utils import maybe_extract_prompt

    out = tmp_path / "pairs"
    assert _export(small, out, "pairs", "--test-share", "0") == 0
    row = datasets.load_from_disk(str(out))["train_iteration_1"][0]
    ex = maybe_extract_prompt(row)
    assert [m["role"] for m in ex["prompt"]] == ["user"]
    assert [m["role"] for m in ex["chosen"]] == ["assistant"] == [m["role"] for m in ex["rejected"]]


def test_one_iteration_and_no_test_split(small, tmp_path):
    out = tmp_path / "it2"
    assert _export(small, out, "pairs", "--iteration", "2", "--test-share", "0") == 0
    dd = datasets.load_from_disk(str(out))
    assert list(dd) == ["train_iteration_2"]
    assert dd["train_iteration_2"].num_rows == small.pairs[2].height
    assert [s["iteration"] for s in json.loads((out / EXPORT_RECORD).read_text())["sources"]] == [2]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_file_formats_write_one_file_per_split(small, tmp_path, fmt):
    out = tmp_path / fmt
    assert _export(small, out, "pairs", "--format", fmt) == 0
    names = sorted(p.name for p in out.iterdir())
    splits = ["test_iteration_1", "test_iteration_2", "train_iteration_1", "train_iteration_2"]
    assert names == sorted([EXPORT_RECORD, *(f"{s}.{fmt}" for s in splits)])
    loaded = datasets.load_dataset(
        "json" if fmt == "jsonl" else "parquet", data_files={s: str(out / f"{s}.{fmt}") for s in splits}
    )
    hf = tmp_path / "hf"
    assert _export(small, hf, "pairs") == 0
    ref = datasets.load_from_disk(str(hf))
    for s in splits:
        assert loaded[s].column_names == SEED_COLUMNS
        assert loaded[s].to_list() == ref[s].to_list()


def test_the_held_out_share_is_stable_and_sized():
    ids = [f"p{k}" for k in range(1000)]
    test = held_out_prompt_ids(ids, 0.1)
    assert len(test) == 100
    assert held_out_prompt_ids(list(reversed(ids)) + ids[:50], 0.1) == test  # order and duplicates
    assert held_out_prompt_ids(ids, 0.2) > test  # a larger share holds out more of the same order
    assert held_out_prompt_ids(ids, 0) == set()
    assert len(held_out_prompt_ids(["a", "b"], 0.1)) == 1  # at least one, never all
    assert held_out_prompt_ids(["a"], 0.5) == set()


def test_system_turn_dropped_unless_kept(tmp_path):
    small = _build(tmp_path)
    cands = small.store.read_frame("candidates", "1")
    sel = select_pairs(cands, small.rewards[1], system=SYSTEM, seed=1)
    small.store.write_tables("preference_pairs", "1", {"data": sel.pairs, "dropped": sel.dropped})
    out, kept = tmp_path / "default", tmp_path / "kept"
    assert _export(small, out, "pairs", "--iteration", "1", "--test-share", "0") == 0
    assert _export(small, kept, "pairs", "--iteration", "1", "--test-share", "0", "--keep-system") == 0
    row = datasets.load_from_disk(str(out))["train_iteration_1"][0]
    assert [m["role"] for m in row["chosen"]] == ["user", "assistant"]
    row = datasets.load_from_disk(str(kept))["train_iteration_1"][0]
    assert [m["role"] for m in row["chosen"]] == ["system", "user", "assistant"]
    assert row["chosen"][0]["content"] == SYSTEM and row["prompt"] == row["chosen"][1]["content"]


def test_sft_export(tmp_path, capsys):
    small = _build(tmp_path)
    assert _export(small, tmp_path / "none", "sft") == 2
    assert "no curated_sft materialized" in capsys.readouterr().err
    for i in (1, 2):
        cands = small.store.read_frame("candidates", str(i))
        kept = curate_sft(cands, small.rewards[i], top_quantile=0.5, scope="per_prompt", system=SYSTEM)
        small.store.write_frame("curated_sft", str(i), kept)
    out = tmp_path / "sft"
    assert _export(small, out, "sft") == 0
    dd = datasets.load_from_disk(str(out))
    assert sorted(dd) == ["test_iteration_1", "test_iteration_2", "train_iteration_1", "train_iteration_2"]
    for i in (1, 2):
        train, test = dd[f"train_iteration_{i}"], dd[f"test_iteration_{i}"]
        assert train.column_names == ["prompt_id", "prompt", "messages", "score"]
        assert train.features["messages"] == MESSAGE
        assert not set(train["prompt_id"]) & set(test["prompt_id"])
        assert train.num_rows + test.num_rows == small.store.read_frame("curated_sft", str(i)).height
        for row in train:
            assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
            assert row["messages"][0]["content"] == row["prompt"] and isinstance(row["score"], float)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pairs", "--iteration", "3"], "iteration 3 has no preference_pairs (materialized: 1, 2)"),
        (["pairs", "--iteration", "0"], "iteration 0 has no preference_pairs"),
        (["sft"], "no curated_sft materialized under"),
    ],
)
def test_bad_inputs_exit_2_and_write_nothing(small, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert _export(small, out, *args) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_no_home_exits_2(tmp_path, capsys):
    code = main(["export", "pairs", "--home", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    assert code == 2
    assert f"no PREFSCALE_HOME at {tmp_path / 'nowhere'}" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_nothing_materialized_exits_2(tmp_path, capsys):
    (tmp_path / "home" / "artifacts").mkdir(parents=True)
    code = main(["export", "pairs", "--home", str(tmp_path / "home"), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "no preference_pairs materialized" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_non_empty_out_needs_overwrite(small, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine\n")
    assert _export(small, out, "pairs") == 2
    assert f"--out {out} exists and is not empty: pass --overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert _export(small, out, "pairs", "--overwrite") == 0
    assert "keep.txt" not in {p.name for p in out.iterdir()}
    assert "train_iteration_1" in datasets.load_from_disk(str(out))
    assert _nothing_next_to(out) == []
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _export(small, empty, "pairs") == 0  # an empty folder is fine without --overwrite


def test_bad_test_share_is_refused_by_the_parser(small, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _export(small, tmp_path / "out", "pairs", "--test-share", "1")
    assert exc.value.code == 2
    assert "must be in [0, 1)" in capsys.readouterr().err


def test_a_failed_push_exits_1_and_writes_nothing(small, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out"
    assert _export(small, out, "pairs", "--push-to-hub", "someone/prefscale-pairs") == 1
    err = capsys.readouterr().err
    assert "could not push" in err or "cannot push" in err
    assert "'someone/prefscale-pairs'" in err and "HF_HUB_OFFLINE" in err
    assert list(tmp_path.iterdir()) == []
