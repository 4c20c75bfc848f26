"""`prefscale score`: a reward for each (prompt, response) row of a JSON Lines file, with no training data.

The default source is weak supervision fitted on the input itself: a generic **LF pack**
(`recipes/lf_packs/helpfulness.yaml`) votes on every row with the labeling functions of `prefscale.labeling`,
and Snorkel's label model, fitted on those votes alone, turns them into P(high quality): the reward. An LF pack
is a YAML file with

- `task_types`: ordered `{name, pattern}` rules on the prompt (case-insensitive regex, first match wins, else
  `general`) that give each row the `task_type` the LFs' `task_types` filters read (length expectations differ
  between "write an essay" and "give me a synonym");
- `functions`: labeling functions, exactly as in a recipe's `labeling.functions`;
- `label_model`: the label model settings, as in a recipe.

The other sources are a trained reward model folder (`reward_model`, e.g. the `reward_model` asset's version)
and a PairRM ranker (`pairrm`: hub id, ranker folder or `tiny`), which compares the rows that share a prompt
(a prompt with a single row gets 0, the neutral score).

Input rows need a string `prompt` and a string `response`; every other field is carried over untouched (a string
`finish_reason`, e.g. `length` for a sample cut at the token limit, also feeds the pack's `unfinished` LF). The
output holds the same rows in the same order with a float `reward` (higher is better) appended as the last key
(the original text of the row is kept byte for byte); a row that already has `reward` gets it replaced in place
(that row is re-serialised). Bad rows are reported with their line numbers and nothing is written; the output
appears only once complete (written beside it, then renamed).

`evaluate_alpaca_pairs` measures a source on AlpacaEval judge annotations (see its docstring).
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from prefscale.jsonl import json_type_name, parse_object_line
from prefscale.labeling import DEFAULT_TASK_TYPE, LabelingFunction, TaskTypeRule, task_type_of, validate_lfs
from prefscale.recipe import LabelModelConfig

LF_PACKS_DIR = Path(__file__).resolve().parents[1] / "recipes" / "lf_packs"
DEFAULT_PACK = "helpfulness"
SCORE_SOURCES = ("label_model", "reward_model", "pairrm")
MAX_REPORTED = 20  # bad rows listed before "... and N more"


# --- LF packs -----------------------------------------------------------------------------------------------


class LFPack(BaseModel):
    """A reusable set of labeling functions with the prompt rules that assign task types."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    task_types: tuple[TaskTypeRule, ...] = ()
    functions: tuple[LabelingFunction, ...] = Field(min_length=1)
    label_model: LabelModelConfig = LabelModelConfig()
    tie_break: Literal["length", "none"] = Field(
        default="length",
        description="order rows with the same P(high) by response length in characters (longer first)",
    )

    @model_validator(mode="after")
    def _check(self) -> LFPack:
        validate_lfs(self.functions)
        known = {r.name for r in self.task_types} | {DEFAULT_TASK_TYPE}
        for lf in self.functions:
            unknown = sorted(set(lf.task_types or ()) - known)
            if unknown:
                raise ValueError(f"labeling function {lf.name!r} names unknown task types {unknown}")
        return self

    def task_type_of(self, prompts: Sequence[str]) -> list[str]:
        """Each prompt's task type: the first rule whose pattern matches (case-insensitive), else `general`."""
        return task_type_of(prompts, self.task_types)


def load_lf_pack(name_or_path: str | Path = DEFAULT_PACK) -> LFPack:
    """An LF pack by name (`recipes/lf_packs/<name>.yaml`) or path; errors name the file and the bad fields."""
    p = Path(name_or_path)
    if p.suffix not in {".yaml", ".yml"} and not p.exists():
        p = LF_PACKS_DIR / f"{name_or_path}.yaml"
    if not p.is_file():
        known = sorted(f.stem for f in LF_PACKS_DIR.glob("*.yaml"))
        raise ValueError(f"unknown LF pack {str(name_or_path)!r}: not a file, and not one of {known}")
    try:
        data = yaml.safe_load(p.read_text())
        return LFPack.model_validate(data)
    except yaml.YAMLError as e:
        raise ValueError(f"invalid LF pack {p}: not valid YAML ({e})") from None
    except ValidationError as e:
        lines = [f"invalid LF pack {p}:"]
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
            lines.append(f"  - {loc}: {'unknown key' if err['type'] == 'extra_forbidden' else err['msg']}")
        raise ValueError("\n".join(lines)) from None


# --- scoring ------------------------------------------------------------------------------------------------


def break_ties(scores: np.ndarray, key: np.ndarray) -> np.ndarray:
    """`scores` with equal values ordered by `key` (higher key, higher score), without reordering distinct ones.

    Within each group of equal scores a row moves up by `eps * (rank of its key in the group) / (group size)`,
    with `eps` under half the smallest gap between distinct scores, so the order between groups is unchanged;
    rows with equal keys stay tied.
    """
    scores = np.asarray(scores, dtype=np.float64)
    key = np.asarray(key, dtype=np.float64)
    if len(scores) < 2:
        return scores.copy()
    distinct = np.unique(scores)
    eps = 0.49 * (float(np.min(np.diff(distinct))) if len(distinct) > 1 else 1.0)
    order = np.lexsort((key, scores))  # by score, then key
    s, k = scores[order], key[order]
    starts_group = np.r_[True, s[1:] != s[:-1]]
    group = np.cumsum(starts_group) - 1
    first = np.flatnonzero(starts_group)
    size = np.diff(np.r_[first, len(s)])
    seen = np.cumsum(starts_group | np.r_[True, k[1:] != k[:-1]])  # distinct (score, key) so far
    rank = seen - seen[first[group]]  # dense rank of the key within its group, from 0
    out = np.empty_like(scores)
    out[order] = s + eps * rank / size[group]
    return out


@dataclass(frozen=True)
class LabelModelScores:
    rewards: np.ndarray  # P(high) per row, ties broken as the pack says
    p_high: np.ndarray  # the label model's P(high) as fitted
    votes: pl.DataFrame  # the label matrix (one column per LF)
    task_types: list[str]
    weights: dict[str, float]  # estimated LF accuracies


def label_model_scores(
    prompts: Sequence[str],
    responses: Sequence[str],
    pack: LFPack,
    *,
    finish_reasons: Sequence[str | None] | None = None,
    seed: int = 0,
) -> LabelModelScores:
    """The pack's LFs on every row, and the label model fitted on those votes: P(high) per row."""
    from prefscale.label_model import fit_label_model
    from prefscale.labeling import apply_lfs

    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    task_types = pack.task_type_of(prompts)
    rows = pl.DataFrame(
        {
            "candidate_id": [str(i) for i in range(len(prompts))],
            "prompt": list(prompts),
            "response": list(responses),
            "task_type": task_types,
            "finish_reason": list(finish_reasons) if finish_reasons is not None else [None] * len(prompts),
        },
        schema={
            "candidate_id": pl.String,
            "prompt": pl.String,
            "response": pl.String,
            "task_type": pl.String,
            "finish_reason": pl.String,
        },
    )
    votes = apply_lfs(rows, pack.functions)
    names = [lf.name for lf in pack.functions]
    lm = pack.label_model
    res = fit_label_model(
        votes, names, n_epochs=lm.n_epochs, lr=lm.lr, l2=lm.l2, prec_init=lm.prec_init, seed=seed
    )
    p_high = res.labels["p_high"].to_numpy().astype(np.float64)
    rewards = p_high
    if pack.tie_break == "length":
        rewards = break_ties(p_high, np.array([len(r) for r in responses], dtype=np.float64))
    return LabelModelScores(
        rewards=rewards,
        p_high=p_high,
        votes=votes,
        task_types=task_types,
        weights=res.weights,
    )


def pairrm_scores_by_prompt(
    prompts: Sequence[str], responses: Sequence[str], model: str, *, device: str = "cpu", seed: int = 0
) -> np.ndarray:
    """PairRM rank scores, comparing the rows that share a prompt; 0 for a prompt with one row."""
    from prefscale.rewards import pairrm_source_scores

    ids = [str(i) for i in range(len(prompts))]
    frame = pl.DataFrame({"candidate_id": ids, "prompt": list(prompts), "response": list(responses)})
    counts = frame.group_by("prompt").len()
    frame = frame.join(counts, on="prompt").with_columns(
        pl.col("prompt").rank("dense").cast(pl.String).alias("prompt_id")
    )
    out = np.zeros(len(prompts), dtype=np.float64)
    multi = frame.filter(pl.col("len") > 1)
    if multi.height:
        scored = pairrm_source_scores(multi, model, device=device, seed=seed)
        for cid, s in zip(scored["candidate_id"], scored["score"], strict=True):
            out[int(cid)] = s
    return out


def score_pairs(
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    source: str = "label_model",
    pack: LFPack | None = None,
    model: str | None = None,
    finish_reasons: Sequence[str | None] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """A reward per (prompt, response) from `source` (see the module docstring); higher is better."""
    if source == "label_model":
        return label_model_scores(
            prompts, responses, pack or load_lf_pack(), finish_reasons=finish_reasons, seed=seed
        ).rewards
    if source == "reward_model":
        if not model:
            raise ValueError("--reward reward_model needs --model: a reward model folder")
        from prefscale.compute import resolve_compute
        from prefscale.reward_model import score_texts

        return score_texts(model, list(prompts), list(responses), resolve_compute("auto"))
    if source == "pairrm":
        from prefscale.compute import resolve_compute

        return pairrm_scores_by_prompt(
            prompts,
            responses,
            model or "llm-blender/PairRM",
            device=resolve_compute("auto").device,
            seed=seed,
        )
    raise ValueError(f"unknown reward source {source!r}; known: {', '.join(SCORE_SOURCES)}")


# --- the JSON Lines file ------------------------------------------------------------------------------------


class ScoreInputError(ValueError):
    """Bad input rows, each named by its line number."""

    def __init__(self, path: str | Path, problems: list[tuple[int, str]]) -> None:
        self.path, self.problems = str(path), problems
        shown = [f"  line {n}: {why}" for n, why in problems[:MAX_REPORTED]]
        if len(problems) > MAX_REPORTED:
            shown.append(f"  ... and {len(problems) - MAX_REPORTED} more")
        super().__init__(f"{path}: {len(problems)} bad row(s); nothing was written\n" + "\n".join(shown))


@dataclass(frozen=True)
class InputRow:
    line: int  # 1-based line number in the file
    text: str  # the line as read, without its line break
    record: dict[str, Any]


def read_rows(path: str | Path) -> list[InputRow]:
    """Every row of a JSON Lines file (gzipped if it ends in .gz), or `ScoreInputError` listing every bad row."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        raw = gzip.decompress(raw) if path.suffix == ".gz" else raw
    except OSError as e:
        raise ScoreInputError(path, [(0, f"cannot read the file ({e.strerror or e})")]) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ScoreInputError(path, [(line, "not valid UTF-8")]) from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final line break ends the last row; it does not start an empty one
    rows, problems = [], []
    for n, line in enumerate(lines, start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            problems.append((n, "empty line (every line must be a JSON object)"))
            continue
        rec, problem = parse_object_line(line)
        if problem:
            problems.append((n, problem))
            continue
        bad = [
            f"missing {k!r}" if k not in rec else f"{k!r} is {json_type_name(rec[k])}, not a string"
            for k in ("prompt", "response")
            if not isinstance(rec.get(k), str)
        ]
        if bad:
            problems.append((n, "; ".join(bad)))
            continue
        rows.append(InputRow(n, line, rec))
    if problems:
        raise ScoreInputError(path, problems)
    if not rows:
        raise ScoreInputError(path, [(0, "no rows in the file")])
    return rows


def scored_line(row: InputRow, reward: float) -> str:
    """The row's line with `"reward": <float>` appended (byte-identical otherwise), or replaced when present."""
    if not math.isfinite(reward):
        raise ValueError(f"line {row.line}: non-finite reward {reward}")
    value = json.dumps(float(reward))
    if "reward" in row.record:
        return json.dumps({**row.record, "reward": float(reward)}, ensure_ascii=False)
    body = row.text.rstrip()
    assert body.endswith("}"), row.text  # a JSON object, as read_rows checked
    return f'{body[:-1].rstrip()}, "reward": {value}}}'


def write_lines(path: str | Path, lines: Sequence[str]) -> None:
    """Write `lines` to `path` atomically: a temporary file beside it, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            for line in lines:
                fh.write(line + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def score_file(
    input_path: str | Path,
    output_path: str | Path,
    *,
    source: str = "label_model",
    pack: str | Path = DEFAULT_PACK,
    model: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Read, score and write (see the module docstring); returns a summary for the command to print."""
    lf_pack = load_lf_pack(pack) if source == "label_model" else None
    rows = read_rows(input_path)
    finish = [r.record.get("finish_reason") for r in rows]
    finish_reasons = [f if isinstance(f, str) else None for f in finish]
    rewards = score_pairs(
        [r.record["prompt"] for r in rows],
        [r.record["response"] for r in rows],
        source=source,
        pack=lf_pack,
        model=model,
        finish_reasons=finish_reasons,
        seed=seed,
    )
    write_lines(output_path, [scored_line(r, float(x)) for r, x in zip(rows, rewards, strict=True)])
    return {
        "rows": len(rows),
        "source": source if lf_pack is None else f"label_model (LF pack {lf_pack.name})",
        "mean": float(np.mean(rewards)),
        "min": float(np.min(rewards)),
        "max": float(np.max(rewards)),
        "distinct": len(np.unique(rewards)),
    }


# --- measuring a reward on AlpacaEval judge annotations -----------------------------------------------------


def split_of(instruction: str) -> str:
    """`dev` or `holdout`: a fixed half of the instructions by hash (the pack was tuned looking at `dev` only)."""
    return "dev" if hashlib.sha256(instruction.encode()).digest()[0] % 2 == 0 else "holdout"


def alpaca_answers_and_pairs(
    files: Sequence[str | Path], min_gap: float = 0.5
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(answers, pairs) implied by several models' AlpacaEval annotations against the same reference.

    answers: instruction, generator, output, preference (one row per model and instruction).
    pairs: for each instruction and each two models whose judge preferences against the common reference
    differ by at least `min_gap`, `winner`/`loser` (generators) and `split`. `preference` is the judge's
    P(model output beats the reference) on [1, 2] (2 = the model won), so the model with the higher preference
    is the one the judge prefers; null preferences are left out.
    """
    from prefscale.alpacaeval import load_annotations

    frames = []
    for f in files:
        a = load_annotations(f)
        frames.append(
            pl.DataFrame(
                {
                    "instruction": a["instruction"].tolist(),
                    "generator": a["generator_2"].astype(str).tolist(),
                    "output": a["output_2"].tolist(),
                    "preference": a["preference"].astype(float).tolist(),
                },
                schema={
                    "instruction": pl.String,
                    "generator": pl.String,
                    "output": pl.String,
                    "preference": pl.Float64,
                },
            )
        )
    answers = pl.concat(frames).unique(["instruction", "generator"], keep="first", maintain_order=True)
    rows = []
    for (ins,), g in answers.group_by("instruction", maintain_order=True):
        recs = [
            r
            for r in g.iter_rows(named=True)
            if r["preference"] is not None and not math.isnan(r["preference"])
        ]
        for a, b in itertools.combinations(sorted(recs, key=lambda r: r["generator"]), 2):
            gap = a["preference"] - b["preference"]
            if abs(gap) >= min_gap:
                win, lose = (a, b) if gap > 0 else (b, a)
                rows.append((ins, win["generator"], lose["generator"], abs(gap), split_of(ins)))
    pairs = pl.DataFrame(rows, schema=["instruction", "winner", "loser", "gap", "split"], orient="row")
    return answers, pairs


def evaluate_alpaca_pairs(
    directory: str | Path,
    *,
    source: str = "label_model",
    pack: str | Path = DEFAULT_PACK,
    model: str | None = None,
    min_gap: float = 0.5,
    seed: int = 0,
) -> dict[str, Any]:
    """How often a reward prefers the AlpacaEval judge's winner, next to "the longer answer wins".

    Reads every annotations file in `directory` (`*.json`, `*.jsonl`, `*.jsonl.gz`; one model each, the same
    reference), scores every model answer with `source` (the default: the LF pack's votes and a label model
    fitted on all the answers, with no labels), builds the pairs of `alpaca_answers_and_pairs`, and counts per
    split and overall: `reward_wins` (the reward is higher for the judge's winner), `reward_ties`,
    `reward_accuracy` (wins / pairs), `reward_accuracy_ties_half` (a tie counts one half), and the same for
    the length baseline (characters). The judge's preferences are only read to form the pairs and to count.
    """
    d = Path(directory)
    files = sorted(
        p
        for p in d.iterdir()
        if p.name.endswith((".json", ".jsonl", ".jsonl.gz", ".json.gz")) and p.is_file()
    )
    if not files:
        raise ValueError(f"no annotation files (*.json, *.jsonl, *.jsonl.gz) in {d}")
    answers, pairs = alpaca_answers_and_pairs(files, min_gap)
    if pairs.height == 0:
        raise ValueError(f"no pairs with a preference gap >= {min_gap} in {d}")
    lf_pack = load_lf_pack(pack) if source == "label_model" else None
    rewards = score_pairs(
        answers["instruction"].to_list(),
        answers["output"].to_list(),
        source=source,
        pack=lf_pack,
        model=model,
        seed=seed,
    )
    scored = answers.with_columns(
        pl.Series("reward", rewards, dtype=pl.Float64), pl.col("output").str.len_chars().alias("chars")
    ).select("instruction", "generator", "reward", "chars")
    joined = pairs.join(
        scored.rename({"generator": "winner", "reward": "r_win", "chars": "len_win"}),
        on=["instruction", "winner"],
    ).join(
        scored.rename({"generator": "loser", "reward": "r_lose", "chars": "len_lose"}),
        on=["instruction", "loser"],
    )
    result: dict[str, Any] = {
        "files": [p.name for p in files],
        "answers": answers.height,
        "min_gap": min_gap,
        "source": source if lf_pack is None else f"label_model (LF pack {lf_pack.name})",
        "distinct_rewards": int(scored["reward"].n_unique()),
    }
    for name, part in [
        ("all", joined),
        *[(s, joined.filter(pl.col("split") == s)) for s in ("dev", "holdout")],
    ]:
        result[name] = _pair_accuracy(part)
    return result


def _pair_accuracy(part: pl.DataFrame) -> dict[str, Any]:
    n = part.height
    rw = int((part["r_win"] > part["r_lose"]).sum())
    rt = int((part["r_win"] == part["r_lose"]).sum())
    lw = int((part["len_win"] > part["len_lose"]).sum())
    lt = int((part["len_win"] == part["len_lose"]).sum())
    reward_right = part["r_win"] > part["r_lose"]
    longer_right = part["len_win"] > part["len_lose"]
    only_reward = int((reward_right & ~longer_right).sum())
    only_longer = int((longer_right & ~reward_right).sum())
    return {
        "pairs": n,
        "reward_wins": rw,
        "reward_ties": rt,
        "reward_accuracy": rw / n if n else float("nan"),
        "reward_accuracy_ties_half": (rw + rt / 2) / n if n else float("nan"),
        "longer_wins": lw,
        "length_ties": lt,
        "longer_accuracy": lw / n if n else float("nan"),
        "longer_accuracy_ties_half": (lw + lt / 2) / n if n else float("nan"),
        "only_reward_right": only_reward,  # the pairs where the two disagree
        "only_longer_right": only_longer,
        "sign_test_p": _sign_test(only_reward, only_longer),
    }


def _sign_test(a: int, b: int) -> float:
    """Two-sided exact binomial (sign) test of a vs b successes at p = 1/2 (McNemar's exact test)."""
    n = a + b
    if n == 0:
        return 1.0
    k = min(a, b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)
