"""Local model computations behind model-backed LFs: answer log-probabilities, response NLL, embeddings, TF-IDF."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from prefscale.progress import Progress

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
    model: Any,
    tok: Any,
    prompts: list[str] | None,
    responses: list[str],
    max_tokens: int,
    batch_size: int,
    label: str | None = None,
) -> np.ndarray:
    """Mean negative log-likelihood per response token, the end of turn included (NaN for an empty response);
    progress logged under `label` (none without)."""
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    items: list[tuple[list[int], int]] = []  # (ids, number of response tokens at the end)
    for i, resp in enumerate(responses):
        if not resp.strip():
            items.append(([], 0))
            continue
        ctx, r_ids = _exchange_ids(tok, prompts[i] if prompts is not None else None, resp)
        r_ids = r_ids[: max_tokens - 1]
        ctx = ctx[-max(1, max_tokens - len(r_ids)) :]
        items.append((ctx + r_ids, len(r_ids) if ctx else 0))
    out = np.full(len(items), np.nan)
    order = sorted((i for i in range(len(items)) if items[i][1] > 0), key=lambda i: len(items[i][0]))
    progress = Progress(label, len(order), "responses")
    for batch in _batches(order, batch_size):
        lps = _token_logprobs(model, [items[i][0] for i in batch], pad)
        for i, lp in zip(batch, lps, strict=True):
            out[i] = -float(lp[-items[i][1] :].mean())
        progress.advance(len(batch))
    return out


def _answer_logprobs(
    model: Any,
    tok: Any,
    texts: list[str],
    answers: Sequence[str],
    max_tokens: int,
    batch_size: int,
    label: str | None = None,
) -> np.ndarray:
    """log p(answer | text) for each text and answer ([n, len(answers)]); progress logged under `label`.

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
    progress = Progress(label, len(texts), "rows")
    for batch in _batches(order, batch_size):
        for a_ids in passes:
            seqs = [ctx[i] + a_ids for i in batch]
            lps = _next_and_continuation(model, seqs, pad, [len(ctx[i]) for i in batch], answer_ids, a_ids)
            for i, row in zip(batch, lps, strict=True):
                for k, v in row.items():
                    out[i, k] = v
        progress.advance(len(batch))
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


def _embed(
    model: Any, tok: Any, texts: list[str], max_tokens: int, batch_size: int, label: str | None = None
) -> np.ndarray:
    """Mean-pooled, L2-normalised last hidden states (the sentence-transformers recipe of all-MiniLM); progress
    logged under `label`."""
    import torch

    device = next(model.parameters()).device
    out = np.zeros((len(texts), 0))
    chunks = []
    progress = Progress(label, len(texts), "texts")
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
        progress.advance(len(chunks[-1]))
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
