"""`prefscale export`: the published pairs and the curated SFT subset as datasets in the field's formats.

The pairs export has the columns and splits of the seed dataset (snorkelai/Snorkel-Mistral-PairRM-DPO-Dataset,
the same columns as HuggingFaceH4/ultrafeedback_binarized, which alignment-handbook's DPO recipe reads):
`prompt_id`, `prompt` (the user turn's text), `chosen` and `rejected` (the whole conversation: the user turn,
then the assistant reply), `messages` (= `chosen`), `score_chosen`, `score_rejected` (the pair's raw rewards),
in splits `train_iteration_{i}` and, from a held-out share of each iteration's prompts, `test_iteration_{i}`.
The SFT export has `prompt_id`, `prompt`, `messages` and `score` (the reward) in the same splits.

The held-out share is chosen by prompt: the prompts are ordered by the sha256 of their `prompt_id` and the first
`round(test_share * n)` (at least one when `test_share > 0` and the iteration has two prompts or more, never
all of them) are held out, so the same artifact always splits the same way, whatever its row order.

A recipe's system message (`policy.system_prompt`) is dropped unless `keep_system` is set, so that `chosen[0]`
is the user turn as in the seed dataset; it stays recorded in `prefscale_export.json` (the source manifests'
params). That file, written beside the data (and uploaded with a Hub push), names each source artifact's
version and sha256 so the export can be traced back to the run that made it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from prefscale.storage import CURRENT, ArtifactRef, ArtifactStore, MissingArtifactError

FORMATS: tuple[str, ...] = ("hf", "parquet", "jsonl")
KINDS: dict[str, str] = {"pairs": "preference_pairs", "sft": "curated_sft"}
EXPORT_RECORD = "prefscale_export.json"
DEFAULT_TEST_SHARE = 0.1
TRAIN_SPLIT, TEST_SPLIT = "train_iteration_{i}", "test_iteration_{i}"

_MESSAGE = pl.Struct({"content": pl.String, "role": pl.String})  # the seed's field order
PAIR_COLUMNS: dict[str, pl.DataType] = {
    "prompt_id": pl.String(),
    "prompt": pl.String(),
    "chosen": pl.List(_MESSAGE),
    "rejected": pl.List(_MESSAGE),
    "messages": pl.List(_MESSAGE),
    "score_chosen": pl.Float64(),
    "score_rejected": pl.Float64(),
}
SFT_COLUMNS: dict[str, pl.DataType] = {
    "prompt_id": pl.String(),
    "prompt": pl.String(),
    "messages": pl.List(_MESSAGE),
    "score": pl.Float64(),
}


class ExportError(ValueError):
    """An export that cannot start: no home, nothing materialized, an unknown iteration, a bad --out."""


class HubPushError(RuntimeError):
    """The Hub refused or could not be reached; nothing was written locally."""


@dataclass
class ExportResult:
    """What `export` wrote: the folder (None for a push only), the rows per split and the provenance record."""

    out: Path | None
    splits: dict[str, int]
    record: dict[str, Any] = field(default_factory=dict)
    pushed_to: str | None = None


def materialized_iterations(store: ArtifactStore, asset: str) -> list[int]:
    """The iterations whose `asset` partition has a current version, in order."""
    slot = store.root / asset
    if not slot.is_dir():
        return []
    found = []
    for p in slot.iterdir():
        if p.name.isdigit() and (p / CURRENT).is_symlink() and (p / CURRENT).resolve().is_dir():
            found.append(int(p.name))
    return sorted(found)


def held_out_prompt_ids(prompt_ids: Sequence[str], share: float) -> set[str]:
    """The prompt ids of the test split: the first `round(share * n)` of the distinct ids by sha256, at least one
    when `share > 0` and there are two or more, never all of them (see the module docstring)."""
    if not 0 <= share < 1:
        raise ExportError(f"--test-share must be in [0, 1), got {share}")
    ids = sorted(set(prompt_ids), key=lambda p: (hashlib.sha256(p.encode()).hexdigest(), p))
    if share == 0 or len(ids) < 2:
        return set()
    n_test = min(len(ids) - 1, max(1, math.floor(share * len(ids) + 0.5)))
    return set(ids[:n_test])


def _rebuild(messages: pl.Expr, keep_system: bool) -> pl.Expr:
    """Messages as {content, role} structs (the seed's field order), without the system turn unless kept."""
    rebuilt = messages.list.eval(
        pl.struct(pl.element().struct.field("content"), pl.element().struct.field("role"))
    )
    if keep_system:
        return rebuilt
    return rebuilt.list.eval(pl.element().filter(pl.element().struct.field("role") != "system"))


def _user_text(messages: pl.Expr) -> pl.Expr:
    """The text of the last user turn of a message list."""
    return (
        messages.list.eval(pl.element().filter(pl.element().struct.field("role") == "user"))
        .list.last()
        .struct.field("content")
    )


def pairs_rows(pairs: pl.DataFrame, *, keep_system: bool = False) -> pl.DataFrame:
    """A `preference_pairs` frame (TRL's prompt/chosen/rejected messages) in the seed dataset's columns."""
    prompt = _rebuild(pl.col("prompt"), keep_system)
    chosen = pl.concat_list(prompt, _rebuild(pl.col("chosen"), True))
    rejected = pl.concat_list(prompt, _rebuild(pl.col("rejected"), True))
    return pairs.select(
        "prompt_id",
        _user_text(pl.col("prompt")).alias("prompt"),
        chosen.alias("chosen"),
        rejected.alias("rejected"),
        chosen.alias("messages"),
        pl.col("chosen_reward").alias("score_chosen"),
        pl.col("rejected_reward").alias("score_rejected"),
    ).cast(PAIR_COLUMNS)


def sft_rows(sft: pl.DataFrame, *, keep_system: bool = False) -> pl.DataFrame:
    """A `curated_sft` frame in the columns of an SFT dataset: prompt_id, prompt, messages, score."""
    return sft.select(
        "prompt_id",
        _user_text(pl.col("messages")).alias("prompt"),
        _rebuild(pl.col("messages"), keep_system).alias("messages"),
        pl.col("reward").alias("score"),
    ).cast(SFT_COLUMNS)


def _features(columns: dict[str, pl.DataType]) -> Any:
    import datasets

    message = [{"content": datasets.Value("string"), "role": datasets.Value("string")}]
    kinds = {pl.String: datasets.Value("string"), pl.Float64: datasets.Value("float64")}
    return datasets.Features(
        {name: message if isinstance(dt, pl.List) else kinds[type(dt)] for name, dt in columns.items()}
    )


def _check_out(out: Path | None, overwrite: bool) -> None:
    if out is None:
        return
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"--out {out} exists and is not empty: pass --overwrite or choose another folder")


def _sources(
    store: ArtifactStore, kind: str, iterations: Sequence[int] | None
) -> list[tuple[int, ArtifactRef]]:
    """(iteration, current version) of the kind's artifact for each requested iteration (default: all)."""
    if kind not in KINDS:
        raise ExportError(f"unknown export {kind!r}: choose one of {', '.join(KINDS)}")
    asset = KINDS[kind]
    if not store.root.is_dir():
        raise ExportError(
            f"no PREFSCALE_HOME at {store.home} (no artifacts folder): run `make run` first or pass --home"
        )
    have = materialized_iterations(store, asset)
    if not have:
        raise ExportError(f"no {asset} materialized under {store.root}: materialize {asset} first (make run)")
    wanted = sorted(set(iterations)) if iterations else have
    unknown = [i for i in wanted if i not in have]
    if unknown:
        raise ExportError(
            f"iteration {', '.join(map(str, unknown))} has no {asset} "
            f"(materialized: {', '.join(map(str, have))})"
        )
    refs = []
    for i in wanted:
        try:
            ref = store.current(asset, str(i))
        except MissingArtifactError as e:  # removed since the listing
            raise ExportError(str(e)) from None
        problems = store.verify(ref)
        if problems:
            raise ExportError(f"{asset}[{i}]@{ref.version} fails verification: {'; '.join(problems)}")
        refs.append((i, ref))
    return refs


def build_splits(
    store: ArtifactStore,
    kind: str,
    iterations: Sequence[int] | None = None,
    *,
    test_share: float = DEFAULT_TEST_SHARE,
    keep_system: bool = False,
) -> tuple[dict[str, pl.DataFrame], dict[str, Any]]:
    """The export's splits as frames (`train_iteration_{i}`, `test_iteration_{i}`) and its provenance record;
    `ExportError` naming what is missing."""
    if not 0 <= test_share < 1:
        raise ExportError(f"--test-share must be in [0, 1), got {test_share}")
    to_rows = pairs_rows if kind == "pairs" else sft_rows
    splits: dict[str, pl.DataFrame] = {}
    sources = []
    for i, ref in _sources(store, kind, iterations):
        rows = to_rows(pl.read_parquet(ref.file("data.parquet")), keep_system=keep_system)
        test_ids = held_out_prompt_ids(rows["prompt_id"].to_list(), test_share)
        is_test = pl.col("prompt_id").is_in(sorted(test_ids))
        splits[TRAIN_SPLIT.format(i=i)] = rows.filter(~is_test)
        if test_share > 0:
            splits[TEST_SPLIT.format(i=i)] = rows.filter(is_test)
        manifest = store.manifest(ref)
        sources.append(
            {
                "iteration": i,
                "asset": ref.asset,
                "partition": ref.partition,
                "version": ref.version,
                "sha256": ref.digest,
                "rows": rows.height,
                "params": manifest.get("params", {}),
                "inputs": manifest.get("inputs", []),
            }
        )
    record = {
        "kind": kind,
        "sources": sources,
        "splits": {name: df.height for name, df in splits.items()},
        "columns": list(PAIR_COLUMNS if kind == "pairs" else SFT_COLUMNS),
        "test_share": test_share,
        "test_rule": "per iteration, the first round(test_share * n) prompt ids by sha256 (at least 1, never all)",
        "keep_system": keep_system,
    }
    return splits, record


def dataset_dict(splits: dict[str, pl.DataFrame], record: dict[str, Any]) -> Any:
    """The splits as a `datasets.DatasetDict` whose info names the source versions."""
    import datasets

    features = _features(PAIR_COLUMNS if record["kind"] == "pairs" else SFT_COLUMNS)
    description = f"prefscale export of {KINDS[record['kind']]}: " + ", ".join(
        f"iteration {s['iteration']} version {s['version']} (sha256 {s['sha256']})" for s in record["sources"]
    )
    return datasets.DatasetDict(
        {
            name: datasets.Dataset(
                df.to_arrow().cast(features.arrow_schema),
                info=datasets.DatasetInfo(description=description, features=features),
                split=datasets.NamedSplit(name),
            )
            for name, df in splits.items()
        }
    )


def _write(folder: Path, fmt: str, splits: dict[str, pl.DataFrame], dd: Any, record: dict[str, Any]) -> None:
    import datasets

    quiet = datasets.is_progress_bar_enabled()
    if quiet:  # one line per split is what the command prints; datasets' bars are noise here
        datasets.disable_progress_bars()
    try:
        if fmt == "hf":
            dd.save_to_disk(str(folder))
        elif fmt == "parquet":
            for name, ds in dd.items():
                ds.to_parquet(str(folder / f"{name}.parquet"))
    finally:
        if quiet:
            datasets.enable_progress_bars()
    if fmt == "jsonl":
        for name, df in splits.items():
            df.write_ndjson(folder / f"{name}.jsonl")
    (folder / EXPORT_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")


def _hub_offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    import huggingface_hub.constants

    return bool(huggingface_hub.constants.HF_HUB_OFFLINE)


def _push(dd: Any, record: dict[str, Any], repo: str, private: bool) -> None:
    if _hub_offline():
        raise HubPushError(
            f"cannot push to the Hub repo {repo!r}: HF_HUB_OFFLINE is set; nothing was written"
        )
    try:
        from huggingface_hub import HfApi

        versions = ", ".join(f"{s['iteration']}@{s['version']}" for s in record["sources"])
        dd.push_to_hub(
            repo, private=private, commit_message=f"prefscale export {record['kind']} ({versions})"
        )
        HfApi().upload_file(
            path_or_fileobj=(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n").encode(),
            path_in_repo=EXPORT_RECORD,
            repo_id=repo,
            repo_type="dataset",
        )
    except Exception as e:  # the Hub's errors are many (network, auth, repo name); all mean "not pushed"
        raise HubPushError(
            f"could not push to the Hub repo {repo!r}: {type(e).__name__}: {e}; nothing was written locally"
        ) from e


def export(
    home: Path | str,
    kind: str,
    out: Path | str | None,
    *,
    iterations: Sequence[int] | None = None,
    fmt: str = "hf",
    test_share: float = DEFAULT_TEST_SHARE,
    keep_system: bool = False,
    overwrite: bool = False,
    push_to_hub: str | None = None,
    private: bool = False,
) -> ExportResult:
    """Export `kind` ("pairs" or "sft") from the store at `home` into `out` in `fmt`, and/or push it to the Hub.

    Everything is written into a temporary folder next to `out` and renamed into place at the end (after the
    push, when one is asked), so a failed export leaves neither a partial folder nor a changed `out`.
    `ExportError` for bad inputs (nothing written), `HubPushError` when the push fails (nothing written locally).
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown --format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if out is None and push_to_hub is None:
        raise ExportError("give --out DIR or --push-to-hub REPO")
    out_path = Path(out).expanduser().resolve() if out is not None else None
    _check_out(out_path, overwrite)
    store = ArtifactStore(home)
    splits, record = build_splits(store, kind, iterations, test_share=test_share, keep_system=keep_system)
    record["format"] = fmt
    dd = dataset_dict(splits, record)
    result = ExportResult(out=out_path, splits=record["splits"], record=record, pushed_to=push_to_hub)
    if out_path is None:
        _push(dd, record, push_to_hub or "", private)
        return result
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.tmp-", dir=out_path.parent))
    try:
        _write(tmp, fmt, splits, dd, record)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        if push_to_hub:
            _push(dd, record, push_to_hub, private)
        _replace(tmp, out_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def _replace(tmp: Path, out: Path) -> None:
    """Rename `tmp` to `out`; an existing `out` (empty, or replaced with --overwrite) is moved aside first and
    removed only once the new folder is in place."""
    if not out.exists():
        os.rename(tmp, out)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rename(out, aside / "old")
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(aside / "old", out)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)
