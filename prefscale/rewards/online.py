"""The recipe's reward as a TRL reward function: the reward sources scoring an online policy's completions.

GRPO and RLOO (`prefscale.training.online`) call an `OnlineReward` with each step's prompts and completions. It
builds the same rows the offline path scores (prompt_id, prompt, response, task_type, and a finish_reason of
`length` for a completion cut off at the token limit), scores them through the one reward-source registry
(`prefscale.rewards.base.score_rows`) and, with several sources, the same per-prompt ensemble. Each call also
records what online RL tends to exploit: the reward, the completions' length, and the shares that are empty,
repeat a line or run into the token limit (`OnlineReward.history`, one row per call).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import polars as pl

from prefscale.labeling.context import LFContext
from prefscale.progress import quiet
from prefscale.rewards.base import ScoringContext, score_rows
from prefscale.rewards.ensemble import combine_rewards
from prefscale.rewards.registry import ONLINE_SOURCES

STEP_STATS = (
    "reward_mean",
    "reward_std",
    "mean_length",
    "empty_share",
    "repeated_line_share",
    "truncated_share",
)


def repeats_a_line(text: str) -> bool:
    """True when a non-blank line of `text` equals an earlier one (stripped, case-folded)."""
    lines = [ln.strip().lower() for ln in text.splitlines() if ln.strip()]
    return len(lines) != len(set(lines))


def completion_text(completion: Any) -> str:
    """A TRL completion as text: conversational (a list of messages) or plain."""
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, Mapping))
    return str(completion)


def prompt_text(prompt: Any) -> str:
    """The user's turn of a TRL prompt (a list of messages, the last user message) or the plain prompt."""
    if isinstance(prompt, list):
        users = [m for m in prompt if isinstance(m, Mapping) and m.get("role") == "user"]
        return str(users[-1]["content"]) if users else ""
    return str(prompt)


def completion_stats(
    texts: Sequence[str], truncated: Sequence[bool], rewards: np.ndarray
) -> dict[str, float]:
    """One step's `STEP_STATS` over its completions."""
    n = max(1, len(texts))
    return {
        "reward_mean": float(np.mean(rewards)) if len(rewards) else float("nan"),
        "reward_std": float(np.std(rewards)) if len(rewards) else float("nan"),
        "mean_length": float(np.mean([len(t) for t in texts])) if texts else 0.0,
        "empty_share": sum(not t.strip() for t in texts) / n,
        "repeated_line_share": sum(repeats_a_line(t) for t in texts) / n,
        "truncated_share": sum(bool(t) for t in truncated) / n,
    }


@dataclass
class OnlineReward:
    """`reward(prompts, completions, completion_ids=..., prompt_id=..., task_type=...) -> list[float]`.

    `sources` are the recipe's `RewardSource`s (each must be online-capable), `ctx` what they score with,
    `ensemble` how several combine, `max_completion_length` the sampler's limit (a completion that reaches it
    without ending is `finish_reason: length`).
    """

    sources: Sequence[Any]
    ctx: ScoringContext
    ensemble: str = "zscore"
    max_completion_length: int = 128
    history: list[dict[str, float]] = field(default_factory=list)
    calls: int = 0
    __name__ = (
        "prefscale_reward"  # TRL logs a reward function under its __name__ (a class attribute, no field)
    )

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Sequence[int]] | None = None,
        prompt_id: Sequence[str] | None = None,
        task_type: Sequence[str] | None = None,
        trainer_state: Any = None,
        log_metric: Any = None,
        **_: Any,
    ) -> list[float]:
        texts = [completion_text(c) for c in completions]
        n = len(texts)
        truncated = [
            completion_ids is not None and len(completion_ids[k]) >= self.max_completion_length
            for k in range(n)
        ]
        self.calls += 1
        rows = pl.DataFrame(
            {
                "candidate_id": [f"online-{self.calls}-{k}" for k in range(n)],
                "prompt_id": list(prompt_id) if prompt_id is not None else [prompt_text(p) for p in prompts],
                "prompt": [prompt_text(p) for p in prompts],
                "response": texts,
                "task_type": list(task_type) if task_type is not None else [None] * n,
                "finish_reason": ["length" if t else "stop" for t in truncated],
            },
            schema_overrides={"task_type": pl.String},
        )
        with quiet():  # the LFs' progress lines would repeat at every step
            scores = {
                s.source: score_rows(s.source, rows, replace(self.ctx, ranker=s.model)).scores
                for s in self.sources
            }
        weights = {s.source: s.weight for s in self.sources}
        reward = combine_rewards(rows, scores, weights, self.ensemble)
        by_id = dict(zip(reward["candidate_id"], reward["reward"], strict=True))
        values = np.array([by_id[c] for c in rows["candidate_id"]], dtype=np.float64)
        stats = completion_stats(texts, truncated, values)
        step = int(trainer_state.global_step) + 1 if trainer_state is not None else self.calls
        self.history.append({"step": float(step), **stats})
        if callable(log_metric):  # GRPO: into the trainer's own per-step logs (and MLflow) as well
            for k in ("repeated_line_share", "empty_share", "truncated_share"):
                log_metric(f"completions/{k}", stats[k])
        return [float(v) for v in values]


def online_reward(
    reward: Any,
    lfs: Sequence[Any],
    *,
    label_model_params: pl.DataFrame | None = None,
    base_policy: Any = None,
    policy: Any = None,
    reward_model_dir: Any = None,
    compute: Any = None,
    seed: int = 0,
    max_completion_length: int = 128,
) -> OnlineReward:
    """The recipe's `reward` section (`RewardConfig`) as an `OnlineReward`: `label_model` needs the fitted
    label model's parameters (`quality_labels`' `label_model` table) and runs the LFs, model-backed ones on
    `base_policy` (a `self_judge` on `policy`, the policy the iteration starts from); `reward_model` needs its
    folder. A source that cannot score online, or a missing input, fails here, before any training."""
    names = [s.source for s in reward.sources]
    offline = [n for n in names if n not in ONLINE_SOURCES]
    if offline:
        raise ValueError(
            f"reward.sources {offline} cannot score online (online: {', '.join(ONLINE_SOURCES)})"
        )
    if "label_model" in names and label_model_params is None:
        raise ValueError(
            "reward source 'label_model' needs the iteration's fitted label model (quality_labels)"
        )
    if "reward_model" in names and reward_model_dir is None:
        raise ValueError("reward source 'reward_model' needs a trained reward model folder")
    ctx = ScoringContext(
        lfs=tuple(lfs),
        label_model_params=label_model_params,
        lf_context=LFContext(base_policy=base_policy, policy=policy, compute=compute),
        reward_model_dir=reward_model_dir,
        compute=compute,
        seed=seed,
        kind="online reward source",
    )
    return OnlineReward(reward.sources, ctx, reward.ensemble, max_completion_length)
