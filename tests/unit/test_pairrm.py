"""PairRM through llm-blender under transformers 5: the shim, a tiny ranker in llm-blender's format, the matrix."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import polars as pl
import pytest

from prefscale.pairs.selection import select_pairs
from prefscale.rewards.base import REWARD_SCHEMA
from prefscale.rewards.pairrm import (
    BACKBONE_DIR,
    PAIRRM_REWARD_SCHEMA,
    PATCHED_ON_IMPORT,
    build_tiny_ranker,
    ensure_llm_blender_compat,
    load_ranker,
    pairrm_matrices,
    pairrm_matrix,
    pairrm_rewards,
    pairrm_scores,
    win_probabilities,
)

# Prompts with 4, 3 and 4 candidates: unequal sizes exercise the batching by size.
PROMPTS = ["How do I reset my router?", "Why did my bill go up?", "Can I keep my number?"]
CANDIDATES = [
    ["Restart it.", "Unplug the modem, wait a minute, plug it back in.", "I don't know.", "Call us."],
    ["The promotion ended.", "Prices rise every year.", "Sorry!"],
    ["Yes, porting is free.", "No.", "Yes: ask your old provider for a code, then call us.", "Maybe."],
]


@pytest.fixture(scope="module")
def offline_hub():
    """No network: the env var for subprocesses and anything imported later, the constant for what is loaded."""
    import huggingface_hub.constants

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        yield


@pytest.fixture(scope="module")
def tiny_ranker(tmp_path_factory, offline_hub, cpu):
    return build_tiny_ranker(tmp_path_factory.mktemp("pairrm") / "tiny-pairrm")


@pytest.fixture(scope="module")
def blender(tiny_ranker):
    return load_ranker(tiny_ranker, "cpu")


@pytest.fixture(scope="module")
def matrices(blender):
    return pairrm_matrix(blender, PROMPTS, CANDIDATES, batch_size=8)


# --- the shim -----------------------------------------------------------------------------------------------


def test_shim_makes_llm_blender_import():
    import importlib

    import transformers.utils.hub
    from huggingface_hub.constants import HF_HUB_CACHE
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    # transformers 5 lacks both, so importing prefscale.pairrm patched both (before llm_blender was imported)
    assert PATCHED_ON_IMPORT == [
        "transformers.utils.hub.TRANSFORMERS_CACHE",
        "PreTrainedTokenizerBase.batch_encode_plus",
    ]
    llm_blender = importlib.import_module("llm_blender")
    assert callable(llm_blender.Blender.loadranker)
    assert sys.modules["llm_blender.blender.blender"].TRANSFORMERS_CACHE == HF_HUB_CACHE
    assert transformers.utils.hub.TRANSFORMERS_CACHE == HF_HUB_CACHE
    assert callable(PreTrainedTokenizerBase.batch_encode_plus)
    assert ensure_llm_blender_compat() == []  # idempotent: only what is missing gets patched


def test_batch_encode_plus_matches_call(blender):
    tok = blender.ranker_tokenizer
    kw = {"max_length": 12, "padding": "max_length", "truncation": True, "return_tensors": "pt"}
    texts = ["reset the router", "a much longer text that has to be cut at twelve tokens, surely"]
    got, want = tok.batch_encode_plus(texts, **kw), tok(texts, **kw)
    assert set(got) == set(want)
    assert all((got[k] == want[k]).all() for k in want)
    assert got["input_ids"].shape == (2, 12)
    pairs = tok.batch_encode_plus([("question", "answer one"), ("q", "a")], padding=True)
    assert pairs["input_ids"] == tok(["question", "q"], ["answer one", "a"], padding=True)["input_ids"]


# --- the tiny ranker in llm-blender's format ----------------------------------------------------------------


def test_tiny_ranker_folder_layout(tiny_ranker):
    cfg = json.loads((tiny_ranker / "config.json").read_text())
    assert cfg["ranker_type"] == "pairranker"
    assert cfg["model_type"] == "deberta"
    assert cfg["model_name"] == BACKBONE_DIR  # relative: the folder can move
    assert cfg["source_maxlength"] > 0 and cfg["candidate_maxlength"] > 0
    assert (tiny_ranker / "model.safetensors").is_file()
    backbone = json.loads((tiny_ranker / BACKBONE_DIR / "config.json").read_text())
    assert backbone["model_type"] == "deberta-v2"
    tok_cfg = json.loads((tiny_ranker / BACKBONE_DIR / "tokenizer_config.json").read_text())
    assert tok_cfg["model_max_length"] >= cfg["source_maxlength"] + 2 * cfg["candidate_maxlength"]


def test_loaded_through_loadranker_with_the_saved_weights(tiny_ranker, blender):
    import safetensors.torch
    from llm_blender.pair_ranker.ranker import CrossCompareReranker

    assert isinstance(blender.ranker, CrossCompareReranker)
    assert blender.ranker_config.ranker_type == "pairranker"
    assert blender.ranker_config.load_checkpoint == str(tiny_ranker)
    assert not blender.ranker.training
    saved = safetensors.torch.load_file(str(tiny_ranker / "model.safetensors"))
    state = blender.ranker.state_dict()
    assert set(saved) <= set(state)
    assert all((state[k] == v).all() for k, v in saved.items())  # the checkpoint, not a fresh random init
    # the collator added llm-blender's four prefix tokens, and the embeddings were sized to match
    tok = blender.ranker_tokenizer
    assert tok.cand1_prefix_id != tok.cand2_prefix_id
    assert blender.ranker.pretrained_model.get_input_embeddings().weight.shape[0] == len(tok)


def test_build_is_deterministic_and_the_folder_can_move(tiny_ranker, tmp_path, offline_hub):
    again = build_tiny_ranker(tmp_path / "again")
    assert (again / "model.safetensors").read_bytes() == (tiny_ranker / "model.safetensors").read_bytes()
    moved = tmp_path / "moved"
    shutil.move(str(again), moved)
    m = pairrm_matrix(load_ranker(moved, "cpu"), PROMPTS[:1], CANDIDATES[:1])[0]
    assert m.shape == (4, 4)


# --- the comparison matrix ----------------------------------------------------------------------------------


def test_matrix_per_prompt(matrices):
    assert [m.shape for m in matrices] == [(4, 4), (3, 3), (4, 4)]
    for m in matrices:
        assert m.dtype == np.float64
        assert np.isfinite(m).all()
        # the diagonal is never compared (N·(N-1) forward passes) and stays 0
        assert (np.diag(m) == 0).all()
        off = ~np.eye(len(m), dtype=bool)
        assert (m[off] != 0).all()
        # M[i, j] and M[j, i] come from the two presentation orders: not antisymmetric (position bias) ...
        assert not np.allclose(m + m.T, 0, atol=1e-3)
        # ... but the order-balanced win probabilities are complementary
        p = win_probabilities(m)
        np.testing.assert_allclose(p + p.T, 1.0)
        np.testing.assert_allclose(np.diag(p), 0.5)
        assert ((p > 0) & (p < 1)).all()


def test_matrix_matches_llm_blender_rank_and_compare(blender, matrices):
    # Blender.rank(return_scores=True) needs one candidate count per call: the two prompts with 4.
    four = [0, 2]
    ranked = blender.rank([PROMPTS[i] for i in four], [CANDIDATES[i] for i in four], return_scores=True)
    for row, i in zip(ranked, four, strict=True):
        np.testing.assert_allclose(pairrm_scores(matrices[i]), row, atol=1e-5)
    ranks = blender.rank([PROMPTS[i] for i in four], [CANDIDATES[i] for i in four])
    for row, i in zip(ranks, four, strict=True):  # rank 1 = highest score
        assert list(row) == list(1 + np.argsort(np.argsort(-pairrm_scores(matrices[i]))))
    # Blender.compare: "[A,B]" is the one-order logit M[i, j]; the default mode is M[i, j] - M[j, i]
    m, c = matrices[1], CANDIDATES[1]
    a, b = [c[0], c[2], c[1]], [c[1], c[0], c[2]]  # pairs (0,1), (2,0), (1,2)
    idx = [(0, 1), (2, 0), (1, 2)]
    one = blender.compare([PROMPTS[1]] * 3, a, b, return_logits=True, mode="[A,B]")
    both = blender.compare([PROMPTS[1]] * 3, a, b, return_logits=True)
    np.testing.assert_allclose(one, [m[i, j] for i, j in idx], atol=1e-5)
    np.testing.assert_allclose(both, [m[i, j] - m[j, i] for i, j in idx], atol=1e-5)


def test_scores_are_the_mean_balanced_logit(matrices):
    m = matrices[0]
    n = len(m)
    want = [sum(m[i, j] - m[j, i] for j in range(n)) / n for i in range(n)]
    np.testing.assert_allclose(pairrm_scores(m), want)
    assert pairrm_scores(m).sum() == pytest.approx(0.0, abs=1e-12)


def test_matrix_does_not_depend_on_batching(blender, matrices):
    one_by_one = pairrm_matrix(blender, PROMPTS, CANDIDATES, batch_size=1)
    for a, b in zip(one_by_one, matrices, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_matrix_input_errors(blender):
    with pytest.raises(ValueError, match="at least 2 candidates"):
        pairrm_matrix(blender, ["p"], [["only one"]])
    with pytest.raises(ValueError, match="2 prompts but 1 candidate lists"):
        pairrm_matrix(blender, ["p", "q"], [["a", "b"]])


# --- rewards ------------------------------------------------------------------------------------------------


def candidates_frame():
    rows = [
        (f"p{k}", s, prompt, response)
        for k, (prompt, cands) in enumerate(zip(PROMPTS, CANDIDATES, strict=True))
        for s, response in enumerate(cands)
    ]
    return pl.DataFrame(
        {
            "candidate_id": [f"{p}-{s}" for p, s, _, _ in rows],
            "prompt_id": [p for p, _, _, _ in rows],
            "sample_idx": [s for _, s, _, _ in rows],
            "prompt": [q for _, _, q, _ in rows],
            "response": [r for _, _, _, r in rows],
            "finish_reason": ["stop"] * len(rows),
        },
        schema_overrides={"sample_idx": pl.Int32},
    )


def test_pairrm_rewards_frame(blender, matrices):
    cands = candidates_frame()
    r = pairrm_rewards(cands.reverse(), blender)  # row order must not matter
    assert r.schema == pl.Schema(PAIRRM_REWARD_SCHEMA)
    assert r.select(list(REWARD_SCHEMA)).schema == pl.Schema(REWARD_SCHEMA)
    assert r.height == cands.height
    assert set(r["source"]) == {"pairrm"}
    assert sorted(r["candidate_id"]) == sorted(cands["candidate_id"])
    rebuilt = pairrm_matrices(r)
    for k, m in enumerate(matrices):
        ids, got = rebuilt[f"p{k}"]
        assert ids == [f"p{k}-{s}" for s in range(len(m))]  # matrix order = sample_idx
        np.testing.assert_allclose(got, m, atol=1e-5)
        by_id = dict(r.filter(pl.col("prompt_id") == f"p{k}").select("candidate_id", "reward").iter_rows())
        np.testing.assert_allclose([by_id[c] for c in ids], pairrm_scores(got))
    best = r.sort("reward", descending=True).group_by("prompt_id", maintain_order=True).first()
    assert set(best["rank"]) == {1}
    assert r.group_by("prompt_id").agg(pl.col("rank").max())["rank"].max() <= 4


def test_pairrm_rewards_feed_pair_selection(blender):
    cands = candidates_frame()
    r = pairrm_rewards(cands, blender)
    sel = select_pairs(cands, r)
    assert sel.pairs.height + sel.dropped.height == 3
    chosen = set(sel.pairs["chosen_id"])
    assert chosen <= set(r.filter(pl.col("rank") == 1)["candidate_id"])


def test_pairrm_rewards_needs_text_columns(blender):
    with pytest.raises(ValueError, match=r"lack columns \['response'\]"):
        pairrm_rewards(candidates_frame().drop("response"), blender)
