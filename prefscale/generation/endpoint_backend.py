"""The endpoint backend: an OpenAI-compatible server (vLLM, TGI, SGLang) a team already runs.

Each sample is one `POST {base_url}/chat/completions` request (`n: 1`, its own `seed` from `sample_seed`, so a
server that honours seeds returns the same text for the same sample). Requests run on at most
`max_concurrency` threads; each is bounded by `timeout_s`; a 5xx, 408 or 429 answer, a refused or dropped
connection, or a timeout is retried `max_retries` times after `backoff_s`, `2·backoff_s`, ... seconds. Any other
answer (a 4xx, a body that is not a chat completion) fails at once. So one request takes at most
`(max_retries + 1)·timeout_s + backoff_s·(2^max_retries − 1)` seconds, and the first request that fails for
good fails the whole call (the others are cancelled) with an `EndpointError` naming the URL and the failure.
Standard library only (urllib); the API key is read from the environment variable the recipe names and never
appears in an error or a log.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

import polars as pl

from prefscale.generation.base import (
    BackendSpec,
    GenerationInfo,
    Sample,
    Sampling,
    candidates_frame,
    check_prompts,
    sample_seed,
)
from prefscale.policy.chat import prompt_messages
from prefscale.progress import Progress

RETRY_STATUS = frozenset({408, 429})
FINISH = {"stop": "stop", "eos": "stop", "eos_token": "stop", "stop_sequence": "stop", "length": "length"}


class EndpointError(RuntimeError):
    """A request to the generation endpoint failed for good (the URL and the failure are in the message)."""


def _excerpt(raw: bytes | str, limit: int = 200) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def parse_completion(payload: Any, url: str) -> tuple[str, int | None, str]:
    """(text, completion tokens or None, finish reason) of a one-choice chat completion body."""
    try:
        choice = payload["choices"][0]
        text = choice["message"]["content"]
        reason = choice.get("finish_reason")
    except (KeyError, IndexError, TypeError):
        raise EndpointError(
            f"{url}: the answer is not a chat completion (no choices[0].message.content): "
            f"{_excerpt(json.dumps(payload))}"
        ) from None
    if not isinstance(text, str):
        raise EndpointError(f"{url}: choices[0].message.content is {type(text).__name__}, not text")
    if reason not in FINISH:
        raise EndpointError(f"{url}: unexpected finish_reason {reason!r} (expected 'stop' or 'length')")
    usage = payload.get("usage") if isinstance(payload, dict) else None
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return text, tokens if isinstance(tokens, int) else None, FINISH[reason]


class EndpointBackend:
    """Samples from an OpenAI-compatible `/chat/completions` endpoint (see the module docstring)."""

    name = "endpoint"

    @classmethod
    def from_config(cls, spec: BackendSpec) -> EndpointBackend:
        return cls(spec.config.endpoint, spec.sampling, iteration=spec.policy_iteration)

    def __init__(
        self,
        settings: Any,
        sampling: Sampling,
        *,
        iteration: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.sampling = sampling
        self.url = settings.base_url.rstrip("/") + "/chat/completions"
        if "{policy_iteration}" in settings.model and iteration is None:
            raise EndpointError(
                f"endpoint model {settings.model!r} names {{policy_iteration}} but no iteration was given"
            )
        self.model = (
            settings.model.replace("{policy_iteration}", str(iteration))
            if iteration is not None
            else settings.model
        )
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if settings.api_key_env:
            key = os.environ.get(settings.api_key_env)
            if not key:
                raise EndpointError(
                    f"generation.endpoint.api_key_env names {settings.api_key_env}, which is not set in the "
                    "environment"
                )
            self._headers["Authorization"] = f"Bearer {key}"
        self._sleep = sleep
        self._lock = threading.Lock()
        self.retries = 0

    def body(self, prompt: str, seed: int) -> dict[str, Any]:
        """The JSON body of one sample's request."""
        s = self.sampling
        out: dict[str, Any] = {
            "model": self.model,
            "messages": prompt_messages(prompt, self.sampling.system),
            "n": 1,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_new_tokens,
            "seed": seed,
        }
        if s.stop:
            out["stop"] = list(s.stop)
        return out

    def _post(self, data: bytes) -> Any:
        req = urllib.request.Request(self.url, data=data, headers=self._headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.settings.timeout_s) as resp:
            raw = resp.read()
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            raise EndpointError(f"{self.url}: the answer is not JSON: {_excerpt(raw)}") from None

    def request(self, prompt: str, seed: int) -> Sample:
        """One sample, with retries; `EndpointError` when it fails for good."""
        data = json.dumps(self.body(prompt, seed)).encode()
        cfg = self.settings
        last = ""
        for attempt in range(cfg.max_retries + 1):
            t0 = time.perf_counter()
            try:
                payload = self._post(data)
            except urllib.error.HTTPError as e:
                detail = f"HTTP {e.code} {e.reason}: {_excerpt(e.read() or b'')}"
                if e.code < 500 and e.code not in RETRY_STATUS:
                    raise EndpointError(f"{self.url}: {detail} (not retried)") from None
                last = detail
            except TimeoutError:
                last = f"no answer within {cfg.timeout_s:g} s (timeout)"
            except urllib.error.URLError as e:
                reason = e.reason
                if isinstance(reason, TimeoutError):
                    last = f"no answer within {cfg.timeout_s:g} s (timeout)"
                else:
                    last = f"connection failed: {reason}"
            except (ConnectionError, http.client.HTTPException) as e:
                last = f"connection failed: {type(e).__name__}: {e}"
            else:
                text, tokens, reason = parse_completion(payload, self.url)
                n_tokens = tokens if tokens is not None else len(text.split())
                return Sample(text.strip(), n_tokens, reason, time.perf_counter() - t0)
            if attempt < cfg.max_retries:
                with self._lock:
                    self.retries += 1
                self._sleep(cfg.backoff_s * 2**attempt)
        raise EndpointError(
            f"{self.url}: failed after {cfg.max_retries + 1} attempt(s) "
            f"(timeout {cfg.timeout_s:g} s each, back-off from {cfg.backoff_s:g} s); last error: {last}"
        )

    def generate(self, prompts: pl.DataFrame, n: int, *, seed: int) -> tuple[pl.DataFrame, GenerationInfo]:
        check_prompts(prompts, n)
        pid, text = prompts["prompt_id"].to_list(), prompts["prompt"].to_list()
        jobs = [(i, k) for i in range(prompts.height) for k in range(n)]
        self.retries = 0
        progress = Progress("generation (endpoint)", len(jobs), "responses")
        t0 = time.perf_counter()
        pool = ThreadPoolExecutor(
            max_workers=min(self.settings.max_concurrency, len(jobs)), thread_name_prefix="prefscale-endpoint"
        )
        try:
            futures = {
                pool.submit(self.request, text[i], sample_seed(seed, pid[i], k)): (i, k) for i, k in jobs
            }
            for f in futures:  # counted as each request comes back (from the pool's threads)
                f.add_done_callback(lambda f: None if f.cancelled() or f.exception() else progress.advance())
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((f for f in done if f.exception() is not None), None)
            if failed is not None:
                for f in pending:
                    f.cancel()
                raise failed.exception()  # type: ignore[misc]
            results = {futures[f]: f.result() for f in done}
        finally:
            pool.shutdown(wait=False, cancel_futures=True)  # in-flight requests end within timeout_s
        info = GenerationInfo(
            backend=self.name,
            seconds=time.perf_counter() - t0,
            requests=len(jobs),
            retries=self.retries,
            extra={"url": self.url, "model": self.model, "max_concurrency": self.settings.max_concurrency},
        )
        return candidates_frame(prompts, n, results), info
