"""The recipe's system prompt (`policy.system_prompt`): validated, and the same system message wherever the policy
answers a prompt (sampling, DPO pairs, curated SFT, endpoint requests)."""

from __future__ import annotations

import polars as pl
import pytest

from prefscale.config.base import RecipeError
from prefscale.config.recipe import load_recipe
from prefscale.data import domain
from prefscale.generation.base import Sampling
from prefscale.generation.endpoint_backend import EndpointBackend
from prefscale.generation.transformers_backend import generate_transformers
from prefscale.pairs.selection import select_pairs
from prefscale.policy.chat import chat_text, check_system_prompt, prompt_messages, system_params
from prefscale.policy.io import check_policy_system_prompt, load_policy
from prefscale.rewards.curation import curate_sft

SYSTEM = "You are Lumora's support assistant."


@pytest.fixture(scope="module")
def loaded(tiny_policy, cpu):
    return load_policy(tiny_policy[0], cpu)


def test_messages_and_chat_text_put_the_system_message_first(loaded):
    _, tok = loaded
    assert prompt_messages("hi") == [{"role": "user", "content": "hi"}]
    assert prompt_messages("hi", SYSTEM) == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "hi"},
    ]
    plain, with_system = chat_text(tok, "hi"), chat_text(tok, "hi", system=SYSTEM)
    assert with_system.startswith(SYSTEM) and with_system.endswith(plain)
    assert chat_text(tok, "hi", "ok", system=SYSTEM).startswith(SYSTEM)
    assert system_params(None) == {} and system_params(SYSTEM) == {"system_prompt": SYSTEM}


def test_a_system_prompt_too_long_for_max_length_is_named(loaded):
    _, tok = loaded
    assert check_system_prompt(tok, None, 64) == 0
    assert 0 < check_system_prompt(tok, SYSTEM, 256) < 64
    with pytest.raises(ValueError, match=r"policy.system_prompt is \d+ tokens .*dpo.max_length=64"):
        check_system_prompt(tok, "word " * 200, 64)


def test_the_policy_folders_tokenizer_checks_the_system_prompt(tiny_policy, loaded):
    folder, (_, tok) = tiny_policy[0], loaded
    assert check_policy_system_prompt(folder, None, 64) == 0
    assert check_policy_system_prompt(folder, SYSTEM, 256) == check_system_prompt(tok, SYSTEM, 256)
    with pytest.raises(ValueError, match=r"dpo.max_length=64"):
        check_policy_system_prompt(folder, "word " * 200, 64)


@pytest.mark.parametrize(
    ("value", "match"),
    [("   ", "policy.system_prompt is empty"), ("x" * 4001, "at most 4000 characters")],
)
def test_recipe_rejects_a_bad_system_prompt(value, match):
    with pytest.raises(RecipeError, match=match):
        load_recipe("embedded", {"policy": {"system_prompt": value}})


def test_recipe_dtype_choices():
    assert load_recipe("embedded").policy.dtype == "auto"
    with pytest.raises(RecipeError, match="dtype"):
        load_recipe("embedded", {"policy": {"dtype": "float16"}})


def test_sampling_reads_the_system_message(loaded):
    """The transformers backend formats each prompt after the system message: other inputs, other samples."""
    model, tok = loaded
    prompts = domain.make_prompt_pool(4, seed=5)
    base = Sampling(max_new_tokens=12, temperature=1.0)
    plain, _ = generate_transformers(model, tok, prompts, 2, base, seed=1)
    again, _ = generate_transformers(model, tok, prompts, 2, base, seed=1)
    steered, _ = generate_transformers(model, tok, prompts, 2, Sampling(12, 1.0, 1.0, (), SYSTEM), seed=1)
    assert plain["response"].to_list() == again["response"].to_list()
    assert plain["response"].to_list() != steered["response"].to_list()


def test_endpoint_requests_carry_the_system_message():
    class Settings:
        base_url, model, api_key_env = "http://127.0.0.1:1/v1", "policy", None

    body = EndpointBackend(Settings(), Sampling(8, system=SYSTEM)).body("hello", seed=3)
    assert body["messages"] == prompt_messages("hello", SYSTEM)


def _candidates() -> tuple[pl.DataFrame, pl.DataFrame]:
    cands = pl.DataFrame(
        {
            "candidate_id": ["p-0", "p-1"],
            "prompt_id": ["p", "p"],
            "sample_idx": [0, 1],
            "task_type": ["billing", "billing"],
            "prompt": ["why was i charged twice?", "why was i charged twice?"],
            "response": ["Thank you, Lumora will refund it.", "No."],
            "n_tokens": [8, 1],
            "finish_reason": ["stop", "stop"],
        },
        schema_overrides={"sample_idx": pl.Int32, "n_tokens": pl.Int32},
    )
    rewards = pl.DataFrame({"candidate_id": ["p-0", "p-1"], "reward": [0.9, 0.1], "rank": [1, 2]})
    return cands, rewards.with_columns(pl.col("rank").cast(pl.Int32))


def test_pairs_and_curated_sft_open_with_the_system_message():
    cands, rewards = _candidates()
    sel = select_pairs(cands, rewards, system=SYSTEM)
    assert sel.pairs["prompt"][0].to_list() == prompt_messages("why was i charged twice?", SYSTEM)
    assert sel.pairs["chosen"][0].to_list() == [
        {"role": "assistant", "content": "Thank you, Lumora will refund it."}
    ]
    plain = select_pairs(cands, rewards)
    assert plain.pairs["prompt"][0].to_list() == prompt_messages("why was i charged twice?")
    sft = curate_sft(cands, rewards, top_quantile=0.5, system=SYSTEM)
    roles = [m["role"] for m in sft["messages"][0].to_list()]
    assert roles == ["system", "user", "assistant"] and sft["messages"][0][0]["content"] == SYSTEM
