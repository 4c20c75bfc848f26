"""A small PREFSCALE_HOME built with the real core functions, for the warehouse and audit tests (seconds).

Two iterations of the loop's artifacts, published through `ArtifactStore` with the same inputs and parameters
the assets record: base_policy (a real tiny Llama) → prompts → candidates → lf_votes → quality_labels →
reward_scores (`combine_rewards`: one source in iteration 1, an ensemble of two in iteration 2) →
preference_pairs (`select_pairs`, with dropped prompts) → dpo_checkpoint (a copy of the policy it starts from:
training is not what these tests are about) → eval_results. Iteration 1's reward_scores also has an older,
non-current version, so the marts can show that only `current` versions are read.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from prefscale.pairs.selection import select_pairs
from prefscale.rewards.ensemble import combine_rewards
from prefscale.storage import UNPARTITIONED, ArtifactRef, ArtifactStore

LFS = [("mentions_company", "a1b2c3"), ("thanks_customer", "d4e5f6")]
PROMPTS_PER_ITERATION = 4
CANDIDATES_PER_PROMPT = 3


@dataclass
class SmallHome:
    home: Path
    store: ArtifactStore
    refs: dict[tuple[str, str], ArtifactRef] = field(default_factory=dict)
    pairs: dict[int, pl.DataFrame] = field(default_factory=dict)
    dropped: dict[int, pl.DataFrame] = field(default_factory=dict)
    rewards: dict[int, pl.DataFrame] = field(default_factory=dict)


def tiny_policy(out: Path) -> Path:
    """A real tiny Llama + tokenizer folder (trained for a few steps, < 2 s)."""
    from prefscale.compute import resolve_compute
    from prefscale.config.policy import EmbeddedModel
    from prefscale.data import domain
    from prefscale.policy.tiny import pretrain_tiny_llama

    cfg = EmbeddedModel(
        vocab_size=300,
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        intermediate_size=64,
        train_steps=5,
        batch_size=8,
        corpus_prompts=20,
        responses_per_prompt=1,
    )
    corpus = domain.make_corpus(domain.make_prompt_pool(20, 1), 1, 1)
    pretrain_tiny_llama(corpus, cfg, out, resolve_compute("cpu", threads=1), seed=0)
    return out


def _candidates(i: int) -> pl.DataFrame:
    rows = []
    for p in range(PROMPTS_PER_ITERATION):
        pid = f"it{i}-p{p}"
        for k in range(CANDIDATES_PER_PROMPT):
            # prompt 0: every candidate the same (dropped: identical candidates); the others differ in length
            text = (
                "Thanks for contacting Acme."
                if p == 0
                else f"Thanks for contacting Acme. {'More. ' * (k + p)}"
            )
            rows.append(
                {
                    "candidate_id": f"{pid}-{k}",
                    "prompt_id": pid,
                    "sample_idx": k,
                    "task_type": "refund",
                    "prompt": f"Question {p} of iteration {i}",
                    "response": text.strip(),
                    "n_tokens": len(text.split()),
                    "finish_reason": "stop",
                }
            )
    return pl.DataFrame(rows, schema_overrides={"sample_idx": pl.Int32, "n_tokens": pl.Int32})


def _scores(cands: pl.DataFrame, i: int, salt: float) -> pl.DataFrame:
    # prompt 1 of each iteration: all candidates tied (dropped: tied rewards); others: longer is better
    score = [
        0.5 if pid.endswith("-p1") else round(0.1 * k + 0.05 * i + salt, 6)
        for pid, k in zip(cands["prompt_id"], cands["sample_idx"], strict=True)
    ]
    return pl.DataFrame({"candidate_id": cands["candidate_id"], "score": score})


def build_small_home(
    home: Path, policy_dir: Path, iterations: int = 2, upto: str = "eval_results"
) -> SmallHome:
    """Publish `iterations` iterations of artifacts under `home` (see the module docstring).

    `upto="preference_pairs"` stops each iteration before its checkpoint (for materializing it through Dagster).
    """
    if upto not in ("preference_pairs", "eval_results"):
        raise ValueError(f"upto must be 'preference_pairs' or 'eval_results', got {upto!r}")
    store = ArtifactStore(home)
    out = SmallHome(home=home, store=store)

    def keep(ref: ArtifactRef) -> ArtifactRef:
        out.refs[(ref.asset, ref.partition)] = ref
        return ref

    base = keep(
        store.publish_dir(
            "base_policy",
            UNPARTITIONED,
            lambda d: shutil.copytree(policy_dir, d, dirs_exist_ok=True),
            params={"source": "embedded"},
        )
    )
    start = base
    for i in range(1, iterations + 1):
        part = str(i)
        prompts = keep(
            store.write_frame(
                "prompts",
                part,
                pl.DataFrame({"prompt_id": [f"it{i}-p{p}" for p in range(PROMPTS_PER_ITERATION)]}),
                params={"data": {"source": "embedded", "pool_size": 60}, "seed": i},
            )
        )
        cands = _candidates(i)
        cands_ref = keep(
            store.write_frame(
                "candidates",
                part,
                cands,
                inputs=[prompts, start],
                params={"sampling": {"n": CANDIDATES_PER_PROMPT, "temperature": 1.0}, "seed": 100 + i},
            )
        )
        votes = keep(
            store.write_frame(
                "lf_votes",
                part,
                pl.DataFrame({"candidate_id": cands["candidate_id"], "mentions_company": 1}),
                inputs=[cands_ref],
                params={"functions": [{"lf_name": n, "version": v} for n, v in LFS]},
            )
        )
        labels = keep(
            store.write_frame(
                "quality_labels",
                part,
                pl.DataFrame({"candidate_id": cands["candidate_id"], "p_high": 0.5}),
                inputs=[votes],
                params={"label_model": "snorkel.LabelModel", "n_epochs": 10},
            )
        )
        if i == 1:
            # an older version first: the warehouse must read only the current one
            old = combine_rewards(cands, {"label_model": _scores(cands, i, salt=5.0)})
            store.write_frame(
                "reward_scores", part, old, inputs=[cands_ref, labels], params={"source": "old"}
            )
            rewards = combine_rewards(cands, {"label_model": _scores(cands, i, salt=0.0)})
        else:
            rewards = combine_rewards(
                cands,
                {"label_model": _scores(cands, i, 0.0), "pairrm": _scores(cands, i, 0.3)},
                {"label_model": 1.0, "pairrm": 1.0},
                "zscore",
            )
        out.rewards[i] = rewards
        rewards_ref = keep(
            store.write_frame(
                "reward_scores",
                part,
                rewards,
                inputs=[cands_ref, labels],
                params={"source": rewards["source"][0]},
            )
        )
        sel = select_pairs(cands, rewards, strategy="best_vs_worst", seed=i)
        out.pairs[i], out.dropped[i] = sel.pairs, sel.dropped
        pairs_ref = keep(
            store.write_tables(
                "preference_pairs",
                part,
                {"data": sel.pairs, "dropped": sel.dropped},
                inputs=[cands_ref, rewards_ref],
                params={"strategy": "best_vs_worst", "min_margin": 1e-6, "seed": i},
            )
        )
        if upto == "preference_pairs":
            continue
        ckpt = keep(
            store.publish_dir(
                "dpo_checkpoint",
                part,
                lambda d, src=start.path: shutil.copytree(
                    src, d, dirs_exist_ok=True, ignore=shutil.ignore_patterns("_manifest.json")
                ),
                inputs=[pairs_ref, start],
                params={"dpo": {"beta": 0.1, "loss_type": "sigmoid"}, "seed": i, "trainer": "trl.DPOTrainer"},
            )
        )
        keep(
            store.write_tables(
                "eval_results",
                part,
                {
                    "results": pl.DataFrame(
                        {
                            "iteration": [i],
                            "win_rate": [0.5 + 0.1 * i],
                            "mean_adherence": [0.4 + 0.1 * i],
                            "avg_length": [30.0],
                            "n_total": [4],
                        }
                    )
                },
                inputs=[ckpt],
                params={"judge": "sme_rubric", "samples_per_prompt": 2},
            )
        )
        start = ckpt
    return out
