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
`finish_reason`, e.g. `length` for a sample cut at the token limit, also feeds the pack's `unfinished` LF; a string
`reference`, a known good answer to the prompt, feeds its `reference` LFs, which abstain on rows without one). The
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
from typing import Any

import numpy as np
import polars as pl

from prefscale.config.labeling import DEFAULT_PACK, load_lf_pack
from prefscale.evaluation.alpaca_metrics import load_annotations
from prefscale.jsonl import json_type_name, parse_object_line
from prefscale.labeling.length import spearman
from prefscale.pairs.length import length_slope, log_length
from prefscale.rewards.text_scores import score_pairs

MAX_REPORTED = 20  # bad rows listed before "... and N more"


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
    except OSError as e:  # gzip.BadGzipFile is an OSError too
        raise ValueError(f"--input {path}: cannot read it ({e.strerror or e})") from None
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
        if rec.get("reference") is not None and not isinstance(rec["reference"], str):
            bad.append(f"'reference' is {json_type_name(rec['reference'])}, not a string or null")
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
    """Read, score and write (see the module docstring); returns a summary for the command to print.

    The output must be another file than the input (the input is never rewritten).
    """
    src, dst = Path(input_path), Path(output_path)
    if src.resolve() == dst.resolve() or (src.exists() and dst.exists() and src.samefile(dst)):
        raise ValueError(
            f"--output {dst} is the input file; write the scored rows to another path (the input is kept as it is)"
        )
    lf_pack = load_lf_pack(pack) if source == "label_model" else None
    rows = read_rows(input_path)
    finish = [r.record.get("finish_reason") for r in rows]
    finish_reasons = [f if isinstance(f, str) else None for f in finish]
    references = [r.record.get("reference") for r in rows]
    rewards = score_pairs(
        [r.record["prompt"] for r in rows],
        [r.record["response"] for r in rows],
        source=source,
        pack=lf_pack,
        model=model,
        finish_reasons=finish_reasons,
        references=references if any(references) else None,
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
        "with_reference": sum(1 for r in references if r),
    }


# --- measuring a reward on AlpacaEval judge annotations -----------------------------------------------------


def split_of(instruction: str) -> str:
    """`dev` or `holdout`: a fixed half of the instructions by hash (the pack was tuned looking at `dev` only)."""
    return "dev" if hashlib.sha256(instruction.encode()).digest()[0] % 2 == 0 else "holdout"


def alpaca_answers_and_pairs(
    files: Sequence[str | Path], min_gap: float = 0.5
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(answers, pairs) implied by several models' AlpacaEval annotations against the same reference.

    answers: instruction, generator, output, preference, and reference (the annotation's `output_1`: the answer the
    judge compared this one with), one row per model and instruction.
    pairs: for each instruction and each two models whose judge preferences against the common reference
    differ by at least `min_gap`, `winner`/`loser` (generators) and `split`. `preference` is the judge's
    P(model output beats the reference) on [1, 2] (2 = the model won), so the model with the higher preference
    is the one the judge prefers; null preferences are left out.
    """

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
                    "reference": a["output_1"].tolist(),
                },
                schema={
                    "instruction": pl.String,
                    "generator": pl.String,
                    "output": pl.String,
                    "preference": pl.Float64,
                    "reference": pl.String,
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
    references: bool = True,
) -> dict[str, Any]:
    """How often a reward prefers the AlpacaEval judge's winner, next to "the longer answer wins".

    Reads every annotations file in `directory` (`*.json`, `*.jsonl`, `*.jsonl.gz`; one model each, the same
    reference), scores every model answer with `source` (the default: the LF pack's votes and a label model
    fitted on all the answers, with no labels), builds the pairs of `alpaca_answers_and_pairs`, and counts per
    split and overall: `reward_wins` (the reward is higher for the judge's winner), `reward_ties`,
    `reward_accuracy` (wins / pairs), `reward_accuracy_ties_half` (a tie counts one half), and the same for
    the length baseline (characters); and, length-aware: the accuracy on the pairs where the judge preferred
    the shorter answer (and the longer), their mean `length_balanced_accuracy` (a pure length proxy scores
    0.5), and `lc_reward_accuracy`, that of the reward with its linear trend in log length removed
    (`length_controlled`), beside the reward's Spearman correlation with length over all the answers. The
    judge's preferences are only read to form the pairs and to count. With `references`, each answer's
    `output_1` (the reference answer it was judged against) feeds the pack's `reference` LFs; without, they
    abstain.
    """
    files = annotation_files(directory)
    answers, pairs = alpaca_answers_and_pairs(files, min_gap)
    if pairs.height == 0:
        raise ValueError(f"no pairs with a preference gap >= {min_gap} in {directory}")
    lf_pack = load_lf_pack(pack) if source == "label_model" else None
    rewards = score_pairs(
        answers["instruction"].to_list(),
        answers["output"].to_list(),
        source=source,
        pack=lf_pack,
        model=model,
        references=answers["reference"].to_list() if references else None,
        seed=seed,
    )
    scored, slope = scored_answers(answers, rewards)
    joined = pairs_with_rewards(pairs, scored)
    result: dict[str, Any] = {
        "files": [p.name for p in files],
        "answers": answers.height,
        "min_gap": min_gap,
        "source": source if lf_pack is None else f"label_model (LF pack {lf_pack.name})",
        "references": references,
        "distinct_rewards": int(scored["reward"].n_unique()),
        "length_correlation": _nan_if_none(spearman(scored["reward"], scored["chars"])),
        "length_slope": slope,
    }
    for name, part in [
        ("all", joined),
        *[(s, joined.filter(pl.col("split") == s)) for s in ("dev", "holdout")],
    ]:
        result[name] = pair_agreement(part)
    return result


def annotation_files(directory: str | Path) -> list[Path]:
    """The annotation files (`*.json`, `*.jsonl`, `*.jsonl.gz`, `*.json.gz`) of a folder, sorted; a clear
    ValueError when the folder is missing or holds none."""
    d = Path(directory)
    if not d.is_dir():
        raise ValueError(f"--eval-alpaca-pairs {d}: no such folder")
    files = sorted(
        p
        for p in d.iterdir()
        if p.name.endswith((".json", ".jsonl", ".jsonl.gz", ".json.gz")) and p.is_file()
    )
    if not files:
        raise ValueError(f"no annotation files (*.json, *.jsonl, *.jsonl.gz) in {d}")
    return files


def pairs_with_rewards(pairs: pl.DataFrame, scored: pl.DataFrame) -> pl.DataFrame:
    """`pairs` with each side's reward, length and length-controlled reward (`scored`: instruction, generator,
    reward, chars, reward_lc): r_win/r_lose, len_win/len_lose, lc_win/lc_lose, as `pair_agreement` reads."""
    return pairs.join(
        scored.rename({"generator": "winner", "reward": "r_win", "chars": "len_win", "reward_lc": "lc_win"}),
        on=["instruction", "winner"],
    ).join(
        scored.rename(
            {"generator": "loser", "reward": "r_lose", "chars": "len_lose", "reward_lc": "lc_lose"}
        ),
        on=["instruction", "loser"],
    )


def scored_answers(answers: pl.DataFrame, rewards: Sequence[float]) -> tuple[pl.DataFrame, float]:
    """instruction, generator, reward, chars and reward_lc (`length_controlled`) per answer, and the length slope
    removed: what `pairs_with_rewards` joins onto the pairs."""
    scored = answers.select(
        "instruction",
        "generator",
        pl.Series("reward", rewards, dtype=pl.Float64),
        pl.col("output").str.len_chars().alias("chars"),
    )
    return length_controlled(scored)


def length_controlled(scored: pl.DataFrame) -> tuple[pl.DataFrame, float]:
    """`scored` (`reward`, `chars`) with `reward_lc`: the reward less its least-squares linear trend in
    log(1 + characters) (`prefscale.pairs.length.length_slope`, removed whatever its sign), and that slope. What
    `reward_lc` still ranks is what the reward sees beyond length."""
    x = log_length(scored["chars"].to_numpy())
    y = scored["reward"].to_numpy().astype(np.float64)
    slope = length_slope(scored["chars"].to_numpy(), y)  # the fit `pairs.length_control: regress` uses
    return scored.with_columns(pl.Series("reward_lc", y - slope * (x - x.mean()), dtype=pl.Float64)), slope


def _nan_if_none(value: float | None) -> float:
    return float("nan") if value is None else value


def pair_agreement(part: pl.DataFrame) -> dict[str, Any]:
    """Agreement with the judge overall, on the pairs where it preferred the longer / the shorter answer, their
    mean (length-balanced: 0.5 for "the longer answer wins"), and of the length-controlled reward."""
    n = part.height
    shorter = part.filter(pl.col("len_win") < pl.col("len_lose"))
    longer = part.filter(pl.col("len_win") > pl.col("len_lose"))
    on_shorter = _share(shorter["r_win"] > shorter["r_lose"])
    on_longer = _share(longer["r_win"] > longer["r_lose"])
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
        "shorter_won_pairs": shorter.height,
        "reward_accuracy_shorter_won": on_shorter,
        "reward_accuracy_longer_won": on_longer,
        "length_balanced_accuracy": (on_shorter + on_longer) / 2,
        "lc_reward_accuracy": _share(part["lc_win"] > part["lc_lose"]),
    }


def _share(hits: pl.Series) -> float:
    return float(hits.sum()) / hits.len() if hits.len() else float("nan")


def _sign_test(a: int, b: int) -> float:
    """Two-sided exact binomial (sign) test of a vs b successes at p = 1/2 (McNemar's exact test)."""
    n = a + b
    if n == 0:
        return 1.0
    k = min(a, b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)
