"""The prompt pool: loaded (embedded domain or a file), de-duplicated, split into per-iteration shards and a
fixed held-out evaluation split."""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl

from prefscale import domain
from prefscale.recipe import DataConfig

PROMPT_SCHEMA = {"prompt_id": pl.String, "task_type": pl.String, "prompt": pl.String}


class PromptsFileError(ValueError):
    """A prompts file that cannot be used (named, with the reason)."""


def _prompt_id(text: str) -> str:
    return "p" + hashlib.sha256(text.encode()).hexdigest()[:12]


def load_prompts_file(path: str | Path) -> pl.DataFrame:
    """Prompts from JSONL, CSV or Parquet with a `prompt` column and optional `task_type`."""
    p = Path(path)
    if not p.is_file():
        raise PromptsFileError(f"prompts file not found: {p}")
    if p.stat().st_size == 0 or (
        p.suffix in {".jsonl", ".csv"} and not p.read_text(errors="replace").strip()
    ):
        raise PromptsFileError(f"prompts file {p} is empty")
    try:
        if p.suffix == ".jsonl":
            df = pl.read_ndjson(p)
        elif p.suffix == ".csv":
            df = pl.read_csv(p)
        elif p.suffix == ".parquet":
            df = pl.read_parquet(p)
        else:
            raise PromptsFileError(
                f"prompts file {p}: unsupported format {p.suffix!r} (use .jsonl, .csv, .parquet)"
            )
    except PromptsFileError:
        raise
    except Exception as e:
        raise PromptsFileError(f"prompts file {p} is malformed: {e}") from None
    if df.height == 0:
        raise PromptsFileError(f"prompts file {p} is empty")
    if "prompt" not in df.columns:
        raise PromptsFileError(f"prompts file {p} has no 'prompt' column (columns: {df.columns})")
    if df.schema["prompt"] == pl.Null:
        raise PromptsFileError(f"prompts file {p}: empty prompt at row 1")
    if df.schema["prompt"] != pl.String:
        raise PromptsFileError(f"prompts file {p}: 'prompt' must be text, got {df.schema['prompt']}")
    bad = df.with_row_index("_row").filter(
        pl.col("prompt").is_null() | (pl.col("prompt").str.strip_chars() == "")
    )
    if bad.height:
        raise PromptsFileError(f"prompts file {p}: empty prompt at row {int(bad['_row'][0]) + 1}")
    task = pl.col("task_type").cast(pl.String) if "task_type" in df.columns else pl.lit("general")
    return df.select(pl.col("prompt").str.strip_chars(), task.fill_null("general").alias("task_type"))


def build_pool(cfg: DataConfig, seed: int) -> pl.DataFrame:
    """All usable prompts, de-duplicated (case/whitespace-insensitive), with stable content-derived ids."""
    if cfg.source == "embedded":
        raw = domain.make_prompt_pool(cfg.pool_size, seed).select("prompt", "task_type")
    else:
        raw = load_prompts_file(cfg.path or "")
    norm = pl.col("prompt").str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars()
    pool = raw.with_columns(norm.alias("_norm")).unique("_norm", keep="first", maintain_order=True)
    return pool.select(
        pl.col("prompt").map_elements(_prompt_id, return_dtype=pl.String).alias("prompt_id"),
        "task_type",
        "prompt",
    )


def split_pool(pool: pl.DataFrame, cfg: DataConfig, iterations: int, seed: int) -> dict[str, pl.DataFrame]:
    """`heldout` plus one disjoint shard per iteration (`"1"`..`"K"`), from a seeded shuffle of the pool."""
    need = cfg.heldout_size + cfg.prompts_per_iteration * iterations
    if pool.height < need:
        raise ValueError(
            f"prompt pool has {pool.height} distinct prompts; {iterations} iterations x "
            f"{cfg.prompts_per_iteration} + {cfg.heldout_size} held-out need {need}"
        )
    shuffled = pool.sample(fraction=1.0, shuffle=True, seed=seed)
    out = {"heldout": shuffled.head(cfg.heldout_size).sort("prompt_id")}
    for i in range(iterations):
        start = cfg.heldout_size + i * cfg.prompts_per_iteration
        out[str(i + 1)] = shuffled.slice(start, cfg.prompts_per_iteration).sort("prompt_id")
    return out
