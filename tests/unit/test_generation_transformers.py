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
    """Wraps a model; `generate` raises CUDA's out-of-memory error for batches larger than `limit`."""

    def __init__(self, model, limit: int) -> None:
        self.model, self.limit, self.sizes = model, limit, []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def generate(self, **kw):
        size = kw["input_ids"].shape[0]
        self.sizes.append(size)
        if size > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {size} GiB (injected)")
        return self.model.generate(**kw)


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
        def generate(self, **kw):
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
