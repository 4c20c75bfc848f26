"""SMEs rank a prompt's candidates: which prompts to show them (active sampling), the ranking tasks, and the
annotations converted to gold records (`prefscale.labeling.gold`'s ranking shape).

Active sampling scores each prompt by how unsure the weak supervision is about its candidates: the label
model's uncertainty (1 - |2·P(high) - 1|, averaged over the prompt's candidates) plus the LFs' conflict (the
share of a candidate's non-abstaining votes in the minority, averaged). The most uncertain prompts fill
`1 - random_share` of the budget; the rest is drawn uniformly from the others, so the gold also gives unbiased
accuracy estimates (`reason` says which is which).

A task shows the prompt and its candidates in a seeded random order as "Response 1…N"; SMEs drag them into order
(best first), may mark any response acceptable (high) or unacceptable (low), and may give a reason. Explicit
marks override the labels a ranking implies. When several SMEs rank one prompt, the gold ranking is their mean
place per candidate (Borda) and their agreement (Kendall's tau per pair of SMEs) is reported.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Mapping
from itertools import combinations
from typing import Any

import numpy as np
import polars as pl
from scipy.stats import kendalltau

from prefscale.annotation.label_studio import KEY_FIELD

RANKING_PROJECT = "prefscale: rank candidates"
KIND = "ranking"
SELECTION_SCHEMA = {
    "prompt_id": pl.String,
    "reason": pl.String,  # uncertain | random
    "uncertainty": pl.Float64,
    "conflict": pl.Float64,
    "score": pl.Float64,
}
AGREEMENT_SCHEMA = {
    "prompt_id": pl.String,
    "iteration": pl.String,
    "annotator_1": pl.String,
    "annotator_2": pl.String,
    "kendall_tau": pl.Float64,
}


def ranking_config(n: int) -> str:
    """Label Studio's interface for ranking `n` responses: drag to order, optional high/low marks, a reason."""
    marks = "".join(f'<Choice value="Response {k}"/>' for k in range(1, n + 1))
    return (
        "<View>"
        # the candidate id (an item's last line) stays hidden: the SME sees only "Response k" and the text
        "<Style>.htx-ranker-item p:last-child { display: none } .htx-ranker-item p { white-space: pre-wrap }</Style>"
        '<Header value="Rank the responses: drag the best to the top."/>'
        '<Text name="prompt" value="$prompt"/>'
        '<List name="responses" value="$items" title="Responses"/>'
        '<Ranker name="rank" toName="responses"/>'
        '<Header value="Optional: responses you would accept as they are (high) or reject (low)" size="6"/>'
        f'<Choices name="high" toName="prompt" choice="multiple" showInline="true">{marks}</Choices>'
        f'<Choices name="low" toName="prompt" choice="multiple" showInline="true">{marks}</Choices>'
        '<TextArea name="reason" toName="prompt" placeholder="Why? (optional)" rows="2"/>'
        "</View>"
    )


def _conflict(votes: pl.DataFrame) -> pl.DataFrame:
    lf_cols = [c for c in votes.columns if c != "candidate_id"]
    if not lf_cols:
        return votes.select("candidate_id", pl.lit(0.0).alias("conflict"))
    high = pl.sum_horizontal([(pl.col(c) == 1).cast(pl.Int32) for c in lf_cols])
    low = pl.sum_horizontal([(pl.col(c) == 0).cast(pl.Int32) for c in lf_cols])
    return votes.select(
        "candidate_id",
        pl.when(high + low > 0)
        .then(pl.min_horizontal(high, low) / (high + low))
        .otherwise(0.0)
        .alias("conflict"),
    )


def select_prompts(
    candidates: pl.DataFrame,
    labels: pl.DataFrame,
    votes: pl.DataFrame | None,
    *,
    n: int,
    random_share: float = 0.2,
    seed: int = 0,
) -> pl.DataFrame:
    """The `n` prompts SMEs should rank (`SELECTION_SCHEMA`), most uncertain first, then the random share.

    `candidates`: candidate_id, prompt_id; `labels`: candidate_id, p_high (quality_labels); `votes`: the LF vote
    matrix (candidate_id + one column per LF: 1 high, 0 low, -1 abstain), or None. The same inputs select the
    same prompts."""
    if n < 1:
        raise ValueError(f"tasks per iteration must be >= 1, got {n}")
    if not 0.0 <= random_share <= 1.0:
        raise ValueError(f"random_share must be in [0, 1], got {random_share}")
    rows = candidates.select("candidate_id", "prompt_id").join(
        labels.select("candidate_id", "p_high"), on="candidate_id", how="left"
    )
    if votes is not None:
        rows = rows.join(_conflict(votes), on="candidate_id", how="left")
    else:
        rows = rows.with_columns(pl.lit(0.0).alias("conflict"))
    per_prompt = (
        rows.group_by("prompt_id")
        .agg(
            (1.0 - (2.0 * pl.col("p_high").fill_null(0.5) - 1.0).abs()).mean().alias("uncertainty"),
            pl.col("conflict").fill_null(0.0).mean().alias("conflict"),
        )
        .with_columns((pl.col("uncertainty") + pl.col("conflict")).alias("score"))
        .sort(["score", "prompt_id"], descending=[True, False])
    )
    n = min(n, per_prompt.height)
    n_random = round(n * random_share)
    top = per_prompt.head(n - n_random).with_columns(pl.lit("uncertain").alias("reason"))
    rest = per_prompt.slice(n - n_random)["prompt_id"].to_list()
    drawn = set(random.Random(seed).sample(sorted(rest), min(n_random, len(rest))))
    rnd = per_prompt.filter(pl.col("prompt_id").is_in(list(drawn))).with_columns(
        pl.lit("random").alias("reason")
    )
    return pl.concat([top, rnd]).select(list(SELECTION_SCHEMA)).cast(SELECTION_SCHEMA)  # type: ignore[arg-type]


def task_key(iteration: str, prompt_id: str, candidates_version: str) -> str:
    """The idempotency key of a ranking task: a prompt's candidates as one version of them were sampled."""
    return f"{KIND}:{iteration}:{prompt_id}:{candidates_version}"


def ranking_tasks(
    candidates: pl.DataFrame,
    selection: pl.DataFrame,
    *,
    iteration: str,
    candidates_version: str,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One Label Studio task per selected prompt, its candidates in a seeded random order."""
    reasons = dict(zip(selection["prompt_id"], selection["reason"], strict=True))
    tasks = []
    for (pid,), group in candidates.filter(pl.col("prompt_id").is_in(list(reasons))).group_by(
        "prompt_id", maintain_order=True
    ):
        rows = group.sort("candidate_id").select("candidate_id", "prompt", "response").rows()
        order = list(range(len(rows)))
        salt = hashlib.sha256(f"{seed}:{iteration}:{pid}".encode()).digest()
        random.Random(salt).shuffle(order)
        items = [
            {"id": rows[k][0], "title": f"Response {place}", "body": rows[k][2]}
            for place, k in enumerate(order, 1)
        ]
        data = {
            KEY_FIELD: task_key(iteration, str(pid), candidates_version),
            "kind": KIND,
            "iteration": iteration,
            "prompt_id": pid,
            "candidates_version": candidates_version,
            "reason": reasons[pid],
            "prompt": rows[0][1],
            "items": items,
        }
        tasks.append({"data": data})
    return sorted(tasks, key=lambda t: list(reasons).index(t["data"]["prompt_id"]))


def _choices(result: list[dict[str, Any]], name: str) -> list[str]:
    for r in result:
        if r.get("from_name") == name and r.get("type") == "choices":
            return list((r.get("value") or {}).get("choices") or [])
    return []


def _one_ranking(
    annotation: Mapping[str, Any], items: list[dict[str, Any]]
) -> tuple[list[str], set[str], set[str], str | None] | str:
    """(ranking, high ids, low ids, reason) of one annotation, or what is wrong with it."""
    result = annotation.get("result") or []
    ranker = [r for r in result if r.get("type") == "ranker"]
    if len(ranker) != 1:
        return "no ranking (the responses were not put in order)"
    value = (ranker[0].get("value") or {}).get("ranker")
    if not isinstance(value, dict) or len(value) != 1:
        return f"ranking must be one ordered list, got {value!r}"
    order = next(iter(value.values()))
    ids = [it["id"] for it in items]
    if not isinstance(order, list) or sorted(map(str, order)) != sorted(ids):
        return f"ranking must order exactly the task's {len(ids)} responses, got {order!r}"
    by_title = {it["title"]: it["id"] for it in items}
    marks: dict[str, set[str]] = {}
    for name in ("high", "low"):
        chosen = _choices(result, name)
        unknown = [c for c in chosen if c not in by_title]
        if unknown:
            return f"{name} marks {unknown} name no response of this task"
        marks[name] = {by_title[c] for c in chosen}
    both = sorted(marks["high"] & marks["low"])
    if both:
        return f"responses {both} are marked both high and low"
    reason = next(
        (
            " ".join((r.get("value") or {}).get("text") or [])
            for r in result
            if r.get("from_name") == "reason" and r.get("type") == "textarea"
        ),
        None,
    )
    return [str(c) for c in order], marks["high"], marks["low"], (reason or None)


def ranking_records(
    tasks: Iterable[Mapping[str, Any]], users: Mapping[int, str]
) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, str]], pl.DataFrame]:
    """Gold ranking records from annotated ranking tasks: ((task id, record)s, (task id, problem)s, agreement).

    Cancelled (skipped) annotations are ignored; a task with a malformed annotation yields a problem naming the
    task and the annotation and no record."""
    records: list[tuple[int, dict[str, Any]]] = []
    problems: list[tuple[int, str]] = []
    agreement: list[dict[str, Any]] = []
    for task in tasks:
        data = task.get("data") or {}
        if data.get("kind") != KIND:
            continue
        tid = int(task["id"])
        done = sorted(
            (a for a in task.get("annotations") or [] if not a.get("was_cancelled")), key=lambda a: a["id"]
        )
        if not done:
            continue
        parsed, bad = [], False
        for a in done:
            one = _one_ranking(a, data.get("items") or [])
            if isinstance(one, str):
                problems.append((tid, f"annotation {a['id']}: {one}"))
                bad = True
                continue
            who = users.get(int(a.get("completed_by") or 0), str(a.get("completed_by")))
            parsed.append((who, *one))
        if bad or not parsed:
            continue
        ids = parsed[0][1]
        mean_place = {c: float(np.mean([p[1].index(c) for p in parsed])) for c in ids}
        ranking = sorted(ids, key=lambda c: (mean_place[c], ids.index(c)))
        high = set.union(*(p[2] for p in parsed)) - set.union(*(p[3] for p in parsed))
        low = set.union(*(p[3] for p in parsed)) - set.union(*(p[2] for p in parsed))
        notes = [f"{p[0]}: {p[4]}" for p in parsed if p[4]]
        rec: dict[str, Any] = {
            "prompt_id": data["prompt_id"],
            "ranking": ranking,
            "annotator": ",".join(sorted({p[0] for p in parsed})),
            "high": sorted(high),
            "low": sorted(low),
        }
        if notes:
            rec["note"] = " | ".join(notes)
        records.append((tid, rec))
        for x, y in combinations(parsed, 2):
            tau = kendalltau([x[1].index(c) for c in ids], [y[1].index(c) for c in ids]).statistic
            agreement.append(
                {
                    "prompt_id": data["prompt_id"],
                    "iteration": str(data.get("iteration")),
                    "annotator_1": x[0],
                    "annotator_2": y[0],
                    "kendall_tau": float(tau),
                }
            )
    return records, problems, pl.DataFrame(agreement, schema=AGREEMENT_SCHEMA)
