"""The endpoint backend against a local OpenAI-compatible server on 127.0.0.1 (answers, errors, hangs)."""

from __future__ import annotations

import time

import polars as pl
import pytest

from prefscale.config.generation import EndpointSettings, GenerationConfig
from prefscale.data import domain
from prefscale.generation.base import CANDIDATE_SCHEMA, Sampling, sample_seed
from prefscale.generation.endpoint_backend import EndpointBackend, EndpointError, parse_completion
from prefscale.generation.registry import make_backend
from tests.fake_openai_server import FakeServer


@pytest.fixture
def server(request):
    s = FakeServer(getattr(request, "param", "ok"))
    yield s
    s.close()


@pytest.fixture(scope="module")
def prompts():
    return domain.make_prompt_pool(5, seed=2)


def settings(url: str, **kw) -> EndpointSettings:
    base = {
        "base_url": url,
        "model": "policy",
        "max_concurrency": 4,
        "timeout_s": 2.0,
        "max_retries": 2,
        "backoff_s": 0.01,
    }
    return EndpointSettings(**{**base, **kw})


SAMPLING = Sampling(max_new_tokens=16, temperature=0.7, top_p=0.9, stop=("\n\n",))


def test_answers_fill_the_candidate_columns(server, prompts):
    backend = EndpointBackend(settings(server.url), SAMPLING)
    out, info = backend.generate(prompts, 3, seed=4)
    assert out.schema == pl.Schema(CANDIDATE_SCHEMA) and out.height == 15
    assert out["candidate_id"].to_list() == [f"{p}-{k}" for p in prompts["prompt_id"] for k in range(3)]
    assert len(server.requests) == 15 and info.requests == 15 and info.retries == 0
    body = server.requests[0]
    assert body["model"] == "policy" and body["n"] == 1 and body["max_tokens"] == 16
    assert body["temperature"] == 0.7 and body["top_p"] == 0.9 and body["stop"] == ["\n\n"]
    # one seed per sample, the same one the other backends use
    seeds = {(r["messages"][0]["content"], r["seed"]) for r in server.requests}
    assert seeds == {
        (p, sample_seed(4, pid, k))
        for pid, p in prompts.select("prompt_id", "prompt").rows()
        for k in range(3)
    }
    for resp, n, fin, seed in zip(
        out["response"],
        out["n_tokens"],
        out["finish_reason"],
        [sample_seed(4, p, k) for p in prompts["prompt_id"] for k in range(3)],
        strict=True,
    ):
        assert resp.startswith(f"echo {seed % 1000} ")
        assert (fin, n) == (("length", 16) if seed % 3 == 0 else ("stop", 4))
    assert (out["latency_s"] > 0).all()
    assert 1 < server.max_active <= 4  # concurrent, and bounded
    assert "Authorization" not in server.headers[0]


def test_api_key_from_the_named_env_var(server, prompts, monkeypatch):
    monkeypatch.setenv("PREFSCALE_TEST_KEY", "s3cret")
    backend = EndpointBackend(settings(server.url, api_key_env="PREFSCALE_TEST_KEY"), SAMPLING)
    backend.generate(prompts.head(1), 1, seed=0)
    assert server.headers[0]["Authorization"] == "Bearer s3cret"
    monkeypatch.delenv("PREFSCALE_TEST_KEY")
    with pytest.raises(EndpointError, match="PREFSCALE_TEST_KEY, which is not set") as e:
        EndpointBackend(settings(server.url, api_key_env="PREFSCALE_TEST_KEY"), SAMPLING)
    assert "s3cret" not in str(e.value)


@pytest.mark.parametrize("server", ["flaky"], indirect=True)
def test_5xx_is_retried_with_backoff(server, prompts):
    sleeps = []
    backend = EndpointBackend(
        settings(server.url, max_retries=2, backoff_s=0.5), SAMPLING, sleep=sleeps.append
    )
    out, info = backend.generate(prompts.head(2), 2, seed=1)
    assert out.height == 4 and set(out["finish_reason"]) <= {"stop", "length"}
    assert info.retries == 8 and len(server.requests) == 12  # every sample: 500, 500, then 200
    assert sorted(sleeps) == [0.5] * 4 + [1.0] * 4  # exponential back-off


@pytest.mark.parametrize("server", ["500"], indirect=True)
def test_persistent_5xx_fails_in_bounded_time_naming_the_url(server, prompts):
    backend = EndpointBackend(settings(server.url, max_retries=2, backoff_s=0.01), SAMPLING)
    t0 = time.perf_counter()
    with pytest.raises(EndpointError) as e:
        backend.generate(prompts, 2, seed=0)
    assert time.perf_counter() - t0 < 5
    msg = str(e.value)
    assert (
        f"{server.url}/chat/completions" in msg and "failed after 3 attempt(s)" in msg and "HTTP 500" in msg
    )


@pytest.mark.parametrize("server", ["400"], indirect=True)
def test_permanent_error_is_not_retried(server, prompts):
    backend = EndpointBackend(settings(server.url, max_retries=3, max_concurrency=1), SAMPLING)
    with pytest.raises(EndpointError, match=r"HTTP 400 .*does not exist.*\(not retried\)"):
        backend.generate(prompts.head(1), 1, seed=0)
    assert len(server.requests) == 1


@pytest.mark.parametrize("server", ["hang"], indirect=True)
def test_hanging_server_times_out(server, prompts):
    backend = EndpointBackend(settings(server.url, timeout_s=0.3, max_retries=1, backoff_s=0.01), SAMPLING)
    t0 = time.perf_counter()
    with pytest.raises(EndpointError) as e:
        backend.generate(prompts.head(2), 2, seed=0)
    elapsed = time.perf_counter() - t0
    assert elapsed < 3, elapsed  # 2 attempts x 0.3 s, not the server's 10 s
    assert (
        server.url in str(e.value)
        and "timeout" in str(e.value)
        and "failed after 2 attempt(s)" in str(e.value)
    )


def test_refused_connection_names_the_url(prompts):
    s = FakeServer()
    url = s.url
    s.close()  # nothing listens there now
    backend = EndpointBackend(settings(url, max_retries=1, backoff_s=0.01), SAMPLING)
    with pytest.raises(EndpointError, match=r"127\.0\.0\.1.*connection failed"):
        backend.generate(prompts.head(1), 1, seed=0)


def test_parse_completion_rejects_non_completions():
    with pytest.raises(EndpointError, match="not a chat completion"):
        parse_completion({"data": []}, "http://x")
    with pytest.raises(EndpointError, match="unexpected finish_reason 'content_filter'"):
        parse_completion(
            {"choices": [{"message": {"content": "a"}, "finish_reason": "content_filter"}]}, "http://x"
        )
    assert parse_completion({"choices": [{"message": {"content": "a b"}, "finish_reason": "eos"}]}, "u") == (
        "a b",
        None,
        "stop",
    )


def test_iteration_in_model_name(server, prompts):
    cfg = GenerationConfig(
        backend="endpoint", endpoint=settings(server.url, model="policy-iter{policy_iteration}")
    )
    backend = make_backend(cfg, "unused", None, policy_iteration=2)
    backend.generate(prompts.head(1), 1, seed=0)
    assert server.requests[0]["model"] == "policy-iter2"
    with pytest.raises(EndpointError, match="no iteration"):
        make_backend(cfg, "unused", None)


def test_recipe_endpoint_settings_iff_endpoint_backend():
    with pytest.raises(ValueError, match=r"generation.endpoint .* is required"):
        GenerationConfig(backend="endpoint")
    with pytest.raises(ValueError, match="only used by backend 'endpoint'"):
        GenerationConfig(backend="transformers", endpoint=settings("http://127.0.0.1:1/v1"))
    with pytest.raises(ValueError):
        EndpointSettings(base_url="127.0.0.1:8000", model="m")  # no scheme
    with pytest.raises(ValueError):
        EndpointSettings(base_url="http://h/v1", model="m", api_key_env="not a name")
    assert GenerationConfig().backend == "transformers" and GenerationConfig().endpoint is None
