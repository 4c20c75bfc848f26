"""The weak-supervision reward model: a small transformer trained on the label model's soft labels.

The label model scores only what the labeling functions see: candidates no LF fires on get the prior, and two
candidates with the same votes tie. A reward model trained on those labels generalises them over the text, the
way Snorkel trains an end model on its probabilistic labels (and the way Snorkel's blog describes "a custom reward
model with programmatic labels"): a `LlamaForSequenceClassification` with one logit, pooled at the last token
of the chat-formatted (prompt, response), trained with binary cross-entropy against P(high) as a soft target
(the noise-aware loss: no thresholding at 0.5). Its score is `sigmoid(logit)`, a predicted P(high).

- **Initialisation** (`reward.reward_model.init`): `policy` (default) puts the head on the base policy's own
  weights and tokenizer, which already know the domain's text; `scratch` builds a random Llama of the given size
  with the base policy's tokenizer, for a pretrained policy too large to fine-tune as a scorer.
- **Training data and reuse.** The model is trained once, on iteration 1's candidates (the base policy's
  samples) and their `quality_labels`, and reused by every iteration. Its inputs are therefore
  `candidates[1]`, `quality_labels[1]` and `base_policy` (tokenizer and initial weights), plus its settings and
  the seed: `ensure_reward_model` reuses the current `reward_model` version when its manifest records exactly
  those inputs and settings, and trains a new one otherwise. Training on a later iteration's labels would make
  iteration 1's rewards depend on a model trained downstream of them (a cycle), and retraining every iteration
  would chase the policy it is meant to judge.

`REWARD_MODEL` is the `reward_model` reward source: a trained folder's predicted P(high) for any rows.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from prefscale.compute import Compute, resolve_compute
from prefscale.config.rewards import RewardModelSettings
from prefscale.policy.chat import chat_text
from prefscale.progress import Progress
from prefscale.rewards.base import ScoringContext, SourceScores
from prefscale.storage import UNPARTITIONED, ArtifactRef, ArtifactStore, MissingArtifactError

REWARD_MODEL_ASSET = "reward_model"
TRAIN_ITERATION = 1  # the iteration whose candidates and labels train the model
REPORT_FILE = "prefscale_reward_model.json"


@dataclass(frozen=True)
class RewardModelReport:
    steps: int
    first_loss: float
    final_loss: float  # mean loss over the last epoch
    seconds: float
    n_examples: int
    n_parameters: int
    pearson_with_labels: float  # predicted vs label-model P(high), on the training candidates
    pair_agreement: (
        float  # share of same-prompt pairs with distinct P(high) that the model orders the same way
    )


def reward_model_text(tokenizer: Any, prompt: str, response: str) -> str:
    """The text the model scores: the chat-formatted exchange, or `prompt\\n\\nresponse` without a template."""
    if getattr(tokenizer, "chat_template", None):
        return chat_text(tokenizer, prompt, response)
    return f"{prompt}\n\n{response}"


def _quiet() -> None:
    for name in ("transformers", "transformers.modeling_utils"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _build_model(policy_dir: Path, settings: RewardModelSettings, tokenizer: Any) -> Any:
    import torch
    from transformers import AutoModelForSequenceClassification, LlamaConfig, LlamaForSequenceClassification

    if settings.init == "policy":
        model = AutoModelForSequenceClassification.from_pretrained(
            policy_dir, num_labels=1, dtype=torch.float32
        )
    else:
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=settings.hidden_size,
            intermediate_size=2 * settings.hidden_size,
            num_hidden_layers=settings.num_layers,
            num_attention_heads=settings.num_heads,
            num_key_value_heads=settings.num_heads,
            max_position_embeddings=max(settings.max_length, 64),
            num_labels=1,
        )
        model = LlamaForSequenceClassification(config)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.problem_type = "regression"
    return model


def _load_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    tok.truncation_side = "left"  # keep the end of the response: the score is read at the last token
    return tok


def _encode(tokenizer: Any, texts: list[str], max_length: int, device: str) -> dict[str, Any]:
    enc = tokenizer(
        texts,
        add_special_tokens=False,
        truncation=True,
        max_length=max_length,
        padding=True,
        return_tensors="pt",
    )
    # No attention mask: the padding is on the right of a causal model, so no real token ever attends to it and
    # the score is read at the last real token. The result is the same; the masked path is several times slower.
    return {"input_ids": enc["input_ids"].to(device)}


def _logits(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    max_length: int,
    batch_size: int,
    device: str,
    label: str | None = None,
):
    import torch

    out = []
    progress = Progress(label, len(texts), "responses")
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = _encode(tokenizer, texts[start : start + batch_size], max_length, device)
            out.append(model(**batch).logits[:, 0].float().cpu().numpy())
            progress.advance(len(out[-1]))
    return np.concatenate(out) if out else np.zeros(0)


def train_reward_model(
    policy_dir: Path,
    candidates: pl.DataFrame,
    labels: pl.DataFrame,
    settings: RewardModelSettings,
    out_dir: Path,
    compute: Compute,
    seed: int,
) -> RewardModelReport:
    """Fit the head (and body) on (prompt, response) → P(high); save model + tokenizer + report to `out_dir`."""
    import torch

    _quiet()
    data = candidates.select("candidate_id", "prompt_id", "prompt", "response").join(
        labels.select("candidate_id", "p_high"), on="candidate_id", how="inner"
    )
    if data.height != candidates.height:
        raise ValueError(f"{candidates.height - data.height} candidates have no quality label")
    if data.height < 2:
        raise ValueError("the reward model needs at least 2 labelled candidates")
    torch.manual_seed(seed)
    tokenizer = _load_tokenizer(Path(policy_dir))
    model = _build_model(Path(policy_dir), settings, tokenizer).to(compute.device)
    texts = [
        reward_model_text(tokenizer, p, r) for p, r in zip(data["prompt"], data["response"], strict=True)
    ]
    targets = torch.tensor(data["p_high"].to_numpy(), dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.01)
    rng = random.Random(seed)
    # Batches of similar length (little padding), in a fresh random order every epoch.
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    by_length = sorted(range(len(texts)), key=lambda i: (lengths[i], i))
    batches = [by_length[i : i + settings.batch_size] for i in range(0, len(texts), settings.batch_size)]
    total = len(batches) * settings.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / max(1, total))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    progress = Progress("reward model: training", total, "steps")
    t0 = time.perf_counter()
    first = float("nan")
    epoch_losses: list[float] = []
    for _ in range(settings.epochs):
        rng.shuffle(batches)
        epoch_losses = []
        for idx in batches:
            batch = _encode(tokenizer, [texts[i] for i in idx], settings.max_length, compute.device)
            logits = model(**batch).logits[:, 0].float()
            loss = loss_fn(logits, targets[idx].to(compute.device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            epoch_losses.append(float(loss.detach()))
            if math.isnan(first):
                first = epoch_losses[-1]
            progress.advance(detail=f"loss={epoch_losses[-1]:.4g}")
    seconds = time.perf_counter() - t0
    model.eval()
    predicted = 1.0 / (
        1.0 + np.exp(-_logits(model, tokenizer, texts, settings.max_length, 64, compute.device))
    )
    report = RewardModelReport(
        steps=total,
        first_loss=first,
        final_loss=float(np.mean(epoch_losses)),
        seconds=seconds,
        n_examples=len(texts),
        n_parameters=sum(p.numel() for p in model.parameters()),
        pearson_with_labels=_pearson(predicted, data["p_high"].to_numpy()),
        pair_agreement=float(
            pair_agreement(data["prompt_id"].to_list(), predicted, data["p_high"].to_numpy())
        ),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    facts = {
        k: v for k, v in asdict(report).items() if k != "seconds"
    }  # what defines the weights, not timing
    (out_dir / REPORT_FILE).write_text(
        json.dumps({"max_length": settings.max_length, **facts}, indent=2, sort_keys=True) + "\n"
    )
    return report


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def pair_agreement(prompt_ids: list[str], predicted: np.ndarray, target: np.ndarray) -> float:
    """Share of same-prompt candidate pairs with distinct targets that `predicted` orders the same way."""
    by_prompt: dict[str, list[int]] = {}
    for k, pid in enumerate(prompt_ids):
        by_prompt.setdefault(pid, []).append(k)
    agree = total = 0
    for idx in by_prompt.values():
        for a in range(len(idx)):
            for b in range(a + 1, len(idx)):
                i, j = idx[a], idx[b]
                if target[i] == target[j]:
                    continue
                total += 1
                agree += (predicted[i] - predicted[j]) * (target[i] - target[j]) > 0
    return agree / total if total else float("nan")


def load_reward_model(folder: Path | str, compute: Compute) -> tuple[Any, Any, int]:
    """(model, tokenizer, max_length) from a folder `train_reward_model` wrote."""
    import torch
    from transformers import AutoModelForSequenceClassification

    _quiet()
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"not a reward model folder (no config.json): {folder}")
    tokenizer = _load_tokenizer(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32)
    model.to(compute.device).eval()
    report = folder / REPORT_FILE
    max_length = json.loads(report.read_text()).get("max_length", 256) if report.is_file() else 256
    return model, tokenizer, int(max_length)


def score_texts(
    folder: Path | str, prompts: list[str], responses: list[str], compute: Compute, batch_size: int = 64
) -> np.ndarray:
    """The reward model's P(high) for each (prompt, response)."""
    model, tokenizer, max_length = load_reward_model(folder, compute)
    texts = [reward_model_text(tokenizer, p, r) for p, r in zip(prompts, responses, strict=True)]
    logits = _logits(model, tokenizer, texts, max_length, batch_size, compute.device, "reward model: scoring")
    return 1.0 / (1.0 + np.exp(-logits))


def reward_model_scores(candidates: pl.DataFrame, folder: Path | str, compute: Compute) -> pl.DataFrame:
    """(candidate_id, score) for every candidate: the reward model's predicted P(high)."""
    scores = score_texts(folder, candidates["prompt"].to_list(), candidates["response"].to_list(), compute)
    return pl.DataFrame({"candidate_id": candidates["candidate_id"], "score": scores.astype(np.float64)})


class RewardModelSource:
    """The `reward_model` reward source: a trained reward model folder's predicted P(high) per row."""

    name = "reward_model"

    def score(self, rows: pl.DataFrame, ctx: ScoringContext) -> SourceScores:
        if ctx.reward_model_dir is None:
            raise ctx.missing(self.name, "a trained reward model folder", "reward_model_dir")
        compute = ctx.compute if ctx.compute is not None else resolve_compute(ctx.device)
        return SourceScores(reward_model_scores(rows, ctx.reward_model_dir, compute))


REWARD_MODEL = RewardModelSource()


# --- the versioned artifact: reuse unless the inputs change ---------------------------------------------------


def reward_model_inputs(store: ArtifactStore) -> list[ArtifactRef]:
    """The artifacts the model is made from: iteration 1's candidates and labels, and the base policy."""
    try:
        return [
            store.current("candidates", str(TRAIN_ITERATION)),
            store.current("quality_labels", str(TRAIN_ITERATION)),
            store.current("base_policy", UNPARTITIONED),
        ]
    except MissingArtifactError as e:
        raise MissingArtifactError(
            f"the reward model is trained on iteration {TRAIN_ITERATION}'s candidates and quality_labels and the "
            f"base policy: {e}"
        ) from None


def reward_model_params(settings: RewardModelSettings, seed: int) -> dict[str, Any]:
    return {
        "reward_model": settings.model_dump(mode="json"),
        "seed": seed,
        "trained_on_iteration": TRAIN_ITERATION,
        "objective": "bce on label-model P(high) (soft labels)",
        "architecture": "LlamaForSequenceClassification",
    }


def _normal(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def find_reward_model(
    store: ArtifactStore, inputs: list[ArtifactRef], params: dict[str, Any]
) -> ArtifactRef | None:
    """The current `reward_model` version when it was made from exactly `inputs` with `params`, else None."""
    try:
        ref = store.current(REWARD_MODEL_ASSET, UNPARTITIONED)
        manifest = store.manifest(ref)
    except MissingArtifactError:
        return None
    recorded = [(i["asset"], i["partition"], i["version"]) for i in manifest.get("inputs", [])]
    wanted = [(r.asset, r.partition, r.version) for r in inputs]
    if recorded != wanted or _normal(manifest.get("params", {})) != _normal(params):
        return None
    if store.verify(ref):
        return None  # a damaged version is never reused
    return ref


def ensure_reward_model(
    store: ArtifactStore, settings: RewardModelSettings, seed: int, compute: Compute
) -> tuple[ArtifactRef, RewardModelReport | None]:
    """The reward model for these inputs and settings: reused when current, else trained and published.

    Returns the version and, when it was trained by this call, the training report (None when reused).
    """
    inputs = reward_model_inputs(store)
    params = reward_model_params(settings, seed)
    found = find_reward_model(store, inputs, params)
    if found is not None:
        return found, None
    candidates = pl.read_parquet(inputs[0].file())
    labels = pl.read_parquet(inputs[1].file())
    holder: dict[str, RewardModelReport] = {}

    def build(d: Path) -> None:
        holder["report"] = train_reward_model(inputs[2].path, candidates, labels, settings, d, compute, seed)

    ref = store.publish_dir(REWARD_MODEL_ASSET, UNPARTITIONED, build, inputs=inputs, params=params)
    return ref, holder["report"]


def stored_report(ref: ArtifactRef) -> dict[str, Any]:
    """The training facts saved beside a published reward model (no timing)."""
    path = ref.path / REPORT_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
