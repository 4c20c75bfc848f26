from __future__ import annotations

import math
import shutil

import polars as pl
import pytest
from transformers import LlamaForCausalLM

from prefscale.data import domain
from prefscale.generation.base import CANDIDATE_SCHEMA, generation_stats, timed
from prefscale.generation.transformers_backend import sample_responses
from prefscale.policy.chat import ASSISTANT, CHAT_TEMPLATE, END, PAD, chat_text
from prefscale.policy.io import folder_digest, load_policy
from prefscale.policy.tiny import pretrain_tiny_llama


@pytest.fixture(scope="module")
def loaded(tiny_policy, cpu):
    return load_policy(tiny_policy[0], cpu)


@pytest.fixture(scope="module")
def prompts():
    return domain.make_prompt_pool(6, seed=3)


# --- policy -------------------------------------------------------------------------------------------------


def test_pretrain_report(tiny_policy, tiny_corpus):
    _, report = tiny_policy
    assert report.steps == 30
    assert report.n_examples == tiny_corpus.height == 80
    assert math.isfinite(report.first_loss) and math.isfinite(report.final_loss)
    assert report.final_loss < report.first_loss
    assert 0 < report.n_parameters < 100_000


def test_policy_folder_contents(tiny_policy):
    folder, _ = tiny_policy
    files = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= files


def test_policy_reloads(loaded, tiny_cfg):
    model, tokenizer = loaded
    assert isinstance(model, LlamaForCausalLM)
    assert not model.training
    assert model.config.hidden_size == tiny_cfg.hidden_size
    assert model.config.num_hidden_layers == tiny_cfg.num_layers
    assert model.config.vocab_size == len(tokenizer)
    assert len(tokenizer) <= tiny_cfg.vocab_size
    assert tokenizer.padding_side == "left"
    assert tokenizer.eos_token == END
    assert tokenizer.pad_token == PAD
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id


def test_chat_template(loaded):
    _, tokenizer = loaded
    assert tokenizer.chat_template == CHAT_TEMPLATE
    text = chat_text(tokenizer, "my router is slow")
    assert text == "<|user|>\nmy router is slow\n<|assistant|>\n"
    assert text.endswith(ASSISTANT + "\n")
    assert chat_text(tokenizer, "hi", "hello") == "<|user|>\nhi\n<|assistant|>\nhello<|end|>"


def test_prompt_tokens_prefix_of_full_tokens(loaded, tiny_corpus):
    _, tokenizer = loaded
    for prompt, response in tiny_corpus.select("prompt", "response").head(10).iter_rows():
        p = tokenizer(chat_text(tokenizer, prompt), add_special_tokens=False)["input_ids"]
        full = tokenizer(chat_text(tokenizer, prompt, response), add_special_tokens=False)["input_ids"]
        assert len(full) > len(p)
        assert full[: len(p)] == p
        assert full[-1] == tokenizer.eos_token_id


def test_special_tokens_are_single_tokens(loaded):
    _, tokenizer = loaded
    ids = tokenizer("<|user|><|assistant|><|end|>", add_special_tokens=False)["input_ids"]
    assert len(ids) == 3


def test_load_policy_missing_folder(tmp_path, cpu):
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        load_policy(tmp_path / "nope", cpu)
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        load_policy(tmp_path, cpu)


def test_pretrain_rejects_empty_corpus(tmp_path, cpu, tiny_corpus, tiny_cfg):
    with pytest.raises(ValueError, match="empty"):
        pretrain_tiny_llama(tiny_corpus.head(0), tiny_cfg, tmp_path / "m", cpu, seed=0)
    assert not (tmp_path / "m").exists()


def test_folder_digest(tiny_policy, tmp_path):
    folder, _ = tiny_policy
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    assert folder_digest(copy) == folder_digest(folder)
    assert len(folder_digest(folder)) == 64
    with (copy / "config.json").open("a") as f:
        f.write("\n")
    assert folder_digest(copy) != folder_digest(folder)


# --- generation ---------------------------------------------------------------------------------------------


def test_sample_responses_shape_and_schema(loaded, prompts):
    model, tokenizer = loaded
    out = sample_responses(model, tokenizer, prompts, 3, max_new_tokens=16, batch_size=5, seed=1)
    assert out.schema == pl.Schema(CANDIDATE_SCHEMA)
    assert out.height == 18
    counts = dict(out.group_by("prompt_id").len().iter_rows())
    assert counts == dict.fromkeys(prompts["prompt_id"], 3)
    assert out["sample_idx"].to_list() == [0, 1, 2] * 6
    assert out["candidate_id"].to_list() == [f"{p}-{k}" for p in prompts["prompt_id"] for k in range(3)]
    expected = {pid: (t, p) for pid, t, p in prompts.iter_rows()}
    assert all(
        expected[pid] == (t, p) for pid, t, p in out.select("prompt_id", "task_type", "prompt").iter_rows()
    )
    assert set(out["finish_reason"]) <= {"stop", "length"}
    assert out["n_tokens"].max() <= 16
    assert out["n_tokens"].min() >= 0
    # a response that stopped did so before the limit
    assert (out.filter(pl.col("finish_reason") == "stop")["n_tokens"] < 16).all()
    assert not any("<|end|>" in r or "<|pad|>" in r for r in out["response"])


def test_sample_responses_is_seeded(loaded, prompts):
    model, tokenizer = loaded
    a = sample_responses(model, tokenizer, prompts, 2, max_new_tokens=12, seed=7)
    b = sample_responses(model, tokenizer, prompts, 2, max_new_tokens=12, seed=7)
    c = sample_responses(model, tokenizer, prompts, 2, max_new_tokens=12, seed=8)
    assert a.drop("latency_s").equals(b.drop("latency_s"))  # latency is a measurement, the rest is seeded
    assert a["response"].to_list() != c["response"].to_list()
    assert (a["latency_s"] >= 0).all()


def test_sample_responses_validates_input(loaded, prompts):
    model, tokenizer = loaded
    with pytest.raises(ValueError, match="task_type"):
        sample_responses(model, tokenizer, prompts.drop("task_type"), 1, max_new_tokens=4)
    with pytest.raises(ValueError, match="n must be >= 1"):
        sample_responses(model, tokenizer, prompts, 0, max_new_tokens=4)


def test_generation_stats():
    cands = pl.DataFrame(
        {
            "response": ["a", "a", "b", "c"],
            "n_tokens": [2, 4, 6, 8],
            "finish_reason": ["stop", "length", "stop", "stop"],
        }
    )
    assert generation_stats(cands) == {
        "n_candidates": 4.0,
        "mean_tokens": 5.0,
        "unfinished_rate": 0.25,
        "distinct_rate": 0.75,
    }
    assert generation_stats(cands, seconds=2.0)["tokens_per_second"] == pytest.approx(10.0)


def test_timed():
    result, seconds = timed(sum, [1, 2, 3])
    assert result == 6
    assert seconds >= 0
