"""The blind SME evaluation: a held-out prompt, the reference's (the base's) and a checkpoint's reply in random
order, "which is better, or a tie?"; the answers become the `sme` judge's votes.

A task carries the two replies as A and B and, to tell which is the model's without showing it, only the sha256
of each side's text (`reference_sha256`, `model_sha256`): a vote is converted by hashing the text shown as A. The
task key holds the iteration, prompt, sample and both digests, so pushing the same pairs again adds nothing and a
re-sampled reply is a new task.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import Any

import polars as pl

from prefscale.annotation.label_studio import KEY_FIELD
from prefscale.evaluation.judges.sme import VOTE_SCHEMA, text_sha256

PAIRWISE_PROJECT = "prefscale: blind evaluation"
KIND = "pairwise"
CHOICES = {"A is better": "a", "B is better": "b", "Tie": "tie"}
VOTES_SCHEMA = {"iteration": pl.String, "task_id": pl.Int64, **VOTE_SCHEMA}


def pairwise_config() -> str:
    """Label Studio's interface for one blind pairwise vote."""
    choices = "".join(f'<Choice value="{c}"/>' for c in CHOICES)
    return (
        "<View>"
        '<Header value="Which response answers the request better?"/>'
        '<Text name="prompt" value="$prompt"/>'
        '<Header value="Response A" size="5"/><Text name="a" value="$a"/>'
        '<Header value="Response B" size="5"/><Text name="b" value="$b"/>'
        f'<Choices name="preference" toName="prompt" choice="single" required="true">{choices}</Choices>'
        "</View>"
    )


def pairwise_tasks(pairs: pl.DataFrame, *, iteration: str, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Up to `n` blind tasks from `pairs` (prompt_id, sample_idx, instruction, output_1 = the reference,
    output_2 = the model): one pair per prompt (its first sample whose replies differ), prompts drawn with
    `seed`, each pair's order drawn too."""
    if n < 1:
        raise ValueError(f"evaluation pairs per iteration must be >= 1, got {n}")
    usable = (
        pairs.filter(pl.col("output_1") != pl.col("output_2"))
        .sort("prompt_id", "sample_idx")
        .unique("prompt_id", keep="first", maintain_order=True)
    )
    rng = random.Random(f"{seed}:{iteration}")
    picked = rng.sample(range(usable.height), min(n, usable.height))
    tasks = []
    for k in sorted(picked):
        row = usable.row(k, named=True)
        ref_sha, model_sha = text_sha256(row["output_1"]), text_sha256(row["output_2"])
        model_first = rng.random() < 0.5
        a, b = (row["output_2"], row["output_1"]) if model_first else (row["output_1"], row["output_2"])
        key = f"{KIND}:{iteration}:{row['prompt_id']}:{row['sample_idx']}:{ref_sha[:16]}:{model_sha[:16]}"
        data = {
            KEY_FIELD: key,
            "kind": KIND,
            "iteration": iteration,
            "prompt_id": row["prompt_id"],
            "sample_idx": int(row["sample_idx"]),
            "reference_sha256": ref_sha,
            "model_sha256": model_sha,
            "prompt": row["instruction"],
            "a": a,
            "b": b,
        }
        tasks.append({"data": data})
    return tasks


def vote_rows(
    tasks: Iterable[Mapping[str, Any]], users: Mapping[int, str]
) -> tuple[pl.DataFrame, list[tuple[int, str]]]:
    """The votes of annotated pairwise tasks (`VOTES_SCHEMA`, one row per SME and task) and the (task id,
    problem)s of malformed ones; preference 2 = the model's reply was better, 1 = the reference's, 1.5 = a tie."""
    rows, problems = [], []
    for task in tasks:
        data = task.get("data") or {}
        if data.get("kind") != KIND:
            continue
        tid = int(task["id"])
        a_sha = text_sha256(str(data.get("a", "")))
        if a_sha not in (data.get("model_sha256"), data.get("reference_sha256")):
            problems.append((tid, "the task's reply A matches neither recorded digest (the task was edited)"))
            continue
        model_side = "a" if a_sha == data["model_sha256"] else "b"
        for ann in sorted(task.get("annotations") or [], key=lambda a: a["id"]):
            if ann.get("was_cancelled"):
                continue
            picked = [
                c
                for r in ann.get("result") or []
                if r.get("from_name") == "preference"
                for c in (r.get("value") or {}).get("choices") or []
            ]
            if len(picked) != 1 or picked[0] not in CHOICES:
                problems.append(
                    (tid, f"annotation {ann['id']}: expected one of {list(CHOICES)}, got {picked}")
                )
                continue
            side = CHOICES[picked[0]]
            pref = 1.5 if side == "tie" else 2.0 if side == model_side else 1.0
            rows.append(
                {
                    "iteration": str(data["iteration"]),
                    "task_id": tid,
                    "prompt_id": str(data["prompt_id"]),
                    "sample_idx": int(data["sample_idx"]),
                    "output_1_sha256": data["reference_sha256"],
                    "output_2_sha256": data["model_sha256"],
                    "preference": pref,
                    "annotator": users.get(int(ann.get("completed_by") or 0), str(ann.get("completed_by"))),
                }
            )
    return pl.DataFrame(rows, schema=VOTES_SCHEMA), problems


def changed_vote_iterations(old: pl.DataFrame | None, new: pl.DataFrame) -> list[str]:
    """Iterations whose votes differ between two votes tables (their `alpaca_eval_results` is then stale)."""

    def by_iteration(df: pl.DataFrame | None) -> dict[str, set[tuple]]:
        out: dict[str, set[tuple]] = {}
        for row in (df if df is not None else pl.DataFrame(schema=VOTES_SCHEMA)).iter_rows(named=True):
            out.setdefault(row["iteration"], set()).add(tuple(row.values()))
        return out

    a, b = by_iteration(old), by_iteration(new)
    return sorted((k for k in set(a) | set(b) if a.get(k) != b.get(k)), key=lambda k: (len(k), k))
