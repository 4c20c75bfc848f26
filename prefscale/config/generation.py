"""The recipe's `generation` section: candidate sampling and its backend."""

from __future__ import annotations

from pydantic import Field, model_validator

from prefscale.config.base import _Strict
from prefscale.generation.registry import BACKENDS


class EndpointSettings(_Strict):
    """An OpenAI-compatible server (vLLM, TGI, SGLang) answering `POST {base_url}/chat/completions`.

    The server must serve the policy being sampled: `model` may contain `{policy_iteration}`, the iteration of
    that policy (0: base_policy, k: dpo_checkpoint[k]), e.g. one vLLM LoRA module per checkpoint. `api_key_env` names the environment variable holding the key (the key itself
    never appears in a recipe, a log or metadata). Each request is bounded by `timeout_s`; a 5xx, 408, 429, a
    connection error or a timeout is retried `max_retries` times with exponential back-off (`backoff_s`,
    doubled each retry); any other answer fails at once.
    """

    base_url: str = Field(
        pattern=r"^https?://",
        description="the server's OpenAI API root, e.g. http://127.0.0.1:8000/v1 (requests go to "
        "{base_url}/chat/completions)",
    )
    model: str = Field(
        min_length=1,
        description="the served model name sent in each request; may contain {policy_iteration} (0: the base "
        "policy, k: dpo_checkpoint[k])",
    )
    api_key_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="name of the environment variable holding the API key, sent as a Bearer token (never the "
        "key itself); null: no Authorization header",
    )
    max_concurrency: int = Field(
        default=8, ge=1, le=256, description="requests in flight at once (one thread each)"
    )
    timeout_s: float = Field(default=60.0, gt=0, description="seconds per request: the connect and each read")
    max_retries: int = Field(
        default=3,
        ge=0,
        le=10,
        description="retries of a request after a 5xx, 408 or 429 answer, a connection error or a timeout",
    )
    backoff_s: float = Field(
        default=1.0, ge=0, description="seconds before the first retry; doubled before each further retry"
    )


class GenerationConfig(_Strict):
    """Candidate sampling, and the backend that samples (`prefscale.generation.make_backend`).

    `transformers` (default): batched in-process generation. `vllm`: vLLM's offline engine on a GPU (`pip install
    prefscale[vllm]`). `endpoint`: an OpenAI-compatible HTTP server (settings in `endpoint`). `stop` strings end
    a response like the end token does (they are cut from the text).
    """

    backend: BACKENDS.literal() = Field(
        default="transformers",
        description="what samples: transformers (batched in-process generate), vllm (vLLM's offline engine on "
        "a GPU; pip install prefscale[vllm]) or endpoint (an OpenAI-compatible server, see `endpoint`)",
    )
    num_candidates: int = Field(
        default=5, description="candidate responses sampled per training prompt (>= 2: a pair needs two)"
    )
    max_new_tokens: int = Field(
        default=128,
        ge=1,
        description="tokens generated at most per response; a response cut here is `unfinished` "
        "(finish_reason length)",
    )
    temperature: float = Field(
        default=1.0, gt=0, description="sampling temperature (> 0; 1: the model's distribution)"
    )
    top_p: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="nucleus sampling: sample from the smallest token set whose probability reaches top_p "
        "(1: off)",
    )
    batch_size: int = Field(
        default=64,
        ge=1,
        description="transformers only: (prompt, sample) jobs per generate call at first (halved on OOM)",
    )
    stop: tuple[str, ...] = Field(
        default=(),
        description="stop strings that end a response like the end token does (cut from the text)",
    )
    endpoint: EndpointSettings | None = Field(
        default=None, description="backend endpoint only (and required there): the server to sample from"
    )

    @model_validator(mode="after")
    def _n(self) -> GenerationConfig:
        if self.num_candidates < 2:
            raise ValueError(
                f"generation.num_candidates must be >= 2 to form pairs, got {self.num_candidates}"
            )
        if self.backend == "endpoint" and self.endpoint is None:
            raise ValueError(
                "generation.endpoint (base_url, model, ...) is required when backend is 'endpoint'"
            )
        if self.backend != "endpoint" and self.endpoint is not None:
            raise ValueError(f"generation.endpoint is only used by backend 'endpoint', not {self.backend!r}")
        if any(not s for s in self.stop):
            raise ValueError("generation.stop must not contain an empty string")
        return self
