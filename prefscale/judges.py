"""Pairwise judges that annotate model-vs-reference pairs in alpaca_eval's format, and their AlpacaEval metrics.

Every judge turns a frame of pairs (`instruction`, `output_1` = the reference, `output_2` = the model, plus
`task_type`, `finished_1`, `finished_2` where known; `prefscale.eval_sets` builds them) into annotations with
alpaca_eval's columns: `instruction`, `output_1`, `output_2`, `generator_1`, `generator_2`, `annotator` and
`preference`, a float in [1, 2] (1: the reference is better, 2: the model is better, 1.5: a tie; null: the judge's
answer could not be parsed). As alpaca_eval does, a pair whose two outputs are the same text is a tie (1.5)
without asking the judge. `score_1` / `score_2` keep the judge's own per-side numbers where it has them.

The judges (the recipe's `evaluation.judges`):

- `rubric`: the embedded domain's SME rubric (`prefscale.rubric.score`): the higher score wins, equal scores tie.
  It reproduces `eval_results`' win rate exactly on the `heldout_base` reference.
- `weak_supervision`: the recipe's own labeling functions and Snorkel label model, fitted on the outputs being
  compared (both sides), P(high) as the reward: the higher reward wins, equal rewards tie.
- `pairrm`: PairRM through llm-blender (`prefscale.pairrm`): preference = 1 + sigmoid(M[model, ref] -
  M[ref, model]), the order-balanced P(model beats reference). `tiny` is a random offline ranker: a code path.
- `local_llm`: a causal LM from any `from_pretrained` folder asked "Which response is better, A or B?"; P(A) vs
  P(B) from the next-token logits, asked in both orders and averaged to cancel position bias.
- `alpaca_eval_gpt4_turbo`: the official AlpacaEval 2.0 judge (`weighted_alpaca_eval_gpt4_turbo` by default)
  through `alpaca_eval.annotators.PairwiseAnnotator`; needs `OPENAI_API_KEY` (checked when the judge is made,
  before any work) and honours `OPENAI_BASE_URL` / `OPENAI_API_BASE` for an OpenAI-compatible server.

`judge_metrics` computes the leaderboard numbers of one judge's annotations with alpaca_eval's own functions
(`prefscale.alpacaeval.compute_metrics`) and converts the rates to the warehouse's 0-1 scale.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from prefscale import rubric

TIE = 1.5
ALPACA_COLUMNS = (
    "instruction",
    "output_1",
    "output_2",
    "generator_1",
    "generator_2",
    "annotator",
    "preference",
)
ANNOTATION_SCHEMA = {
    "prompt_id": pl.String,
    "sample_idx": pl.Int32,
    "task_type": pl.String,
    "instruction": pl.String,
    "output_1": pl.String,
    "output_2": pl.String,
    "generator_1": pl.String,
    "generator_2": pl.String,
    "annotator": pl.String,
    "judge": pl.String,
    "preference": pl.Float64,
    "score_1": pl.Float64,
    "score_2": pl.Float64,
}
PAIR_COLUMNS = ("instruction", "output_1", "output_2")

JUDGE_LABELS = {
    "rubric": "sme_rubric",  # the name eval_results / eval_leaderboard already use
    "weak_supervision": "weak_supervision",
    "pairrm": "pairrm",
    "local_llm": "local_llm",
    "alpaca_eval_gpt4_turbo": "alpaca_eval_gpt4_turbo",
}
OPENAI_KEY_VAR = "OPENAI_API_KEY"
TINY_PAIRRM = "tiny"

log = logging.getLogger(__name__)


class MissingAPIKeyError(RuntimeError):
    """A judge that needs an API key found none in the environment."""


# --------------------------------------------------------------------------------------------------- the base


def _complete_pairs(pairs: pl.DataFrame) -> pl.DataFrame:
    missing = [c for c in PAIR_COLUMNS if c not in pairs.columns]
    if missing:
        raise ValueError(f"pairs lack columns {missing}")
    n = pairs.height
    defaults = {
        "prompt_id": pl.Series([f"p{k:05d}" for k in range(n)], dtype=pl.String),
        "sample_idx": pl.Series([0] * n, dtype=pl.Int32),
        "task_type": pl.Series([""] * n, dtype=pl.String),
        "finished_1": pl.Series([True] * n, dtype=pl.Boolean),
        "finished_2": pl.Series([True] * n, dtype=pl.Boolean),
    }
    return pairs.with_columns(
        [s.alias(c) for c, s in defaults.items() if c not in pairs.columns]
    ).with_columns(
        pl.col("prompt_id").cast(pl.String),
        pl.col("sample_idx").cast(pl.Int32),
        pl.col("task_type").cast(pl.String).fill_null(""),
        pl.col("finished_1").cast(pl.Boolean).fill_null(True),
        pl.col("finished_2").cast(pl.Boolean).fill_null(True),
    )


class Judge:
    """A pairwise judge. Subclasses implement `_judge(pairs) -> (preferences, score_1, score_2)`."""

    name = "judge"  # the recipe's name for it

    @property
    def label(self) -> str:
        """The judge's name in the metrics and the leaderboard."""
        return JUDGE_LABELS.get(self.name, self.name)

    @property
    def annotator(self) -> str:
        """What exactly judged (the `annotator` column): the label plus the model or config where it matters."""
        return self.label

    def annotate(self, pairs: pl.DataFrame, *, generator_1: str, generator_2: str) -> pl.DataFrame:
        """Annotations (`ANNOTATION_SCHEMA`) of `pairs` in their order; identical outputs tie without judging."""
        pairs = _complete_pairs(pairs)
        same = (pairs["output_1"] == pairs["output_2"]).to_list()
        todo = [k for k, s in enumerate(same) if not s]
        prefs: list[float | None] = [TIE] * pairs.height
        s1: list[float | None] = [None] * pairs.height
        s2: list[float | None] = [None] * pairs.height
        if todo:
            sub = pairs[todo]
            p, a, b = self._judge(sub)
            if not (len(p) == len(a) == len(b) == sub.height):
                raise RuntimeError(f"{self.label}: judged {len(p)} of {sub.height} pairs")
            for k, pk, ak, bk in zip(todo, p, a, b, strict=True):
                prefs[k], s1[k], s2[k] = _preference(pk, self.label), ak, bk
        return pl.DataFrame(
            {
                "prompt_id": pairs["prompt_id"],
                "sample_idx": pairs["sample_idx"],
                "task_type": pairs["task_type"],
                "instruction": pairs["instruction"],
                "output_1": pairs["output_1"],
                "output_2": pairs["output_2"],
                "generator_1": [generator_1] * pairs.height,
                "generator_2": [generator_2] * pairs.height,
                "annotator": [self.annotator] * pairs.height,
                "judge": [self.label] * pairs.height,
                "preference": prefs,
                "score_1": s1,
                "score_2": s2,
            },
            schema=ANNOTATION_SCHEMA,
        )

    def _judge(
        self, pairs: pl.DataFrame
    ) -> tuple[list[float | None], list[float | None], list[float | None]]:
        raise NotImplementedError  # pragma: no cover


def _preference(value: Any, judge: str) -> float | None:
    if value is None:
        return None
    v = float(value)
    if math.isnan(v):
        return None
    if not 1.0 - 1e-9 <= v <= 2.0 + 1e-9:
        raise RuntimeError(f"{judge}: preference {v!r} outside [1, 2]")
    return min(2.0, max(1.0, v))


def compare_scores(a: float, b: float, eps: float = 1e-9) -> float:
    """alpaca_eval's preference from two scores (a: the reference, b: the model): 1, 2, or 1.5 when equal."""
    if abs(a - b) < eps:
        return TIE
    return 2.0 if b > a else 1.0


# ---------------------------------------------------------------------------------------------- rubric judge


class RubricJudge(Judge):
    """The SME rubric (`prefscale.rubric.score`, the task type of the prompt, unfinished samples penalised)."""

    name = "rubric"

    def _judge(self, pairs: pl.DataFrame):
        prefs, s1, s2 = [], [], []
        for r1, r2, t, f1, f2 in pairs.select(
            "output_1", "output_2", "task_type", "finished_1", "finished_2"
        ).iter_rows():
            a, b = rubric.score(r1, t or "", bool(f1)), rubric.score(r2, t or "", bool(f2))
            prefs.append(compare_scores(a, b))
            s1.append(a)
            s2.append(b)
        return prefs, s1, s2


# ------------------------------------------------------------------------------------ weak-supervision judge


class WeakSupervisionJudge(Judge):
    """The recipe's LFs → Snorkel label model, fitted on both sides' outputs; P(high) is the reward."""

    name = "weak_supervision"

    def __init__(self, lfs: Sequence[Any], label_model: Any = None, *, seed: int = 0) -> None:
        from prefscale.labeling import validate_lfs

        validate_lfs(lfs)
        self.lfs = list(lfs)
        self.lm = label_model
        self.seed = seed

    @property
    def annotator(self) -> str:
        return f"label_model({len(self.lfs)} LFs)"

    def _judge(self, pairs: pl.DataFrame):
        from prefscale.label_model import fit_label_model
        from prefscale.labeling import apply_lfs

        n = pairs.height
        side = lambda out, fin, tag: pairs.select(  # noqa: E731
            pl.format(f"{tag}{{}}", pl.int_range(0, n)).alias("candidate_id"),
            pl.col("instruction").alias("prompt"),
            pl.col(out).alias("response"),
            pl.col("task_type").fill_null(""),
            pl.when(pl.col(fin)).then(pl.lit("stop")).otherwise(pl.lit("length")).alias("finish_reason"),
        )
        rows = pl.concat([side("output_1", "finished_1", "r"), side("output_2", "finished_2", "m")])
        votes = apply_lfs(rows, self.lfs)
        kwargs = {}
        if self.lm is not None:
            kwargs = {k: getattr(self.lm, k) for k in ("n_epochs", "lr", "l2", "prec_init")}
        fit = fit_label_model(votes, [lf.name for lf in self.lfs], seed=self.seed, **kwargs)
        p = dict(zip(fit.labels["candidate_id"], fit.labels["p_high"], strict=True))
        s1 = [float(p[f"r{k}"]) for k in range(n)]
        s2 = [float(p[f"m{k}"]) for k in range(n)]
        return [compare_scores(a, b) for a, b in zip(s1, s2, strict=True)], s1, s2


# -------------------------------------------------------------------------------------------------- PairRM


class PairRMJudge(Judge):
    """PairRM (llm-blender): preference = 1 + P(model beats reference), order-balanced (both orders are run)."""

    name = "pairrm"

    def __init__(
        self,
        model: str = TINY_PAIRRM,
        *,
        cache_dir: str | Path | None = None,
        device: str = "cpu",
        batch_size: int = 8,
        seed: int = 0,
    ) -> None:
        self.model, self.cache_dir, self.device = model, cache_dir, device
        self.batch_size, self.seed = batch_size, seed
        self._blender: Any = None

    @property
    def annotator(self) -> str:
        return f"pairrm[{self.model}]"

    def ranker_path(self) -> str:
        """The ranker folder or hub id; `tiny` builds (once, under `cache_dir`) a random tiny ranker."""
        if self.model != TINY_PAIRRM:
            return self.model
        from prefscale.pairrm import build_tiny_ranker

        root = Path(self.cache_dir) if self.cache_dir else Path(tempfile.mkdtemp(prefix="prefscale-pairrm-"))
        folder = root / f"pairrm-tiny-seed{self.seed}"
        if not (folder / "config.json").is_file():
            root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".pairrm-", dir=root))
            try:
                build_tiny_ranker(tmp / "ranker", seed=self.seed)
                os.replace(tmp / "ranker", folder)
            except OSError:
                if not (folder / "config.json").is_file():  # not built concurrently either: a real error
                    raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return str(folder)

    def _judge(self, pairs: pl.DataFrame):
        from prefscale.pairrm import load_ranker, pairrm_matrix, win_probabilities

        if self._blender is None:
            self._blender = load_ranker(self.ranker_path(), self.device)
        mats = pairrm_matrix(
            self._blender,
            pairs["instruction"].to_list(),
            [[a, b] for a, b in zip(pairs["output_1"], pairs["output_2"], strict=True)],
            self.batch_size,
        )
        p_model = [float(win_probabilities(m)[1, 0]) for m in mats]  # row 1 = the model, column 0 = the ref
        return [1.0 + p for p in p_model], [1.0 - p for p in p_model], p_model


# --------------------------------------------------------------------------------------------- local LLM judge

LOCAL_LLM_QUESTION = (
    "You are judging two responses to the same request. Which response is better, A or B?\n\n"
    "Request:\n{instruction}\n\n"
    "Response A:\n{a}\n\n"
    "Response B:\n{b}\n\n"
    "Which response is better, A or B? Answer with the letter only."
)


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
    responses are truncated (in tokens) so the prompt fits the model's context. The answer is read from the
    next-token logits of "A" and "B" (after their shared prefix, e.g. a space token), batched.
    """

    name = "local_llm"

    def __init__(
        self, model: str | Path, *, compute: Any = None, batch_size: int = 8, max_length: int | None = None
    ) -> None:
        self.model_ref = str(model)
        self.compute = compute
        self.batch_size = batch_size
        self.max_length = max_length
        self._loaded: tuple[Any, Any] | None = None

    @property
    def annotator(self) -> str:
        return f"local_llm[{Path(self.model_ref).name or self.model_ref}]"

    # -- model plumbing
    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            from prefscale.compute import resolve_compute
            from prefscale.policy import load_policy

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
        question = LOCAL_LLM_QUESTION.format(instruction=instruction, a=a, b=b)
        if self._chat():
            from prefscale.policy import chat_text

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
        return out

    def _judge(self, pairs: pl.DataFrame):
        rows = pairs.select("instruction", "output_1", "output_2").rows()
        first = self.prob_a([(i, ref, mod) for i, ref, mod in rows])  # reference as A
        second = self.prob_a([(i, mod, ref) for i, ref, mod in rows])  # model as A
        prefs = [swap_averaged_preference(float(f), float(s)) for f, s in zip(first, second, strict=True)]
        return prefs, [2.0 - p for p in prefs], [p - 1.0 for p in prefs]


# ------------------------------------------------------------------------------------ the official AlpacaEval


@contextlib.contextmanager
def _quiet_alpaca_eval() -> Iterator[None]:
    """alpaca_eval sets the root logger to INFO on import and warns loudly; keep the caller's logging as it was."""
    root = logging.getLogger()
    level = root.level
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def require_openai_key() -> None:
    """Raise `MissingAPIKeyError` naming `OPENAI_API_KEY` when it is unset or empty (the value is never shown)."""
    if not os.environ.get(OPENAI_KEY_VAR, "").strip():
        raise MissingAPIKeyError(
            f"the alpaca_eval_gpt4_turbo judge calls the OpenAI API and needs a key in the environment variable "
            f"{OPENAI_KEY_VAR}, which is not set. Export {OPENAI_KEY_VAR} (and OPENAI_BASE_URL for an "
            "OpenAI-compatible server), or remove alpaca_eval_gpt4_turbo from evaluation.judges."
        )


class AlpacaEvalJudge(Judge):
    """The official AlpacaEval judge via `alpaca_eval.annotators.PairwiseAnnotator` (its prompts, its parser).

    `annotator_config` is an alpaca_eval evaluator name (default `weighted_alpaca_eval_gpt4_turbo`: GPT-4 Turbo,
    the preference from the logprobs of the two model identifiers) or a path to a `configs.yaml`. The OpenAI
    client is configured through a client-config file alpaca_eval reads (`client_config_path`) that holds no
    secret: the client takes the key from `OPENAI_API_KEY` itself, and the base URL from `OPENAI_BASE_URL` (or
    alpaca_eval's `OPENAI_API_BASE`). `caching_path` is alpaca_eval's JSON cache of annotations, so a re-run
    does not pay twice (None: no cache).
    """

    name = "alpaca_eval_gpt4_turbo"

    def __init__(
        self,
        annotator_config: str = "weighted_alpaca_eval_gpt4_turbo",
        *,
        caching_path: str | Path | None = None,
        seed: int = 0,
    ) -> None:
        require_openai_key()  # before any work
        self.annotator_config = annotator_config
        self.caching_path = caching_path
        self.seed = seed

    @property
    def annotator(self) -> str:
        cfg = Path(self.annotator_config)
        return cfg.parent.name if cfg.name == "configs.yaml" else cfg.name

    def _client_config(self, folder: Path) -> Path:
        import yaml

        config: dict[str, Any] = {}
        base = os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_BASE")
        if base:
            config["base_url"] = base
        path = folder / "openai_client_configs.yaml"
        path.write_text(yaml.safe_dump({"default": [config]}))
        return path

    def _judge(self, pairs: pl.DataFrame):
        require_openai_key()
        with _quiet_alpaca_eval():
            from alpaca_eval.annotators import PairwiseAnnotator

        frame = pairs.select(*PAIR_COLUMNS).to_pandas()
        if self.caching_path is not None:
            Path(self.caching_path).parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="prefscale-alpaca-eval-") as tmp, _quiet_alpaca_eval():
            annotator = PairwiseAnnotator(
                annotators_config=self.annotator_config,
                caching_path=str(self.caching_path) if self.caching_path is not None else None,
                seed=self.seed,
            )
            out = annotator.annotate_pairs(frame, client_config_path=str(self._client_config(Path(tmp))))
        found: dict[tuple[str, str, str], float | None] = {}
        for row in out:
            pref = row.get("preference")
            pref = None if pref is None or (isinstance(pref, float) and math.isnan(pref)) else float(pref)
            found[(str(row["instruction"]), str(row["output_1"]), str(row["output_2"]))] = pref
        prefs = [found.get(k) for k in pairs.select(*PAIR_COLUMNS).iter_rows()]
        none = [None] * len(prefs)
        return prefs, none, none


# ----------------------------------------------------------------------------------------------- the factory


def make_judges(
    names: Sequence[str],
    evaluation: Any,
    *,
    lfs: Sequence[Any] = (),
    label_model: Any = None,
    seed: int = 0,
    compute: Any = None,
    cache_dir: str | Path | None = None,
    local_llm_model: str | Path | None = None,
) -> list[Judge]:
    """The recipe's judges, in order. Cheap: nothing is loaded until a judge first judges, except that the
    official judge checks `OPENAI_API_KEY` here, before any other work (a missing key fails the whole step early).

    `evaluation` is the recipe's `EvaluationConfig`; `local_llm_model` is the fallback model of the local LLM
    judge (the base policy folder) when `evaluation.local_llm_model` is not set.
    """
    if "alpaca_eval_gpt4_turbo" in names:
        require_openai_key()
    judges: list[Judge] = []
    cache = Path(cache_dir) if cache_dir else None
    for name in names:
        if name == "rubric":
            judges.append(RubricJudge())
        elif name == "weak_supervision":
            if not lfs:
                raise ValueError("the weak_supervision judge needs the recipe's labeling functions")
            judges.append(WeakSupervisionJudge(lfs, label_model, seed=seed))
        elif name == "pairrm":
            judges.append(
                PairRMJudge(
                    evaluation.pairrm_model,
                    cache_dir=cache / "pairrm" if cache else None,
                    device=getattr(compute, "device", "cpu"),
                    batch_size=evaluation.judge_batch_size,
                    seed=seed,
                )
            )
        elif name == "local_llm":
            model = evaluation.local_llm_model or local_llm_model
            if model is None:
                raise ValueError("the local_llm judge needs a model: set evaluation.local_llm_model")
            judges.append(LocalLLMJudge(model, compute=compute, batch_size=evaluation.judge_batch_size))
        elif name == "alpaca_eval_gpt4_turbo":
            judge = AlpacaEvalJudge(evaluation.annotator_config)
            if cache:  # alpaca_eval's own JSON cache of annotations: a re-run does not pay twice
                judge.caching_path = cache / "alpaca_eval" / f"annotations_{judge.annotator}.json"
            judges.append(judge)
        else:
            raise ValueError(f"unknown judge {name!r}")
    return judges


# ---------------------------------------------------------------------------------------------------- metrics

METRICS_SCHEMA = {
    "iteration": pl.Int32,
    "variant": pl.String,  # base | checkpoint | best_of_n
    "model": pl.String,
    "judge": pl.String,
    "annotator": pl.String,
    "reference": pl.String,  # heldout_base | alpaca_eval | file
    "reference_generator": pl.String,
    "win_rate": pl.Float64,  # 0-1 (alpaca_eval's 0-100 / 100), as eval_leaderboard
    "standard_error": pl.Float64,  # 0-1
    "lc_win_rate": pl.Float64,  # 0-1, alpaca_eval's length_controlled_minimal (offline)
    "lc_variant": pl.String,
    "discrete_win_rate": pl.Float64,  # 0-1
    "n_wins": pl.Int32,
    "n_wins_base": pl.Int32,  # the reference won (eval_leaderboard's n_losses)
    "n_draws": pl.Int32,
    "n_total": pl.Int32,
    "n_unparsed": pl.Int32,
    "avg_length": pl.Float64,  # alpaca_eval's int(mean characters of the model outputs)
    "unfinished_rate": pl.Float64,  # share of model outputs cut at the token limit (null when unknown)
    "source_partition": pl.String,  # the alpaca_eval_results partition that computed the row
}


def _scaled(x: Any) -> float | None:
    return None if x is None else float(x) / 100.0


def judge_metrics(
    annotations: pl.DataFrame,
    *,
    iteration: int,
    variant: str,
    model: str,
    reference: str,
    source_partition: str,
    unfinished_rate: float | None = None,
) -> dict[str, Any]:
    """One metrics row (`METRICS_SCHEMA`) of one judge's annotations, through `prefscale.alpacaeval`.

    alpaca_eval reports rates on 0-100; here they are divided by 100 to match `eval_leaderboard`'s 0-1 scale.
    """
    from prefscale.alpacaeval import compute_metrics

    m = compute_metrics(annotations.select(*ALPACA_COLUMNS).to_pandas())
    return {
        "iteration": iteration,
        "variant": variant,
        "model": model,
        "judge": annotations["judge"][0],
        "annotator": m["annotator"] or annotations["annotator"][0],
        "reference": reference,
        "reference_generator": m["baseline"],
        "win_rate": _scaled(m["win_rate"]),
        "standard_error": _scaled(m["standard_error"]),
        "lc_win_rate": _scaled(m.get("length_controlled_winrate")),
        "lc_variant": m.get("lc_variant"),
        "discrete_win_rate": _scaled(m["discrete_win_rate"]),
        "n_wins": m["n_wins"],
        "n_wins_base": m["n_wins_base"],
        "n_draws": m["n_draws"],
        "n_total": m["n_total"],
        "n_unparsed": m["n_unparsed"],
        "avg_length": float(m["avg_length"]),
        "unfinished_rate": unfinished_rate,
        "source_partition": source_partition,
    }


def metrics_frame(rows: Sequence[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=METRICS_SCHEMA, orient="row")


# ----------------------------------------------------------------------------------------- running the judges


@dataclass(frozen=True)
class Comparison:
    """One model's outputs against the reference: `pairs` as `prefscale.eval_sets` builds them."""

    variant: str  # base | checkpoint | best_of_n
    iteration: int
    model: str  # generator_2
    pairs: pl.DataFrame
    unfinished_rate: float | None = None


def run_judges(
    judges: Sequence[Judge],
    comparisons: Sequence[Comparison],
    *,
    reference: str,
    reference_generator: str,
    source_partition: str,
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    """Every judge on every comparison: ({judge label: annotations with iteration and variant}, metrics table).

    Judge by judge (each model-based judge loads its model once). The metrics table has one row per
    (variant, judge), `METRICS_SCHEMA`, rates on 0-1.
    """
    annotations: dict[str, pl.DataFrame] = {}
    rows = []
    for judge in judges:
        frames = []
        for c in comparisons:
            ann = judge.annotate(c.pairs, generator_1=reference_generator, generator_2=c.model)
            rows.append(
                judge_metrics(
                    ann,
                    iteration=c.iteration,
                    variant=c.variant,
                    model=c.model,
                    reference=reference,
                    source_partition=source_partition,
                    unfinished_rate=c.unfinished_rate,
                )
            )
            frames.append(
                ann.select(
                    pl.lit(c.iteration, pl.Int32).alias("iteration"),
                    pl.lit(c.variant).alias("variant"),
                    pl.all(),
                )
            )
        annotations[judge.label] = pl.concat(frames)
    return annotations, metrics_frame(rows)
