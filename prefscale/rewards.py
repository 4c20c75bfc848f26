"""Reward scores per candidate: one or several sources, combined by a weighted ensemble.

Sources (`RewardConfig.sources` in the recipe):

| source | score per candidate | needs |
|---|---|---|
| `label_model` | the Snorkel label model's P(high quality) | `quality_labels` |
| `reward_model` | P(high) predicted by the weak-supervision reward model (`prefscale.reward_model`) | its model folder |
| `pairrm` | llm-blender's PairRM rank score `mean_j (M[i, j] - M[j, i])` (`prefscale.pairrm`) | a ranker |

`combine_rewards` turns the scores into the reward frame. With one source the reward *is* its raw score, so a
recipe with `reward: {source: label_model}` ranks and pairs exactly as before the ensemble existed. With several,
each source's score is normalised within its prompt, because the sources live on different scales (a
probability, a logit difference) and only the order within a prompt matters for pairs:

- `zscore` (default): `(s - mean_prompt(s)) / std_prompt(s)` (population std; 0 when every candidate ties);
- `rank`: the average rank within the prompt mapped to [0, 1] (1 = best; 0.5 for a prompt with one candidate);
- `none`: the raw scores (only sensible when the sources share a scale).

and the reward is the weighted mean `sum_k w_k * norm_k / sum_k w_k`. The frame keeps every source's raw score
(`score_<source>`), the final `reward`, its `rank` within the prompt (1 = best, ties share the best rank) and,
when PairRM is a source, each candidate's row of its prompt's N×N comparison matrix (`matrix_index`,
`pairrm_logits`; see `prefscale.pairrm`).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

REWARD_SCHEMA = {
    "candidate_id": pl.String,
    "prompt_id": pl.String,
    "source": pl.String,
    "reward": pl.Float64,
    "rank": pl.Int32,
}
SOURCES = ("label_model", "reward_model", "pairrm")
ENSEMBLES = ("zscore", "rank", "none")
ENSEMBLE_SOURCE = "ensemble"
TINY_PAIRRM = (
    "tiny"  # `model: tiny`: a random tiny ranker built on the fly (code-path check, not a quality source)
)
DEFAULT_PAIRRM = "llm-blender/PairRM"


def score_column(source: str) -> str:
    return f"score_{source}"


def label_model_rewards(candidates: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    """Reward = P(high) from the label model; `rank` 1 = best within its prompt."""
    return (
        combine_rewards(candidates, {"label_model": label_model_scores(candidates, labels)})
        .select(list(REWARD_SCHEMA))
        .cast(REWARD_SCHEMA)
    )


def label_model_scores(candidates: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    """(candidate_id, score = P(high)) for every candidate; an error names candidates without a label."""
    missing = set(candidates["candidate_id"]) - set(labels["candidate_id"])
    if missing:
        raise ValueError(f"{len(missing)} candidates have no quality label, e.g. {sorted(missing)[:3]}")
    return candidates.select("candidate_id").join(
        labels.select("candidate_id", pl.col("p_high").cast(pl.Float64).alias("score")),
        on="candidate_id",
        how="left",
    )


def _normalised(col: str, ensemble: str) -> pl.Expr:
    c = pl.col(col)
    if ensemble == "none":
        return c
    if ensemble == "zscore":
        std = c.std(ddof=0).over("prompt_id")
        return pl.when(std > 0).then((c - c.mean().over("prompt_id")) / std).otherwise(0.0)
    n = pl.len().over("prompt_id")
    return pl.when(n > 1).then((c.rank("average").over("prompt_id") - 1) / (n - 1)).otherwise(0.5)


def combine_rewards(
    candidates: pl.DataFrame,
    scores: Mapping[str, pl.DataFrame],
    weights: Mapping[str, float] | None = None,
    ensemble: str = "zscore",
) -> pl.DataFrame:
    """The reward frame: `REWARD_SCHEMA` plus one `score_<source>` column per source (see the module docstring).

    `scores[source]` holds `candidate_id` and `score` for every candidate; `weights` default to 1 each. One
    source: reward = its raw score. Several: the weighted mean of the per-prompt normalised scores.
    """
    if not scores:
        raise ValueError("at least one reward source is required")
    if ensemble not in ENSEMBLES:
        raise ValueError(f"unknown ensemble {ensemble!r}; known: {', '.join(ENSEMBLES)}")
    weights = {s: 1.0 for s in scores} if weights is None else dict(weights)
    if set(weights) != set(scores):
        raise ValueError(f"weights for {sorted(weights)} but scores for {sorted(scores)}")
    if any(not w > 0 for w in weights.values()):
        raise ValueError(f"reward weights must be > 0, got {weights}")
    df = candidates.select("candidate_id", "prompt_id")
    for source, s in scores.items():
        if s["candidate_id"].is_duplicated().any():
            raise ValueError(f"source {source!r} scores some candidates more than once")
        missing = set(df["candidate_id"]) - set(s["candidate_id"])
        if missing:
            raise ValueError(
                f"source {source!r}: {len(missing)} candidates have no score, e.g. {sorted(missing)[:3]}"
            )
        df = df.join(
            s.select("candidate_id", pl.col("score").cast(pl.Float64).alias(score_column(source))),
            on="candidate_id",
            how="left",
        )
    names = list(scores)
    if len(names) == 1:
        reward = pl.col(score_column(names[0]))
        label = names[0]
    else:
        total = sum(weights.values())
        reward = pl.sum_horizontal(
            [_normalised(score_column(n), ensemble) * (weights[n] / total) for n in names]
        )
        label = ENSEMBLE_SOURCE
    return (
        df.with_columns(reward.cast(pl.Float64).alias("reward"), pl.lit(label).alias("source"))
        .with_columns(
            pl.col("reward").rank("min", descending=True).over("prompt_id").cast(pl.Int32).alias("rank")
        )
        .select(*REWARD_SCHEMA, *[score_column(n) for n in names])
        .cast(REWARD_SCHEMA)
    )


def pairrm_model_ref(model: str | None, policy_source: str) -> str:
    """The ranker a `pairrm` source uses: its `model`, else the tiny ranker for the embedded policy, else PairRM."""
    if model:
        return model
    return TINY_PAIRRM if policy_source == "embedded" else DEFAULT_PAIRRM


def pairrm_source_scores(
    candidates: pl.DataFrame, model: str, *, device: str = "cpu", seed: int = 0, batch_size: int = 8
) -> pl.DataFrame:
    """PairRM scores (`candidate_id`, `score`, `matrix_index`, `pairrm_logits`) from a ranker or `tiny`.

    `tiny` builds `prefscale.pairrm.build_tiny_ranker(seed=seed)` in a temporary folder: random weights, so it
    checks the code path, not quality.
    """
    import tempfile

    from prefscale.pairrm import build_tiny_ranker, load_ranker, pairrm_rewards

    with tempfile.TemporaryDirectory(prefix="prefscale-pairrm-") as tmp:
        ref = build_tiny_ranker(f"{tmp}/tiny-pairrm", seed=seed) if model == TINY_PAIRRM else model
        blender = load_ranker(ref, device)
        pr = pairrm_rewards(candidates, blender, batch_size=batch_size)
    return pr.select("candidate_id", pl.col("reward").alias("score"), "matrix_index", "pairrm_logits")


def reward_summary(rewards: pl.DataFrame) -> dict[str, float]:
    r = rewards["reward"]
    return {
        "mean": float(r.mean() or 0.0),
        "std": float(r.std() or 0.0),
        "min": float(r.min() or 0.0),
        "max": float(r.max() or 0.0),
    }


def source_correlations(rewards: pl.DataFrame) -> pl.DataFrame:
    """Spearman correlation of each pair of sources' scores (and each with the final reward), over candidates."""
    cols = [c for c in rewards.columns if c.startswith("score_")]
    if "reward" not in cols:
        cols = [*cols, "reward"]
    ranked = rewards.select(pl.col(c).rank("average") for c in cols).to_numpy()
    rows = []
    for a in range(len(cols)):
        for b in range(a + 1, len(cols)):
            x, y = ranked[:, a], ranked[:, b]
            ok = np.isfinite(x) & np.isfinite(y)
            rho = (
                float(np.corrcoef(x[ok], y[ok])[0, 1])
                if ok.sum() > 1 and x[ok].std() and y[ok].std()
                else 0.0
            )
            rows.append((cols[a], cols[b], rho))
    return pl.DataFrame(rows, schema=["a", "b", "spearman"], orient="row")


def distribution_png(rewards: pl.DataFrame, columns: Sequence[str] | None = None, bins: int = 30) -> bytes:
    """A PNG of histograms, one panel per score column and one for the final reward (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = list(columns) if columns else [c for c in rewards.columns if c.startswith("score_")]
    if len(cols) != 1 and "reward" not in cols:  # one source: the final reward is its score
        cols.append("reward")
    fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 2.6), squeeze=False)
    for ax, col in zip(axes[0], cols, strict=True):
        values = rewards[col].drop_nulls().to_numpy()
        values = values[np.isfinite(values)]
        ax.hist(values, bins=bins, color="#4C72B0")
        title = col.removeprefix("score_")
        ax.set_title(title if col != "reward" else "final reward", fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("candidates", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def png_markdown(png: bytes, alt: str = "reward distribution") -> str:
    """Markdown embedding a PNG as a base64 data URI (what Dagster's markdown metadata renders)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def describe_sources(sources: Sequence[Any], ensemble: str) -> str:
    """`label_model`, or e.g. `zscore(label_model×1, pairrm[tiny]×0.5)` for an ensemble (lineage, metadata)."""
    parts = [f"{s.source}[{s.model}]" if getattr(s, "model", None) else s.source for s in sources]
    if len(parts) == 1:
        return parts[0]
    return f"{ensemble}(" + ", ".join(f"{p}×{s.weight:g}" for p, s in zip(parts, sources, strict=True)) + ")"


def source_scores(
    candidates: pl.DataFrame,
    labels: pl.DataFrame | None,
    sources: Sequence[Any],
    *,
    policy_source: str = "embedded",
    seed: int = 0,
    device: str = "cpu",
    reward_model_dir: Any = None,
    compute: Any = None,
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame | None]:
    """Each source's (candidate_id, score) for `sources` (`RewardSource`s), and PairRM's matrix rows if any.

    `labels` (quality_labels) serve `label_model`; `reward_model_dir` (a `reward_model` folder) and `compute`
    serve `reward_model`; `pairrm` resolves its ranker with `pairrm_model_ref(model, policy_source)`.
    """
    scores: dict[str, pl.DataFrame] = {}
    matrix = None
    for s in sources:
        if s.source == "label_model":
            if labels is None:
                raise ValueError("reward source 'label_model' needs the quality labels")
            scores[s.source] = label_model_scores(candidates, labels)
        elif s.source == "reward_model":
            if reward_model_dir is None or compute is None:
                raise ValueError("reward source 'reward_model' needs a trained reward model folder")
            from prefscale.reward_model import reward_model_scores

            scores[s.source] = reward_model_scores(candidates, reward_model_dir, compute)
        elif s.source == "pairrm":
            model = pairrm_model_ref(s.model, policy_source)
            pr = pairrm_source_scores(candidates, model, device=device, seed=seed)
            scores[s.source] = pr.select("candidate_id", "score")
            matrix = pr.select("candidate_id", "matrix_index", "pairrm_logits")
        else:
            raise ValueError(f"unknown reward source {s.source!r}; known: {', '.join(SOURCES)}")
    return scores, matrix


SFT_SCHEMA = {
    "prompt_id": pl.String,
    "candidate_id": pl.String,
    "messages": pl.List(pl.Struct({"role": pl.String, "content": pl.String})),
    "reward": pl.Float64,
    "rank": pl.Int32,
}


def curate_sft(
    candidates: pl.DataFrame,
    rewards: pl.DataFrame,
    *,
    top_quantile: float = 0.25,
    scope: str = "global",
    drop_unfinished: bool = True,
) -> pl.DataFrame:
    """The reward-curated SFT subset (RedPajama-Chat-Curated style): the best `top_quantile` of the candidates.

    Eligible rows: finished samples (unless `drop_unfinished` is off) with a non-empty response, one per distinct
    (prompt, response). They are ordered by reward (ties: the lower candidate_id first) and the first
    `ceil(top_quantile * n)` are kept, over all of them (`scope="global"`) or within each prompt (`per_prompt`,
    at least one per prompt). Rows are in the chat `messages` format SFT trainers read (TRL's `SFTTrainer`):
    `[{"role": "user", ...}, {"role": "assistant", ...}]`, with the reward and its rank within the prompt.
    """
    if not 0 < top_quantile <= 1:
        raise ValueError(f"top_quantile must be in (0, 1], got {top_quantile}")
    if scope not in ("global", "per_prompt"):
        raise ValueError(f"scope must be 'global' or 'per_prompt', got {scope!r}")
    df = candidates.join(rewards.select("candidate_id", "reward", "rank"), on="candidate_id", how="inner")
    if df.height != candidates.height:
        raise ValueError(f"{candidates.height - df.height} candidates have no reward score")
    df = df.filter(pl.col("response").str.strip_chars() != "", pl.col("reward").is_finite())
    if drop_unfinished and "finish_reason" in df.columns:
        df = df.filter(pl.col("finish_reason") != "length")
    df = df.sort(["reward", "candidate_id"], descending=[True, False]).unique(
        ["prompt", "response"], keep="first", maintain_order=True
    )
    if scope == "global":
        kept = df.head(math.ceil(top_quantile * df.height))
    else:
        kept = df.filter(
            pl.int_range(pl.len()).over("prompt_id")
            < (pl.len().over("prompt_id") * top_quantile).ceil().cast(pl.Int64)
        )
    return kept.select(
        "prompt_id",
        "candidate_id",
        pl.concat_list(
            pl.struct(pl.lit("user").alias("role"), pl.col("prompt").alias("content")),
            pl.struct(pl.lit("assistant").alias("role"), pl.col("response").alias("content")),
        ).alias("messages"),
        "reward",
        "rank",
    ).cast(SFT_SCHEMA)
