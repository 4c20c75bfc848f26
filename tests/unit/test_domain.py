from __future__ import annotations

import random
import re

import polars as pl
import pytest

from prefscale.data import domain
from prefscale.evaluation import rubric


def test_prompt_pool_is_deterministic_from_seed():
    a = domain.make_prompt_pool(30, seed=7)
    b = domain.make_prompt_pool(30, seed=7)
    c = domain.make_prompt_pool(30, seed=8)
    assert a.equals(b)
    assert not a.equals(c)


@pytest.mark.parametrize("n", [4, 10, 37, 200])
def test_prompt_pool_has_n_distinct_prompts(n):
    pool = domain.make_prompt_pool(n, seed=3)
    assert pool.columns == ["prompt_id", "task_type", "prompt"]
    assert pool.height == n
    assert pool["prompt"].n_unique() == n
    assert pool["prompt_id"].n_unique() == n
    assert pool["prompt_id"].to_list() == [f"p{i:06d}" for i in range(n)]


def test_prompt_pool_balances_task_types():
    pool = domain.make_prompt_pool(10, seed=0)
    counts = dict(pool.group_by("task_type").len().iter_rows())
    # 10 = 3 + 3 + 2 + 2, the remainder going to the first task types in TASK_TYPES order.
    assert counts == {"troubleshooting": 3, "billing": 3, "plan_question": 2, "complaint": 2}
    big = domain.make_prompt_pool(401, seed=0)
    sizes = big.group_by("task_type").len()["len"].to_list()
    assert set(big["task_type"]) == set(domain.TASK_TYPES)
    assert max(sizes) - min(sizes) <= 1


def test_prompt_pool_task_type_matches_prompt_grammar():
    pool = domain.make_prompt_pool(40, seed=5)
    for task, prompt in pool.select("task_type", "prompt").iter_rows():
        if task == "troubleshooting":
            assert prompt.endswith("what should i do?")
        elif task == "billing":
            assert "bill" in prompt or "fee" in prompt or "autopay" in prompt


@pytest.mark.parametrize("n", [0, 1, 3])
def test_prompt_pool_rejects_fewer_than_four(n):
    with pytest.raises(ValueError, match=">= 4"):
        domain.make_prompt_pool(n, seed=0)


def test_make_response_is_deterministic_given_rng_state():
    prompt = "my router keeps dropping the connection every evening. what should i do?"
    a = [domain.make_response(prompt, "troubleshooting", random.Random(s)) for s in range(20)]
    b = [domain.make_response(prompt, "troubleshooting", random.Random(s)) for s in range(20)]
    assert a == b
    assert len(set(a)) > 10  # different seeds give different styles


def test_make_response_fills_device_slot_from_prompt():
    prompt = "my modem shows a red light every morning. what should i do?"
    mix = domain.StyleMix(acknowledge=1.0, question_back=0.0)
    texts = [domain.make_response(prompt, "troubleshooting", random.Random(s), mix) for s in range(10)]
    assert all("modem" in t for t in texts)


def test_make_response_with_every_preferred_style_satisfies_the_rubric():
    good = domain.StyleMix(
        thanks=1.0,
        acknowledge=1.0,
        company=1.0,
        list_format=1.0,
        followup=1.0,
        question_back=0.0,
        sensitive=0.0,
        adjectives=0.0,
        out_of_order=0.0,
    )
    pool = domain.make_prompt_pool(8, seed=1)
    rng = random.Random(0)
    for prompt, task in pool.select("prompt", "task_type").iter_rows():
        response = domain.make_response(prompt, task, rng, good)
        assert all(rubric.detect(response).values()), response


def test_make_response_with_no_styles_lacks_the_positive_axes():
    none = domain.StyleMix(
        thanks=0.0,
        acknowledge=0.0,
        company=0.0,
        list_format=0.0,
        followup=0.0,
        question_back=0.0,
        sensitive=0.0,
        adjectives=0.0,
        out_of_order=0.0,
    )
    rng = random.Random(0)
    for _ in range(10):
        d = rubric.detect(domain.make_response("i was charged $12 twice. why is that?", "billing", rng, none))
        assert d == {
            "mentions_company": False,
            "list_format": False,
            "follows_workflow": False,
            "no_question_back": True,
            "no_sensitive_words": True,
            "no_heavy_adjectives": True,
            "thanks_customer": False,
        }


def test_make_corpus_is_deterministic_and_sized():
    pool = domain.make_prompt_pool(12, seed=2)
    a = domain.make_corpus(pool, 3, seed=4)
    b = domain.make_corpus(pool, 3, seed=4)
    c = domain.make_corpus(pool, 3, seed=5)
    assert a.columns == ["prompt", "task_type", "response"]
    assert a.height == 36
    assert a.equals(b)
    assert not a.equals(c)
    # Each prompt appears responses_per_prompt times, with its own task type.
    per_prompt = a.group_by("prompt").agg(pl.len(), pl.col("task_type").n_unique().alias("tasks"))
    assert per_prompt["len"].to_list() == [3] * 12
    assert per_prompt["tasks"].to_list() == [1] * 12
    expected = dict(pool.select("prompt", "task_type").iter_rows())
    assert all(expected[p] == t for p, t in a.select("prompt", "task_type").iter_rows())


def test_corpus_covers_every_style_axis():
    corpus = domain.make_corpus(domain.make_prompt_pool(100, seed=0), 3, seed=0)
    responses = corpus["response"].to_list()
    assert len(responses) == 300

    def share(pred):
        return sum(map(pred, responses)) / len(responses)

    axes = {
        "company": lambda r: domain.COMPANY in r,
        "numbered_list": lambda r: re.search(r"(?m)^1\. .+\n2\. ", r) is not None,
        "question_back": lambda r: not rubric.detect(r)["no_question_back"],
        "sensitive": lambda r: not rubric.detect(r)["no_sensitive_words"],
        "heavy_adjectives": lambda r: not rubric.detect(r)["no_heavy_adjectives"],
        "thanks": lambda r: rubric.detect(r)["thanks_customer"],
        "workflow": lambda r: rubric.detect(r)["follows_workflow"],
    }
    for name, pred in axes.items():
        # Every axis is present in some responses and absent in others.
        assert 0.03 < share(pred) < 0.97, name
