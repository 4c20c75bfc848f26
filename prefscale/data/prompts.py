"""The prompt pool: loaded (embedded domain, a file, or a `datasets` dataset), de-duplicated, split into
per-iteration shards and a fixed held-out evaluation split."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from prefscale.config.base import DATA_FILE_SUFFIXES
from prefscale.config.data import DataConfig
from prefscale.data import domain
from prefscale.jsonl import json_type_name, parse_object_line
from prefscale.labeling.reference_kind import REFERENCE_COLUMN  # the pool's column of known good answers
from prefscale.labeling.task_types import TaskTypeRule, tag_task_types

PROMPT_SCHEMA = {"prompt_id": pl.String, "task_type": pl.String, "prompt": pl.String}
_RAW_SCHEMA = {"prompt": pl.String, "task_type": pl.String}


class PromptsFileError(ValueError):
    """A prompts file that cannot be used (named, with the reason)."""


def _prompt_id(text: str) -> str:
    return "p" + hashlib.sha256(text.encode()).hexdigest()[:12]


def _decode_utf8(p: Path) -> str:
    """The file's text; `PromptsFileError` naming the line of the first byte that is not UTF-8."""
    raw = p.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise PromptsFileError(
            f"prompts file {p} is not UTF-8 text: line {line} (byte {e.start}) holds {raw[e.start : e.start + 1]!r}; "
            "save it as UTF-8"
        ) from None


def _read_jsonl(p: Path, text: str, reference_column: str = REFERENCE_COLUMN) -> pl.DataFrame:
    """The `prompt`, `task_type` and (where any line has one) `reference` of each non-blank line; errors name
    the line."""
    prompts: list[str] = []
    tasks: list[str | None] = []
    references: list[str | None] = []
    keys: set[str] = set()
    missing = 0  # the first line without a `prompt` field
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        row, problem = parse_object_line(line)
        if row is None:
            raise PromptsFileError(f"prompts file {p} is malformed: line {n}: {problem}")
        keys |= row.keys()
        if "prompt" not in row:
            missing = missing or n  # said below: "no column" if no row has it, else this line
            continue
        value, task = row["prompt"], row.get("task_type")
        if value is not None and not isinstance(value, str):
            raise PromptsFileError(
                f"prompts file {p} line {n}: 'prompt' must be text, got {json_type_name(value)}"
            )
        if value is None or not value.strip():
            raise PromptsFileError(f"prompts file {p}: empty prompt at row {len(prompts) + 1} (line {n})")
        if task is not None and not isinstance(task, str):
            raise PromptsFileError(
                f"prompts file {p} line {n}: 'task_type' must be text, got {json_type_name(task)}"
            )
        reference = row.get(reference_column)
        if reference is not None and not isinstance(reference, str):
            raise PromptsFileError(
                f"prompts file {p} line {n}: {reference_column!r} must be text or null, got "
                f"{json_type_name(reference)}"
            )
        prompts.append(value)
        tasks.append(task)
        references.append(reference)
    if not keys:
        raise PromptsFileError(f"prompts file {p} is empty")
    if not prompts:
        raise PromptsFileError(f"prompts file {p} has no 'prompt' column (columns: {sorted(keys)})")
    if missing:
        raise PromptsFileError(f"prompts file {p} line {missing}: no 'prompt' field")
    frame = pl.DataFrame({"prompt": prompts, "task_type": tasks}, schema=_RAW_SCHEMA)
    return (
        frame.with_columns(pl.Series(reference_column, references, dtype=pl.String))
        if reference_column in keys
        else frame
    )


def _references(
    frame: pl.DataFrame, where: str, column: str, cells: Sequence[Any] | None = None
) -> pl.DataFrame:
    """`frame` (prompt, task_type) with a `reference` column from `column` of the source (`cells`, or the
    frame's own column), or as it is when the source has no such column and `column` is the default; errors
    name the source, the column and the row."""
    if cells is None and column in frame.columns:
        if frame.schema[column] not in (pl.String, pl.Null):
            raise PromptsFileError(f"{where}: {column!r} must be text, got {frame.schema[column]}")
        cells = frame[column].to_list()
    if cells is None:
        if column != REFERENCE_COLUMN:
            raise PromptsFileError(f"{where} has no column {column!r} (data.reference_column)")
        return frame.select("prompt", "task_type")
    bad = next((i for i, c in enumerate(cells) if c is not None and not isinstance(c, str)), None)
    if bad is not None:
        raise PromptsFileError(f"{where}: {column!r} at row {bad + 1} must be text or null")
    return frame.select("prompt", "task_type").with_columns(
        pl.Series(REFERENCE_COLUMN, list(cells), dtype=pl.String)
    )


def load_prompts_file(path: str | Path, reference_column: str = REFERENCE_COLUMN) -> pl.DataFrame:
    """Prompts from JSONL, CSV or Parquet with a `prompt` column, optional `task_type`, and an optional
    `reference_column` (a known good answer per prompt; kept as `reference`).

    Errors name the file and, where there is one, the line or row: not UTF-8, malformed JSON, no `prompt`
    column, an empty or non-text prompt.
    """
    p = Path(path)
    if not p.is_file():
        raise PromptsFileError(f"prompts file not found: {p}")
    if p.suffix not in {".jsonl", ".csv", ".parquet"}:
        raise PromptsFileError(
            f"prompts file {p}: unsupported format {p.suffix!r} (use .jsonl, .csv, .parquet)"
        )
    if p.stat().st_size == 0:
        raise PromptsFileError(f"prompts file {p} is empty")
    text = _decode_utf8(p) if p.suffix != ".parquet" else ""
    if p.suffix != ".parquet" and not text.strip():
        raise PromptsFileError(f"prompts file {p} is empty")
    if p.suffix == ".jsonl":
        df = _read_jsonl(p, text, reference_column)
    else:
        try:
            df = pl.read_csv(p) if p.suffix == ".csv" else pl.read_parquet(p)
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise PromptsFileError(f"prompts file {p} is malformed: {first}") from None
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
    out = df.with_columns(pl.col("prompt").str.strip_chars(), task.fill_null("general").alias("task_type"))
    return _references(out, f"prompts file {p}", reference_column)


def _prompt_text(value: Any) -> str | None:
    """A prompt cell as text: a string, or the first user turn of a list of chat messages."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        for m in value:
            if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str):
                return m["content"]
    return None


def load_hf_dataset(cfg: DataConfig) -> pl.DataFrame:
    """Prompts from `datasets.load_dataset`: a hub id (with `config_name`, `split`, `revision`), a local dataset
    folder, or a local data file (.jsonl/.json/.csv/.parquet, loaded by its format's builder).

    The `column` holds text or a list of chat messages (the first user turn is the prompt); a `task_type`
    column, when present, is kept. Errors name the dataset, the split and the column.
    """
    import datasets

    ref = cfg.dataset or ""
    local = Path(ref).expanduser()
    kwargs: dict[str, Any] = {"split": cfg.split}
    if local.is_file():
        if local.suffix not in DATA_FILE_SUFFIXES:
            raise PromptsFileError(
                f"dataset file {local}: unsupported format {local.suffix!r} (use {', '.join(DATA_FILE_SUFFIXES)})"
            )
        builder = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}[local.suffix]
        args: tuple[str, ...] = (builder,)
        kwargs["data_files"] = {cfg.split.split("[")[0]: str(local)}
    else:
        if (
            ref.startswith(("/", "./", "../", "~")) or local.suffix in DATA_FILE_SUFFIXES
        ) and not local.exists():
            raise PromptsFileError(f"dataset not found: {ref}")
        args = (str(local) if local.exists() else ref,)
        if cfg.config_name:
            kwargs["name"] = cfg.config_name
        if cfg.revision:
            kwargs["revision"] = cfg.revision
    try:
        ds = datasets.load_dataset(*args, **kwargs)
    except Exception as e:  # no network, unknown split/config, malformed files: say which dataset and split
        raise PromptsFileError(f"could not load dataset {ref!r} (split {cfg.split!r}): {e}") from None
    if cfg.column not in ds.column_names:
        raise PromptsFileError(
            f"dataset {ref!r} (split {cfg.split!r}) has no column {cfg.column!r} (columns: {ds.column_names})"
        )
    texts = [_prompt_text(v) for v in ds[cfg.column]]
    bad = next((i for i, t in enumerate(texts) if t is None or not t.strip()), None)
    if bad is not None:
        raise PromptsFileError(
            f"dataset {ref!r} column {cfg.column!r}: empty or non-text prompt at row {bad + 1}"
        )
    if not texts:
        raise PromptsFileError(f"dataset {ref!r} (split {cfg.split!r}) is empty")
    tasks = (
        [t if isinstance(t, str) and t else "general" for t in ds["task_type"]]
        if "task_type" in ds.column_names
        else ["general"] * len(texts)
    )
    frame = pl.DataFrame({"prompt": [t.strip() for t in texts], "task_type": tasks}, schema=_RAW_SCHEMA)
    col = cfg.reference_column
    cells = ds[col] if col in ds.column_names else None
    return _references(frame, f"dataset {ref!r} (split {cfg.split!r})", col, cells)


def describe_source(cfg: DataConfig) -> str:
    """Where the pool comes from, for messages: `data.path <file>`, `data.dataset <id>[<split>]` or `embedded`."""
    if cfg.source == "file":
        return f"data.path {cfg.path}"
    if cfg.source == "hf_dataset":
        return f"data.dataset {cfg.dataset}[{cfg.split}]"
    return "the embedded domain"


def build_pool(cfg: DataConfig, seed: int, task_rules: Sequence[TaskTypeRule] = ()) -> pl.DataFrame:
    """All usable prompts, de-duplicated (case/whitespace-insensitive), with stable content-derived ids.

    `task_rules` (the recipe's `labeling.task_types`, e.g. from an LF pack) tag prompts without a task type.
    A prompt over `cfg.max_prompt_chars` characters fails, naming its row.
    """
    if cfg.source == "embedded":
        raw = domain.make_prompt_pool(cfg.pool_size, seed).select("prompt", "task_type")
    elif cfg.source == "hf_dataset":
        raw = load_hf_dataset(cfg)
    else:
        raw = load_prompts_file(cfg.path or "", cfg.reference_column)
    long = raw.with_row_index("_row").filter(pl.col("prompt").str.len_chars() > cfg.max_prompt_chars)
    if long.height:
        row, n = int(long["_row"][0]) + 1, int(long["prompt"].str.len_chars()[0])
        raise PromptsFileError(
            f"{describe_source(cfg)}: the prompt at row {row} has {n:,} characters, over data.max_prompt_chars "
            f"({cfg.max_prompt_chars:,}); {long.height} prompt(s) that long — shorten or drop them"
        )
    raw = tag_task_types(raw, task_rules)
    norm = pl.col("prompt").str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars()
    pool = raw.with_columns(norm.alias("_norm")).unique("_norm", keep="first", maintain_order=True)
    return pool.select(
        pl.col("prompt").map_elements(_prompt_id, return_dtype=pl.String).alias("prompt_id"),
        "task_type",
        "prompt",
        *([REFERENCE_COLUMN] if REFERENCE_COLUMN in pool.columns else []),
    )


def split_pool(pool: pl.DataFrame, cfg: DataConfig, iterations: int, seed: int) -> dict[str, pl.DataFrame]:
    """`heldout` plus one disjoint shard per iteration (`"1"`..`"K"`), from a seeded shuffle of the pool."""
    need = cfg.heldout_size + cfg.prompts_per_iteration * iterations
    if pool.height < need:
        raise ValueError(
            f"prompt pool from {describe_source(cfg)} has {pool.height} distinct prompts (after removing "
            f"duplicates); {iterations} iterations x {cfg.prompts_per_iteration} + {cfg.heldout_size} held-out "
            f"need {need}"
        )
    shuffled = pool.sample(fraction=1.0, shuffle=True, seed=seed)
    out = {"heldout": shuffled.head(cfg.heldout_size).sort("prompt_id")}
    for i in range(iterations):
        start = cfg.heldout_size + i * cfg.prompts_per_iteration
        out[str(i + 1)] = shuffled.slice(start, cfg.prompts_per_iteration).sort("prompt_id")
    return out


def prompt_pool_problems(
    cfg: DataConfig, iterations: int, seed: int, task_rules: Sequence[TaskTypeRule] = ()
) -> list[str]:
    """What `prompts` would fail on, read now: the file's rows and whether the pool fills every split; [] when
    it would not fail. A hub dataset is not read (that needs the network)."""
    if cfg.source == "hf_dataset" and not Path(cfg.dataset or "").expanduser().exists():
        return []
    if cfg.source == "file" and not Path(cfg.path or "").expanduser().is_file():
        return []  # said by `recipe_input_problems`
    key = {"file": "data.path", "hf_dataset": "data.dataset"}.get(cfg.source, "data")
    try:
        split_pool(build_pool(cfg, seed, task_rules), cfg, iterations, seed)
    except ValueError as e:  # PromptsFileError included
        return [f"{key}: {e}"]
    return []
