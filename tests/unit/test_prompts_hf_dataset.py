"""`data.source: hf_dataset`: prompts through `datasets.load_dataset`, with local stand-ins for hub datasets."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from prefscale.config.data import DataConfig
from prefscale.config.recipe import load_recipe
from prefscale.data.prompts import PromptsFileError, build_pool, load_hf_dataset, split_pool
from prefscale.labeling.task_types import TaskTypeRule, tag_task_types


def _ultrafeedback_like(n: int) -> list[dict]:
    """Rows shaped like HuggingFaceH4/ultrafeedback_binarized: prompt, chosen/rejected chat lists, scores."""
    rows = []
    for i in range(n):
        prompt = (
            f"Question {i}: how do I sort a list of {i} numbers in Python?" if i % 3 else f"Write a poem {i}"
        )
        rows.append(
            {
                "prompt": prompt,
                "prompt_id": f"{i:04d}",
                "chosen": [{"role": "user", "content": prompt}, {"role": "assistant", "content": "good"}],
                "rejected": [{"role": "user", "content": prompt}, {"role": "assistant", "content": "bad"}],
                "score_chosen": 8.0,
                "score_rejected": 3.0,
            }
        )
    return rows


@pytest.fixture
def jsonl(tmp_path) -> Path:
    p = tmp_path / "uf.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in _ultrafeedback_like(30)))
    return p


@pytest.fixture
def dataset_folder(tmp_path) -> Path:
    """A local dataset folder with named split files, as a hub snapshot has (train_prefs / test_prefs)."""
    folder = tmp_path / "ultrafeedback_binarized"
    (folder / "data").mkdir(parents=True)
    rows = _ultrafeedback_like(40)
    pl.DataFrame(rows[:30]).write_parquet(folder / "data" / "train_prefs-00000-of-00001.parquet")
    pl.DataFrame(rows[30:]).write_parquet(folder / "data" / "test_prefs-00000-of-00001.parquet")
    return folder


def test_loads_a_local_data_file(jsonl):
    df = load_hf_dataset(DataConfig(source="hf_dataset", dataset=str(jsonl), split="train"))
    assert df.columns == ["prompt", "task_type"]
    assert df.height == 30
    assert df["prompt"][1].startswith("Question 1:")
    assert set(df["task_type"]) == {"general"}


def test_loads_a_split_of_a_local_dataset_folder(dataset_folder):
    train = load_hf_dataset(DataConfig(source="hf_dataset", dataset=str(dataset_folder), split="train_prefs"))
    test = load_hf_dataset(DataConfig(source="hf_dataset", dataset=str(dataset_folder), split="test_prefs"))
    assert (train.height, test.height) == (30, 10)
    assert not set(train["prompt"]) & set(test["prompt"])


def test_split_slicing_limits_the_rows(dataset_folder):
    df = load_hf_dataset(
        DataConfig(source="hf_dataset", dataset=str(dataset_folder), split="train_prefs[:12]")
    )
    assert df.height == 12


def test_chat_message_column_takes_the_first_user_turn(jsonl):
    df = load_hf_dataset(DataConfig(source="hf_dataset", dataset=str(jsonl), column="chosen"))
    assert df["prompt"][2] == _ultrafeedback_like(3)[2]["prompt"]


def test_missing_column_names_the_columns(jsonl):
    with pytest.raises(PromptsFileError, match=r"has no column 'instruction' \(columns: \['prompt'"):
        load_hf_dataset(DataConfig(source="hf_dataset", dataset=str(jsonl), column="instruction"))


def test_unknown_split_names_dataset_and_split(dataset_folder):
    with pytest.raises(
        PromptsFileError,
        match=r"could not load dataset .*ultrafeedback_binarized' \(split 'nope'\): Unknown split",
    ):
        load_hf_dataset(DataConfig(source="hf_dataset", dataset=str(dataset_folder), split="nope"))


def test_missing_local_dataset_is_named(tmp_path):
    with pytest.raises(PromptsFileError, match=r"dataset not found: \./no/such/folder"):
        load_hf_dataset(DataConfig(source="hf_dataset", dataset="./no/such/folder"))


def test_hub_id_without_network_fails_with_the_dataset_named(monkeypatch, tmp_path):
    import datasets.config
    import huggingface_hub.constants

    # Offline as `make test` runs (the libraries read these settings at import, so patch the constants too).
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(
        datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf"
    )  # nothing cached to fall back on
    with pytest.raises(PromptsFileError, match="could not load dataset 'someorg/not-cached-anywhere'"):
        load_hf_dataset(DataConfig(source="hf_dataset", dataset="someorg/not-cached-anywhere"))


def test_empty_prompt_is_reported_with_its_row(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps({"prompt": "fine"}) + "\n" + json.dumps({"prompt": "  "}) + "\n")
    with pytest.raises(PromptsFileError, match="empty or non-text prompt at row 2"):
        load_hf_dataset(DataConfig(source="hf_dataset", dataset=str(p)))


def test_pool_shards_and_task_types_from_a_dataset(dataset_folder):
    cfg = DataConfig(
        source="hf_dataset",
        dataset=str(dataset_folder),
        split="train_prefs",
        prompts_per_iteration=8,
        heldout_size=4,
    )
    rules = (
        TaskTypeRule(name="coding", pattern=r"\bpython\b"),
        TaskTypeRule(name="creative", pattern="poem"),
    )
    pool = build_pool(cfg, seed=3, task_rules=rules)
    assert pool.height == 30
    assert set(pool["task_type"]) == {"coding", "creative"}
    parts = split_pool(pool, cfg, iterations=3, seed=3)
    ids = [set(parts[k]["prompt_id"]) for k in ("heldout", "1", "2", "3")]
    assert sum(len(s) for s in ids) == len(set().union(*ids)) == 28  # disjoint


def test_tag_task_types_keeps_given_types():
    df = pl.DataFrame(
        {"prompt": ["write a poem", "write a poem", "hello"], "task_type": ["general", "x", None]}
    )
    out = tag_task_types(df, (TaskTypeRule(name="creative", pattern="poem"),))
    assert out["task_type"].to_list() == ["creative", "x", "general"]
    assert tag_task_types(df, ()) is df


def test_snorkel_recipe_loads_prompts_with_the_same_code(dataset_folder):
    # The recipe's own data settings, with the hub id swapped for a local stand-in of the same layout.
    r = load_recipe(
        "snorkel-mistral-pairrm",
        overrides={"data": {"dataset": str(dataset_folder), "prompts_per_iteration": 8, "heldout_size": 4}},
    )
    pool = build_pool(r.data, r.seed, r.labeling.task_types)
    parts = split_pool(pool, r.data, r.iterations, r.seed)
    assert [parts[k].height for k in ("heldout", "1", "2", "3")] == [4, 8, 8, 8]
    assert "coding" in set(pool["task_type"])  # the helpfulness pack's rules tagged them


def test_a_reference_column_of_the_dataset_is_kept(tmp_path):
    rows = [{"prompt": f"Question {i}?", "answer": f"Answer {i}." if i % 2 else None} for i in range(4)]
    p = tmp_path / "qa.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    df = load_hf_dataset(DataConfig(source="hf_dataset", dataset=str(p), reference_column="answer"))
    assert df["reference"].to_list() == [None, "Answer 1.", None, "Answer 3."]
    assert "reference" not in load_hf_dataset(DataConfig(source="hf_dataset", dataset=str(p))).columns
    with pytest.raises(PromptsFileError, match="has no column 'gold'"):
        load_hf_dataset(DataConfig(source="hf_dataset", dataset=str(p), reference_column="gold"))
