"""Shared fixtures for the unit suite: one tiny policy folder, trained once."""

from __future__ import annotations

import pytest

from prefscale.compute import resolve_compute
from prefscale.config.policy import EmbeddedModel
from prefscale.data import domain
from prefscale.policy.tiny import pretrain_tiny_llama

TINY_MODEL = EmbeddedModel(
    vocab_size=400,
    hidden_size=32,
    num_layers=1,
    num_heads=2,
    intermediate_size=64,
    train_steps=30,
    batch_size=16,
    corpus_prompts=40,
    responses_per_prompt=2,
)


@pytest.fixture(scope="session")
def tiny_cfg():
    return TINY_MODEL


@pytest.fixture(scope="session")
def cpu():
    # One thread: the models are tiny, and several threads thrash when other work shares the cores.
    return resolve_compute("cpu", threads=1)


@pytest.fixture(scope="session")
def tiny_corpus():
    return domain.make_corpus(domain.make_prompt_pool(40, 1), 2, 2)


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory, tiny_corpus, cpu):
    """(policy folder, pretrain report) of a ~23k-parameter Llama trained for 30 steps (< 1 s on CPU).

    Session-scoped so the policy, generation and DPO modules share one build; nothing may write into it.
    """
    out = tmp_path_factory.mktemp("tiny_policy") / "base"
    report = pretrain_tiny_llama(tiny_corpus, TINY_MODEL, out, cpu, seed=0)
    return out, report
