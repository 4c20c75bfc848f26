"""The `local_llm` judge: a causal LM asked which response is better, in both orders."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from prefscale.compute import resolve_compute
from prefscale.evaluation.judges.base import Judge, JudgeContext
from prefscale.policy.chat import chat_text
from prefscale.policy.io import load_policy
from prefscale.progress import Progress

# --------------------------------------------------------------------------------------------- local LLM judge

LOCAL_LLM_QUESTION = (
    "You are judging two responses to the same request. Which response is better, A or B?\n\n"
    "Request:\n{instruction}\n\n"
    "Response A:\n{a}\n\n"
    "Response B:\n{b}\n\n"
    "Which response is better, A or B? Answer with the letter only."
)
# before the question, when the team wrote criteria (evaluation.judge_criteria)
LOCAL_LLM_CRITERIA = "Judge by these criteria:\n{criteria}\n\n"


def local_llm_question(instruction: str, a: str, b: str, criteria: str | None = None) -> str:
    """The judge's question about one pair: `LOCAL_LLM_QUESTION`, after the team's written criteria
    (`evaluation.judge_criteria`) when there are any; without them the question alone."""
    question = LOCAL_LLM_QUESTION.format(instruction=instruction, a=a, b=b)
    if criteria and criteria.strip():
        return LOCAL_LLM_CRITERIA.format(criteria=criteria.strip()) + question
    return question


def swap_averaged_preference(p_a_reference_first: float, p_a_model_first: float) -> float:
    """The preference from a judge asked in both orders; P(A) is normalised over {A, B}.

    Order 1 shows the reference as A and the model as B, so P(model better) = 1 - P(A); order 2 shows the model
    as A, so P(model better) = P(A). Averaging the two cancels a constant position bias: a judge that always
    says A (or always B) gets exactly 1.5. Returns 1 + the mean P(model better), in [1, 2].
    """
    p_model = 0.5 * ((1.0 - p_a_reference_first) + p_a_model_first)
    return 1.0 + p_model


class LocalLLMJudge(Judge):
    """A local causal LM asked "Which response is better, A or B?" in both orders (see `swap_averaged_preference`).

    `model` is any `from_pretrained` folder or hub id (the base policy in the embedded recipe: a weak judge, but
    the code path is the real one). The prompt goes through the tokenizer's chat template when it has one;
    responses are truncated (in tokens) so the prompt fits the model's context. `criteria` (the recipe's
    `evaluation.judge_criteria`) are put before the question (`local_llm_question`). The answer is read from the
    next-token logits of "A" and "B" (after their shared prefix, e.g. a space token), batched.
    """

    name = "local_llm"

    @classmethod
    def from_recipe(cls, ctx: JudgeContext) -> LocalLLMJudge:
        model = ctx.evaluation.local_llm_model or ctx.local_llm_model
        if model is None:
            raise ValueError("the local_llm judge needs a model: set evaluation.local_llm_model")
        criteria = getattr(ctx.evaluation, "judge_criteria", None)
        return cls(model, compute=ctx.compute, batch_size=ctx.evaluation.judge_batch_size, criteria=criteria)

    def __init__(
        self,
        model: str | Path,
        *,
        compute: Any = None,
        batch_size: int = 8,
        max_length: int | None = None,
        criteria: str | None = None,
    ) -> None:
        self.model_ref = str(model)
        self.criteria = criteria.strip() if criteria and criteria.strip() else None
        self.compute = compute
        self.batch_size = batch_size
        self.max_length = max_length
        self._loaded: tuple[Any, Any] | None = None
        self._progress: Progress | None = None  # `_judge`'s count over both orders

    @property
    def annotator(self) -> str:
        """`local_llm[<model>]`, plus a digest of the criteria when there are any (other criteria: another judge)."""
        name = Path(self.model_ref).name or self.model_ref
        if self.criteria is None:
            return f"local_llm[{name}]"
        return f"local_llm[{name}, criteria {hashlib.sha256(self.criteria.encode()).hexdigest()[:8]}]"

    # -- model plumbing
    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            compute = self.compute or resolve_compute("cpu")
            model, tok = load_policy(
                Path(self.model_ref) if Path(self.model_ref).exists() else self.model_ref, compute
            )
            self._loaded = (model, tok)
        return self._loaded

    def _chat(self) -> bool:
        return bool(getattr(self._load()[1], "chat_template", None))

    def _context(self) -> int:
        model, tok = self._load()
        limits = [getattr(model.config, "max_position_embeddings", None), tok.model_max_length, 4096]
        if self.max_length:
            limits.append(self.max_length)
        return int(min(x for x in limits if isinstance(x, int) and 0 < x < 10**7))

    def _ids(self, text: str) -> list[int]:
        return self._load()[1](text, add_special_tokens=False)["input_ids"]

    def _label_ids(self) -> tuple[list[int], int, int]:
        """(shared prefix token ids, id of A, id of B): the answer letters after what they have in common."""
        a_text, b_text = ("A", "B") if self._chat() else (" A", " B")
        ia, ib = self._ids(a_text), self._ids(b_text)
        k = 0
        while k < min(len(ia), len(ib)) and ia[k] == ib[k]:
            k += 1
        if k >= len(ia) or k >= len(ib):
            raise ValueError(f"the tokenizer of {self.model_ref} does not tell 'A' from 'B'")
        return ia[:k], ia[k], ib[k]

    def _render(self, instruction: str, a: str, b: str) -> str:
        question = local_llm_question(instruction, a, b, self.criteria)
        if self._chat():
            return chat_text(self._load()[1], question)
        return question + "\nAnswer:"

    def encode(self, instruction: str, a: str, b: str) -> list[int]:
        """Token ids of the question (responses truncated to fit), ending where the answer letter comes."""
        prefix, _, _ = self._label_ids()
        limit = self._context() - len(prefix)
        tok = self._load()[1]
        ids = self._ids(self._render(instruction, a, b))
        if len(ids) > limit:
            overhead = len(self._ids(self._render("", "", ""))) + 8
            budget = max(limit - overhead, 24)
            ins, ia, ib = self._ids(instruction), self._ids(a), self._ids(b)
            n_ins = min(len(ins), budget // 4)
            per = max((budget - n_ins) // 2, 1)
            ids = self._ids(self._render(tok.decode(ins[:n_ins]), tok.decode(ia[:per]), tok.decode(ib[:per])))
            ids = ids[-limit:]  # a last resort that keeps the question's end
        if not self._chat() and tok.bos_token_id is not None and len(ids) < limit:
            ids = [tok.bos_token_id, *ids]
        return ids + prefix

    def prob_a(self, triples: Sequence[tuple[str, str, str]]) -> np.ndarray:
        """P("A") / (P("A") + P("B")) at the answer position, for each (instruction, response A, response B)."""
        import torch

        model, tok = self._load()
        _, a_id, b_id = self._label_ids()
        encoded = [self.encode(*t) for t in triples]
        order = sorted(range(len(encoded)), key=lambda k: len(encoded[k]))
        out = np.zeros(len(encoded), dtype=np.float64)
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        device = next(model.parameters()).device
        takes_positions = "position_ids" in inspect.signature(model.forward).parameters
        progress = self._progress or Progress(None, 0)
        with torch.no_grad():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                width = max(len(encoded[k]) for k in chunk)
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, k in enumerate(chunk):  # left padding: the answer position is the last column
                    seq = encoded[k]
                    ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
                    mask[row, width - len(seq) :] = 1
                kwargs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
                if takes_positions:
                    kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0).to(device)
                logits = model(**kwargs).logits[:, -1, :].float()
                pair = torch.stack([logits[:, a_id], logits[:, b_id]], dim=-1)
                probs = torch.softmax(pair, dim=-1)[:, 0].cpu().numpy()
                for row, k in enumerate(chunk):
                    out[k] = float(probs[row])
                progress.advance(len(chunk))
        return out

    def _judge(self, pairs: pl.DataFrame):
        rows = pairs.select("instruction", "output_1", "output_2").rows()
        self._progress = Progress(f"judge {self.annotator}", 2 * len(rows), "questions")  # both orders
        try:
            first = self.prob_a([(i, ref, mod) for i, ref, mod in rows])  # reference as A
            second = self.prob_a([(i, mod, ref) for i, ref, mod in rows])  # model as A
        finally:
            self._progress = None
        prefs = [swap_averaged_preference(float(f), float(s)) for f, s in zip(first, second, strict=True)]
        return prefs, [2.0 - p for p in prefs], [p - 1.0 for p in prefs]
