"""The transformers backend: per-sample seeds independent of batching, stop strings, OOM back-off, metadata."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from prefscale.config.generation import GenerationConfig
from prefscale.data import domain
from prefscale.generation.base import (
    CANDIDATE_SCHEMA,
    Sampling,
    cut_at_stop,
    generation_stats,
    is_oom,
    sample_seed,
)
from prefscale.generation.registry import make_backend
from prefscale.generation.transformers_backend import TransformersBackend, generate_transformers
from prefscale.policy.chat import chat_text
from prefscale.policy.io import load_policy


@pytest.fixture(scope="module")
def loaded(tiny_policy, cpu):
    return load_policy(tiny_policy[0], cpu)


@pytest.fixture(scope="module")
def prompts():
    return domain.make_prompt_pool(7, seed=11)


SAMPLING = Sampling(max_new_tokens=14, temperature=1.0, top_p=0.95)


def _texts(frame: pl.DataFrame) -> dict[str, tuple[str, int, str]]:
    return {
        c: (r, n, f)
        for c, r, n, f in frame.select("candidate_id", "response", "n_tokens", "finish_reason").rows()
    }


def test_sample_text_does_not_depend_on_batching(loaded, prompts):
    model, tok = loaded
    one_at_a_time, _ = generate_transformers(model, tok, prompts, 3, SAMPLING, batch_size=1, seed=5)
    batched, info = generate_transformers(model, tok, prompts, 3, SAMPLING, batch_size=8, seed=5)
    whole, _ = generate_transformers(model, tok, prompts, 3, SAMPLING, batch_size=64, seed=5)
    assert info.batch_size == 8 and info.oom_backoffs == 0
    assert _texts(one_at_a_time) == _texts(batched) == _texts(whole)
    # a prompt's samples are the same when other prompts are dropped, reordered or added
    sub = prompts.reverse().head(3)
    alone, _ = generate_transformers(model, tok, sub, 3, SAMPLING, batch_size=4, seed=5)
    expected = {k: v for k, v in _texts(whole).items() if k.rsplit("-", 1)[0] in set(sub["prompt_id"])}
    assert _texts(alone) == expected
    # and they vary: within a prompt (different sample seeds) and with the run seed
    assert whole["response"].n_unique() > prompts.height
    other, _ = generate_transformers(model, tok, prompts, 3, SAMPLING, batch_size=64, seed=6)
    assert other["response"].to_list() != whole["response"].to_list()


def test_sample_seed_is_stable_and_distinct():
    assert sample_seed(1, "p1", 0) == sample_seed(1, "p1", 0)
    seeds = {sample_seed(s, p, k) for s in (0, 1) for p in ("p1", "p2") for k in range(3)}
    assert len(seeds) == 12 and all(0 <= x < 2**63 for x in seeds)


def test_columns_tokens_finish_reason_and_latency(loaded, prompts):
    model, tok = loaded
    out, info = generate_transformers(model, tok, prompts, 2, SAMPLING, batch_size=5, seed=0)
    assert out.schema == pl.Schema(CANDIDATE_SCHEMA)
    assert set(out["finish_reason"]) <= {"stop", "length"}
    cut = out.filter(pl.col("finish_reason") == "length")
    assert (cut["n_tokens"] == SAMPLING.max_new_tokens).all()
    assert (out.filter(pl.col("finish_reason") == "stop")["n_tokens"] < SAMPLING.max_new_tokens).all()
    assert (out["latency_s"] > 0).all() and (out["latency_s"] <= info.seconds + 1e-6).all()
    assert (out.filter(pl.col("response") != "")["n_tokens"] > 0).all()
    stats = generation_stats(out, info.seconds)
    assert stats["tokens_per_second"] > 0
    assert 0 < stats["latency_p50_s"] <= stats["latency_p90_s"] <= stats["latency_p99_s"]


def test_stop_strings_end_and_are_cut(loaded, prompts):
    model, tok = loaded
    free, _ = generate_transformers(
        model, tok, prompts, 2, Sampling(max_new_tokens=24), batch_size=16, seed=3
    )
    # pick a stop string that occurs inside some unconstrained sample
    word = next(w for text in free["response"] for w in text.split()[1:] if len(w) >= 3)
    stopped, _ = generate_transformers(
        model, tok, prompts, 2, Sampling(max_new_tokens=24, stop=(word,)), batch_size=16, seed=3
    )
    assert not any(word in r for r in stopped["response"])
    joined = free.join(stopped, on="candidate_id", suffix="_s")
    hit = joined.filter(pl.col("response").str.contains(word, literal=True))
    assert hit.height >= 1
    for r, r_s, reason, n, n_s in hit.select(
        "response", "response_s", "finish_reason_s", "n_tokens", "n_tokens_s"
    ).rows():
        assert reason == "stop" and n_s <= n
        assert r.startswith(r_s)
    assert cut_at_stop("ab##cd##", ["##", "cd"]) == ("ab", True)
    assert cut_at_stop("abc", ["x"]) == ("abc", False)


class OOMAbove:
    """Wraps a model; its forward raises CUDA's out-of-memory error when a batch of more than `limit` rows decodes
    (`sizes`: the rows of each batch's first decoding step)."""

    def __init__(self, model, limit: int) -> None:
        self.model, self.limit, self.sizes, self._first = model, limit, [], False

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, **kw):
        rows, length = kw["input_ids"].shape
        if length > 1:  # a prefill: the next call is the batch's first decoding step
            self._first = True
        elif self._first:
            self._first = False
            self.sizes.append(rows)
            if rows > self.limit:
                raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {rows} GiB (injected)")
        return self.model(**kw)


def test_oom_halves_the_batch_and_gives_the_same_samples(loaded, prompts):
    model, tok = loaded
    expected, _ = generate_transformers(model, tok, prompts, 3, SAMPLING, batch_size=21, seed=9)
    wrapped = OOMAbove(model, limit=5)
    seen = []
    got, info = generate_transformers(
        wrapped, tok, prompts, 3, SAMPLING, batch_size=21, seed=9, on_oom=lambda a, b: seen.append((a, b))
    )
    assert seen == [(21, 10), (10, 5)]
    assert info.oom_backoffs == 2 and info.batch_size == 5
    assert wrapped.sizes[:3] == [21, 10, 5] and max(wrapped.sizes[2:]) == 5
    assert _texts(got) == _texts(expected)


def test_oom_at_batch_size_one_is_raised(loaded, prompts):
    model, tok = loaded
    with pytest.raises(RuntimeError, match="out of memory generating even one sample"):
        generate_transformers(OOMAbove(model, limit=0), tok, prompts.head(1), 1, SAMPLING, batch_size=2)


def test_other_errors_are_not_retried(loaded, prompts):
    model, tok = loaded

    class Broken(OOMAbove):
        def __call__(self, **kw):
            self.sizes.append(1)
            raise RuntimeError("shape mismatch")

    broken = Broken(model, 0)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        generate_transformers(broken, tok, prompts, 1, SAMPLING, batch_size=4)
    assert broken.sizes == [1]
    assert is_oom(RuntimeError("CUDA error: out of memory")) and not is_oom(ValueError("out of memory"))


def test_make_backend_transformers(tiny_policy, cpu, prompts):
    cfg = GenerationConfig(num_candidates=2, max_new_tokens=8, batch_size=4, stop=("\n\n",))
    backend = make_backend(cfg, tiny_policy[0], cpu)
    assert isinstance(backend, TransformersBackend) and backend.sampling.stop == ("\n\n",)
    out, info = backend.generate(prompts.head(2), 2, seed=1)
    assert out.height == 4 and info.backend == "transformers"
    with pytest.raises(ValueError, match="needs a compute"):
        make_backend(cfg, tiny_policy[0], None)


def test_sampling_validates():
    with pytest.raises(ValueError, match="top_p"):
        Sampling(top_p=0)
    with pytest.raises(ValueError, match="temperature"):
        Sampling(temperature=0)
    with pytest.raises(ValueError, match="stop strings"):
        Sampling(stop=("",))


def test_duplicate_prompt_ids_rejected(loaded, prompts):
    model, tok = loaded
    with pytest.raises(ValueError, match="duplicate prompt_id"):
        generate_transformers(model, tok, pl.concat([prompts.head(1), prompts.head(1)]), 1, SAMPLING)


@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.99])
def test_nucleus_over_the_top_tokens_draws_what_the_full_sort_draws(monkeypatch, top_p):
    """Top-p over the most likely tokens (no sort of the whole vocabulary) picks the full sort's token; a row
    whose top tokens hold less than `top_p` of the mass falls back to the full sort."""
    import prefscale.generation.transformers_backend as tb

    g = torch.Generator().manual_seed(0)
    scores = torch.randn(64, 49152, generator=g) * 4  # peaked enough that the top 1024 hold the nucleus
    uniforms = torch.rand(64, 1, generator=g)
    fast = tb.draw_tokens(scores, uniforms, 0.8, top_p)
    monkeypatch.setattr(tb, "_nucleus", lambda probs, u, p: None)  # the full sort
    assert torch.equal(fast, tb.draw_tokens(scores, uniforms, 0.8, top_p))
    monkeypatch.undo()
    monkeypatch.setattr(tb, "NUCLEUS_CANDIDATES", 2)  # two tokens never hold 0.99 of a flat distribution
    assert tb._nucleus(torch.full((1, 8), 1 / 8), uniforms[:1], 0.99) is None


def test_the_decode_loop_samples_what_model_generate_samples(loaded, prompts):
    """Shared prefill and finished rows leaving the batch change the cost, not the samples: every row's tokens
    equal those of `model.generate` with the same per-row draws."""
    from transformers import GenerationConfig, LogitsProcessorList

    import prefscale.generation.transformers_backend as tb

    model, tok = loaded
    texts = [chat_text(tok, p) for p in prompts["prompt"].head(3) for _ in range(3)]  # 3 candidates each
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    seeds = list(range(9))
    sampling = Sampling(max_new_tokens=24, temperature=1.0, top_p=0.9)
    ours, times, _, _ = tb.generate_ids(
        model, enc, seeds, sampling, eos=tok.eos_token_id, pad=tok.pad_token_id
    )
    uniforms = tb.row_uniforms(seeds, 24)
    prompt_len = enc["input_ids"].shape[1]

    def one_hot(input_ids, scores):
        step = input_ids.shape[1] - prompt_len
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(-1, tb.draw_tokens(scores, uniforms[:, step : step + 1], 1.0, 0.9)[:, None], 0.0)

    config = GenerationConfig(
        do_sample=False, max_new_tokens=24, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    theirs = model.generate(**enc, generation_config=config, logits_processor=LogitsProcessorList([one_hot]))
    theirs = theirs[:, prompt_len:]
    assert len(times) == ours.shape[1] <= 24
    assert ours.tolist() == theirs[:, : ours.shape[1]].tolist()
    assert (theirs[:, ours.shape[1] :] == tok.pad_token_id).all()
