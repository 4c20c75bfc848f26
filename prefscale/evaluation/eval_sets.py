"""Evaluation sets with reference outputs: what every model is compared against by the AlpacaEval-style judges.

Three kinds (the recipe's `evaluation.reference`):

- `heldout_base`: the recipe's own held-out prompts (asset `eval_prompts`) with the *base policy's* samples
  (asset `eval_baseline`) as the reference, paired by (prompt_id, sample_idx). The base against this reference is
  trivially 50 % (every pair is the same text), so iteration 0 is the anchor and each checkpoint's number is a
  win rate against the base, as in `eval_leaderboard`.
- `alpaca_eval`: the 805 AlpacaEval instructions with GPT-4 Turbo's reference outputs (`gpt4_1106_preview`,
  AlpacaEval 2.0's baseline), from the Hugging Face Hub (`tatsu-lab/alpaca_eval`, config
  `alpaca_eval_gpt4_baseline`). Needs the Hub: offline this is a clear `EvalSetError` naming the way out (a file).
- a path: a local JSON array or JSON Lines file (gzipped or not) of objects with `instruction` and `output`
  (`reference_output` is accepted for `output`, as in AlpacaEval's own dumps); `generator` and `dataset` are
  optional. Validated row by row: the error names the file, the line and the problem.

An `EvalSet` is a polars frame with one row per instruction: `prompt_id` (a stable id), `instruction`,
`reference` (the reference output), `generator` (who wrote the reference) and `dataset`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from prefscale.evaluation.alpaca_metrics import (
    AnnotationsError,
    _parse_array,
    _parse_lines,
    _read_text,
    _skip_ws,
)

ALPACA_EVAL_REPO = "tatsu-lab/alpaca_eval"
ALPACA_EVAL_CONFIG = "alpaca_eval_gpt4_baseline"
ALPACA_EVAL_FILE = "alpaca_eval_gpt4_baseline.json"  # the same rows as a plain file in the dataset repo
ALPACA_EVAL_GENERATOR = "gpt4_1106_preview"  # AlpacaEval 2.0's reference: GPT-4 Turbo
ALPACA_EVAL_SIZE = 805

HELDOUT_BASE = "heldout_base"
ALPACA_EVAL = "alpaca_eval"

EVAL_SET_SCHEMA = {
    "prompt_id": pl.String,
    "instruction": pl.String,
    "reference": pl.String,
    "generator": pl.String,
    "dataset": pl.String,
}


class EvalSetError(ValueError):
    """An evaluation set that cannot be loaded: the source, the 1-based line (None for the whole file), the reason."""

    def __init__(self, source: str | Path, line: int | None, reason: str) -> None:
        self.source, self.line, self.reason = str(source), line, reason
        where = f"{self.source}: line {line}" if line is not None else self.source
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class EvalSet:
    """Instructions with reference outputs; `kind` is `alpaca_eval` or `file`, `source` where it came from."""

    kind: str
    source: str
    frame: pl.DataFrame
    sha256: str  # of the rows (instruction, reference, generator): the set's identity for lineage

    @property
    def generator(self) -> str:
        """The reference's generator when there is one, else `reference`."""
        gens = self.frame["generator"].unique().to_list()
        return gens[0] if len(gens) == 1 else "reference"

    def head(self, n: int | None) -> EvalSet:
        """The first `n` instructions (all when `n` is None)."""
        if n is None or n >= self.frame.height:
            return self
        return _make(self.kind, self.source, self.frame.head(n))


def _prompt_id(instruction: str, index: int) -> str:
    return f"ae{index:04d}-{hashlib.sha256(instruction.encode()).hexdigest()[:8]}"


def _make(kind: str, source: str, frame: pl.DataFrame) -> EvalSet:
    h = hashlib.sha256()
    for ins, ref, gen in frame.select("instruction", "reference", "generator").iter_rows():
        h.update(json.dumps([ins, ref, gen]).encode())
        h.update(b"\n")
    return EvalSet(kind, source, frame.cast(EVAL_SET_SCHEMA), h.hexdigest())


def _frame(records: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "prompt_id": [_prompt_id(r["instruction"], k) for k, r in enumerate(records)],
            "instruction": [r["instruction"] for r in records],
            "reference": [r["reference"] for r in records],
            "generator": [r["generator"] for r in records],
            "dataset": [r["dataset"] for r in records],
        },
        schema=EVAL_SET_SCHEMA,
    )


def _check_row(source: Path, line: int, rec: Any, default_generator: str) -> dict[str, Any]:
    if not isinstance(rec, dict):
        raise EvalSetError(source, line, f"expected a JSON object, got {type(rec).__name__}")
    if "instruction" not in rec:
        raise EvalSetError(source, line, "missing key instruction")
    has_output, has_ref = "output" in rec, "reference_output" in rec
    if not has_output and not has_ref:
        raise EvalSetError(
            source, line, "missing key output (the reference output; reference_output also works)"
        )
    if has_output and has_ref and rec["output"] != rec["reference_output"]:
        raise EvalSetError(source, line, "output and reference_output differ: give one reference output")
    key = "output" if has_output else "reference_output"
    out: dict[str, Any] = {}
    for name, value in (("instruction", rec["instruction"]), (key, rec[key])):
        if not isinstance(value, str):
            raise EvalSetError(source, line, f"{name} must be a string, got {type(value).__name__}")
        if not value.strip():
            raise EvalSetError(source, line, f"{name} is empty")
    out["instruction"], out["reference"] = rec["instruction"], rec[key]
    for name, default in (("generator", default_generator), ("dataset", "")):
        value = rec.get(name, default)
        if value is None:
            value = default
        if not isinstance(value, str):
            raise EvalSetError(source, line, f"{name} must be a string, got {type(value).__name__}")
        out[name] = value
    return out


def load_eval_file(path: str | Path, *, default_generator: str = "reference") -> EvalSet:
    """A local evaluation set: a JSON array or JSON Lines (gzipped or not) of `instruction` + `output` objects.

    Raises `EvalSetError` naming the file, the line and the reason: unreadable file, invalid JSON, a non-object
    row, a missing or empty `instruction` / `output`, a non-string field, or a duplicated instruction.
    """
    path = Path(path).expanduser()
    try:
        text = _read_text(path)
        start = _skip_ws(text, 0)
        parsed = list(
            _parse_array(path, text) if text[start : start + 1] == "[" else _parse_lines(path, text)
        )
    except AnnotationsError as e:  # the same JSON / JSON Lines / gzip reader as the annotations files
        raise EvalSetError(path, e.line, e.reason) from None
    records, seen = [], {}
    for line, rec in parsed:
        row = _check_row(path, line, rec, default_generator)
        if row["instruction"] in seen:
            raise EvalSetError(
                path, line, f"duplicate instruction (first on line {seen[row['instruction']]})"
            )
        seen[row["instruction"]] = line
        records.append(row)
    if not records:
        raise EvalSetError(path, None, "no instructions in the file")
    return _make("file", str(path), _frame(records))


def load_alpaca_eval(*, cache_dir: str | Path | None = None) -> EvalSet:
    """The 805 AlpacaEval instructions with GPT-4 Turbo's reference outputs, from the Hugging Face Hub.

    Tries `datasets.load_dataset("tatsu-lab/alpaca_eval", "alpaca_eval_gpt4_baseline")`, then (datasets >= 4 no
    longer runs the repository's loading script) the repository's `alpaca_eval_gpt4_baseline.json` through
    `huggingface_hub`. Offline (or when both fail) raises `EvalSetError` saying how to use a local file instead.
    """
    errors: list[str] = []
    rows: list[dict[str, Any]] | None = None
    try:
        import datasets

        ds = datasets.load_dataset(ALPACA_EVAL_REPO, ALPACA_EVAL_CONFIG, cache_dir=cache_dir)
        split = ds["eval"] if "eval" in ds else ds[next(iter(ds))]
        rows = [dict(r) for r in split]
    except Exception as e:  # offline, script-based dataset refused, ...
        errors.append(f"datasets.load_dataset: {type(e).__name__}: {e}")
    if rows is None:
        try:
            from huggingface_hub import hf_hub_download

            local = hf_hub_download(
                ALPACA_EVAL_REPO, ALPACA_EVAL_FILE, repo_type="dataset", cache_dir=cache_dir
            )
            rows = json.loads(Path(local).read_text())
        except Exception as e:
            errors.append(f"huggingface_hub.hf_hub_download: {type(e).__name__}: {e}")
    source = f"hf://datasets/{ALPACA_EVAL_REPO}/{ALPACA_EVAL_CONFIG}"
    if rows is None:
        detail = "; ".join(err.splitlines()[0][:300] for err in errors)
        raise EvalSetError(
            source,
            None,
            "cannot load the AlpacaEval set from the Hugging Face Hub (offline? HF_HUB_OFFLINE is "
            f"{'set' if _offline() else 'not set'}): {detail}. Use a local copy instead: set "
            "evaluation.reference to a JSON/JSONL file of instruction + output rows",
        )
    records = [
        _check_row(Path(source), k + 1, r, ALPACA_EVAL_GENERATOR) for k, r in enumerate(rows)
    ]  # `line` here is the row number
    if not records:
        raise EvalSetError(source, None, "the dataset has no rows")
    return _make("alpaca_eval", source, _frame(records))


def _offline() -> bool:
    import os

    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def load_eval_set(reference: str, *, size: int | None = None, cache_dir: str | Path | None = None) -> EvalSet:
    """The evaluation set named by a recipe's `evaluation.reference` (not `heldout_base`: that one is assets)."""
    if reference == HELDOUT_BASE:
        raise ValueError(
            "heldout_base is the recipe's own held-out split: read eval_prompts / eval_baseline instead"
        )
    es = load_alpaca_eval(cache_dir=cache_dir) if reference == ALPACA_EVAL else load_eval_file(reference)
    return es.head(size)


def heldout_pairs(model_samples: pl.DataFrame, base_samples: pl.DataFrame) -> pl.DataFrame:
    """The `heldout_base` comparison: each model sample against the base's sample for the same (prompt, index).

    Both frames are `eval_results` / `eval_baseline` samples (prompt_id, sample_idx, task_type, prompt, response,
    finish_reason, ...). Returns prompt_id, sample_idx, task_type, instruction, output_1 (the base = the
    reference), output_2 (the model), finished_1, finished_2; raises if the two cover different samples.
    """
    keys = ["prompt_id", "sample_idx"]
    if model_samples.select(keys).sort(keys).to_dicts() != base_samples.select(keys).sort(keys).to_dicts():
        raise ValueError("model samples and base samples cover different (prompt_id, sample_idx)")
    ref = base_samples.select(
        *keys,
        pl.col("response").alias("output_1"),
        (pl.col("finish_reason") == "stop").alias("finished_1"),
    )
    return (
        model_samples.select(
            *keys,
            "task_type",
            pl.col("prompt").alias("instruction"),
            pl.col("response").alias("output_2"),
            (pl.col("finish_reason") == "stop").alias("finished_2"),
        )
        .join(ref, on=keys, how="inner")
        .select(*keys, "task_type", "instruction", "output_1", "output_2", "finished_1", "finished_2")
        .sort(keys)
    )


def eval_set_pairs(eval_set: EvalSet, model_samples: pl.DataFrame) -> pl.DataFrame:
    """An external set's comparison: the model's sample for each instruction against the reference output.

    `model_samples` has prompt_id (the eval set's), sample_idx, response and finish_reason (as
    `prefscale.generation.transformers_backend.sample_responses` returns). Same columns as `heldout_pairs`; the references count as
    finished.
    """
    es = eval_set.frame
    missing = set(es["prompt_id"]) - set(model_samples["prompt_id"])
    if missing:
        raise ValueError(f"model samples lack {len(missing)} of the eval set's instructions")
    return (
        model_samples.select(
            "prompt_id",
            "sample_idx",
            pl.col("response").alias("output_2"),
            (pl.col("finish_reason") == "stop").alias("finished_2"),
        )
        .join(
            es.select(
                "prompt_id",
                pl.col("dataset").alias("task_type"),
                "instruction",
                pl.col("reference").alias("output_1"),
            ),
            on="prompt_id",
            how="inner",
        )
        .with_columns(pl.lit(True).alias("finished_1"))
        .select(
            "prompt_id",
            "sample_idx",
            "task_type",
            "instruction",
            "output_1",
            "output_2",
            "finished_1",
            "finished_2",
        )
        .sort("prompt_id", "sample_idx")
    )
