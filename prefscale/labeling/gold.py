"""SME gold: annotation files that subject-matter experts drop into `PREFSCALE_HOME/annotations/`.

Two record shapes, in JSON Lines (`.jsonl`) or CSV (`.csv`, with a header row):

* a label per response: `candidate_id`, `label` (`high` / `low`, or 1 / 0);
* a ranking of one prompt's candidates, best first: `prompt_id`, `ranking` (a JSON array of candidate ids; in
  CSV also `a > b > c`, `a|b|c` or `a;b;c`).

Optional fields: `annotator`, `note`; a ranking may also carry `high` and `low`, lists of its candidate ids the
SME marked acceptable or unacceptable. A ranking of n candidates labels its first ⌊n/2⌋ high and its last ⌊n/2⌋
low (the middle one of an odd ranking stays unlabelled); an explicit `high` / `low` mark overrides that. Gold is per candidate: a candidate may get one label
across all files (a label row, or its place in a ranking), and a prompt may be ranked once.

Every file is validated whole: malformed rows, unknown fields, bad labels, unknown or mismatched ids and
duplicates are reported by line, and a file with any problem is rejected entirely (`AnnotationsRejected`).
Records from an annotation tool (`AnnotationSource`, e.g. Label Studio's rankings) go through the same checks,
their problems named by task id instead of line.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from prefscale.artifacts import CANDIDATES, SME_ANNOTATIONS
from prefscale.jsonl import parse_object_line
from prefscale.labeling.votes import HIGH, LOW
from prefscale.storage import UNPARTITIONED, ArtifactRef, ArtifactStore, MissingArtifactError, file_sha256

ANNOTATIONS_DIR = "annotations"
SUFFIXES = (".jsonl", ".csv")
_LABELS = {"high": HIGH, "low": LOW, "1": HIGH, "0": LOW}
_OPTIONAL = {"annotator", "note"}
_RANKING_MARKS = ("high", "low")
_SPLIT = re.compile(r"\s*(?:>|\||;)\s*")

GOLD_SCHEMA = {
    "candidate_id": pl.String,
    "prompt_id": pl.String,
    "iteration": pl.String,
    "label": pl.Int8,
    "source": pl.String,  # label | ranking
    "rank": pl.Int32,  # place in the ranking (1 = best), null for a label row
    "annotator": pl.String,
    "file": pl.String,
    "line": pl.Int32,
    "candidates_version": pl.String,  # the candidates artifact version the id was checked against
}
RANKING_SCHEMA = {
    "prompt_id": pl.String,
    "iteration": pl.String,
    "ranking": pl.List(pl.String),
    "annotator": pl.String,
    "note": pl.String,  # the SME's reason, when given
    "file": pl.String,
    "line": pl.Int32,
}
FILES_SCHEMA = {"file": pl.String, "sha256": pl.String, "records": pl.Int32, "gold_labels": pl.Int32}


@dataclass(frozen=True)
class AnnotationSource:
    """Records from one place: a file (`unit` line) or an annotation tool's project (`unit` task)."""

    name: str
    records: list[tuple[int, dict[str, Any]]]
    problems: list[tuple[int, str]]
    sha256: str
    unit: str = "line"


class AnnotationsRejected(ValueError):
    """One or more annotation sources with problems; `problems` maps each source's name to its (line or task
    id, message)s, `units` to "line" or "task"."""

    def __init__(
        self, problems: Mapping[str, list[tuple[int, str]]], units: Mapping[str, str] | None = None
    ) -> None:
        self.problems = dict(problems)
        self.units = {name: (units or {}).get(name, "line") for name in self.problems}
        parts = []
        for name, lines in self.problems.items():
            unit = self.units[name]
            shown = "\n".join(f"  {unit} {n}: {msg}" if n else f"  {msg}" for n, msg in lines[:50])
            more = f"\n  … and {len(lines) - 50} more" if len(lines) > 50 else ""
            parts.append(
                f"{name}: rejected, nothing from it was used ({len(lines)} problem(s)):\n{shown}{more}"
            )
        super().__init__("\n".join(parts))


@dataclass(frozen=True)
class Annotations:
    gold: pl.DataFrame  # GOLD_SCHEMA
    rankings: pl.DataFrame  # RANKING_SCHEMA
    files: pl.DataFrame  # FILES_SCHEMA

    def for_iteration(self, iteration: str) -> pl.DataFrame:
        return self.gold.filter(pl.col("iteration") == iteration)


def annotation_files(folder: Path) -> list[Path]:
    """The annotation files in `folder` (hidden and other files ignored), by name."""
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix in SUFFIXES and not p.name.startswith((".", "~"))
    )


def file_digests(folder: Path) -> dict[str, str]:
    """name → sha256 of each annotation file (the sensor's cursor)."""
    return {p.name: file_sha256(p) for p in annotation_files(folder)}


def _records(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, str]]]:
    """(line, record) pairs and the lines that are not records at all."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        return [], [(0, f"not UTF-8 text ({e})")]
    records, problems = [], []
    if path.suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            obj, problem = parse_object_line(line)
            if problem:
                problems.append((n, problem))
                continue
            records.append((n, obj))
    else:
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            return [], [(1, "no header row")]
        header = [h.strip() for h in header]
        for row in reader:
            n = reader.line_num
            if not any(c.strip() for c in row):
                continue
            if len(row) != len(header):
                problems.append((n, f"{len(row)} fields, the header has {len(header)}"))
                continue
            records.append((n, {h: (c.strip() or None) for h, c in zip(header, row, strict=True)}))
    if not records and not problems:
        problems.append((0, "no annotations in the file"))
    return records, problems


def _ranking(value: Any) -> list[Any] | None:
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("["):
            try:
                parsed = json.loads(s)
            except json.JSONDecodeError:
                return None
            return parsed if isinstance(parsed, list) else None
        return [p for p in _SPLIT.split(s) if p]
    return None


def _text_field(rec: Mapping[str, Any], key: str) -> str | None:
    v = rec.get(key)
    return v.strip() if isinstance(v, str) and v.strip() else None


def file_source(path: Path) -> AnnotationSource:
    """One annotation file's records."""
    records, problems = _records(path)
    return AnnotationSource(path.name, records, problems, file_sha256(path))


def load_annotations(
    folder: Path,
    candidates: pl.DataFrame,
    candidates_versions: Mapping[str, str] | None = None,
    extra: Sequence[AnnotationSource] = (),
) -> Annotations:
    """Parse and validate every annotation file in `folder`, then the `extra` sources (an annotation tool's),
    against `candidates` (`candidate_id`, `prompt_id`, `iteration`). Raises `AnnotationsRejected` naming each bad
    source and line or task; returns the gold otherwise."""
    by_id = {
        c: (p, it)
        for c, p, it in zip(
            candidates["candidate_id"], candidates["prompt_id"], candidates["iteration"], strict=True
        )
    }
    prompts: dict[str, tuple[str, set[str]]] = {}
    for c, (p, it) in by_id.items():
        prompts.setdefault(p, (it, set()))[1].add(c)
    versions = dict(candidates_versions or {})
    gold_rows: list[dict[str, Any]] = []
    ranking_rows: list[dict[str, Any]] = []
    file_rows: list[dict[str, Any]] = []
    labelled: dict[str, str] = {}  # candidate id -> "file line n" (accepted files)
    ranked: dict[str, str] = {}  # prompt id -> "file line n"
    rejected: dict[str, list[tuple[int, str]]] = {}
    units: dict[str, str] = {}

    for source in [*map(file_source, annotation_files(folder)), *extra]:
        records, problems = source.records, list(source.problems)
        f_gold: list[dict[str, Any]] = []
        f_rank: list[dict[str, Any]] = []
        seen_c: dict[str, int] = {}
        seen_p: dict[str, int] = {}

        def claim(
            cid: str,
            n: int,
            problems: list[tuple[int, str]] = problems,
            seen_c: dict = seen_c,
            unit: str = source.unit,
        ) -> bool:
            if cid in seen_c:
                problems.append(
                    (n, f"duplicate: candidate {cid!r} already annotated on {unit} {seen_c[cid]}")
                )
                return False
            if cid in labelled:
                problems.append((n, f"duplicate: candidate {cid!r} already annotated in {labelled[cid]}"))
                return False
            seen_c[cid] = n
            return True

        for n, rec in records:
            keys = set(rec)
            is_label, is_rank = (
                "candidate_id" in keys or "label" in keys,
                "ranking" in keys or "prompt_id" in keys,
            )
            if is_label and is_rank:
                problems.append(
                    (n, "a record is either a label (candidate_id, label) or a ranking, not both")
                )
                continue
            expected = {"candidate_id", "label"} if is_label else {"prompt_id", "ranking"}
            if not (is_label or is_rank):
                problems.append(
                    (n, f"expected candidate_id + label or prompt_id + ranking, got {sorted(keys)}")
                )
                continue
            unexpected = keys - expected - _OPTIONAL - (set(_RANKING_MARKS) if is_rank else set())
            if unexpected:
                problems.append((n, f"unexpected field(s) {sorted(unexpected)}"))
                continue
            missing = sorted(k for k in expected if rec.get(k) in (None, ""))
            if missing:
                problems.append((n, f"missing {', '.join(missing)}"))
                continue
            annotator = _text_field(rec, "annotator")
            if is_label:
                cid = rec["candidate_id"]
                raw = rec["label"]
                if not isinstance(cid, str):
                    problems.append((n, f"candidate_id must be text, got {cid!r}"))
                    continue
                key = (
                    str(raw).strip().lower()
                    if isinstance(raw, str | int) and not isinstance(raw, bool)
                    else None
                )
                if key not in _LABELS:
                    problems.append((n, f"label must be high or low (or 1 / 0), got {raw!r}"))
                    continue
                if cid not in by_id:
                    problems.append((n, f"unknown candidate_id {cid!r}"))
                    continue
                if not claim(cid, n):
                    continue
                p, it = by_id[cid]
                f_gold.append(
                    {
                        "candidate_id": cid,
                        "prompt_id": p,
                        "iteration": it,
                        "label": _LABELS[key],
                        "source": "label",
                        "rank": None,
                        "annotator": annotator,
                        "file": source.name,
                        "line": n,
                        "candidates_version": versions.get(it),
                    }
                )
                continue
            pid, order = rec["prompt_id"], _ranking(rec["ranking"])
            if not isinstance(pid, str):
                problems.append((n, f"prompt_id must be text, got {pid!r}"))
                continue
            if order is None or not all(isinstance(c, str) and c for c in order):
                problems.append((n, f"ranking must be a list of candidate ids, got {rec['ranking']!r}"))
                continue
            if pid not in prompts:
                problems.append((n, f"unknown prompt_id {pid!r}"))
                continue
            if len(order) < 2:
                problems.append((n, "a ranking needs at least two candidates"))
                continue
            if len(set(order)) != len(order):
                dupes = sorted({c for c in order if order.count(c) > 1})
                problems.append((n, f"duplicate: ranking lists {dupes} more than once"))
                continue
            it, members = prompts[pid]
            unknown = [c for c in order if c not in by_id]
            if unknown:
                problems.append((n, f"unknown candidate_id(s) {unknown}"))
                continue
            foreign = [c for c in order if c not in members]
            if foreign:
                problems.append((n, f"candidate(s) {foreign} are not candidates of prompt {pid!r}"))
                continue
            if pid in seen_p or pid in ranked:
                where = f"{source.unit} {seen_p[pid]}" if pid in seen_p else ranked[pid]
                problems.append((n, f"duplicate: prompt {pid!r} already ranked on {where}"))
                continue
            marks = {m: _ranking(rec.get(m)) if rec.get(m) not in (None, "") else [] for m in _RANKING_MARKS}
            bad_marks = [m for m, v in marks.items() if v is None or not set(v) <= set(order)]
            if bad_marks:
                problems.append((n, f"{bad_marks} must list candidate ids of the ranking"))
                continue
            both = sorted(set(marks["high"]) & set(marks["low"]))
            if both:
                problems.append((n, f"candidate(s) {both} are marked both high and low"))
                continue
            seen_p[pid] = n
            half = len(order) // 2
            ok = True
            for place, cid in enumerate(order, 1):
                label = HIGH if place <= half else LOW if place > len(order) - half else None
                label = HIGH if cid in marks["high"] else LOW if cid in marks["low"] else label
                if label is None:
                    continue
                if not claim(cid, n):
                    ok = False
                    continue
                f_gold.append(
                    {
                        "candidate_id": cid,
                        "prompt_id": pid,
                        "iteration": it,
                        "label": label,
                        "source": "ranking",
                        "rank": place,
                        "annotator": annotator,
                        "file": source.name,
                        "line": n,
                        "candidates_version": versions.get(it),
                    }
                )
            if ok:
                f_rank.append(
                    {"prompt_id": pid, "iteration": it, "ranking": order, "annotator": annotator}
                    | {"note": _text_field(rec, "note")}
                    | {"file": source.name, "line": n}
                )
        if problems:
            rejected[source.name] = sorted(problems, key=lambda x: x[0])
            units[source.name] = source.unit
            continue
        for g in f_gold:
            labelled[g["candidate_id"]] = f"{source.name} {source.unit} {g['line']}"
        for rk in f_rank:
            ranked[rk["prompt_id"]] = f"{source.name} {source.unit} {rk['line']}"
        gold_rows += f_gold
        ranking_rows += f_rank
        file_rows.append(
            {
                "file": source.name,
                "sha256": source.sha256,
                "records": len(records),
                "gold_labels": len(f_gold),
            }
        )
    if rejected:
        raise AnnotationsRejected(rejected, units)
    return Annotations(
        gold=pl.DataFrame(gold_rows, schema=GOLD_SCHEMA),
        rankings=pl.DataFrame(ranking_rows, schema=RANKING_SCHEMA),
        files=pl.DataFrame(file_rows, schema=FILES_SCHEMA),
    )


def changed_iterations(old: pl.DataFrame | None, new: pl.DataFrame) -> list[str]:
    """Iterations whose gold (candidate id → label) differs between two gold tables."""

    def by_iteration(df: pl.DataFrame | None) -> dict[str, set[tuple[str, int]]]:
        out: dict[str, set[tuple[str, int]]] = {}
        if df is None:
            return out
        for c, it, lab in zip(df["candidate_id"], df["iteration"], df["label"], strict=True):
            out.setdefault(it, set()).add((c, int(lab)))
        return out

    a, b = by_iteration(old), by_iteration(new)
    return sorted((k for k in set(a) | set(b) if a.get(k) != b.get(k)), key=lambda k: (len(k), k))


def iteration_gold(
    store: ArtifactStore, iteration: int
) -> tuple[pl.DataFrame | None, ArtifactRef | None, int]:
    """The SME gold of one iteration (candidate_id, label) that still matches its current candidates, the
    `sme_annotations` version it came from, and how many gold rows are stale (the candidates were re-sampled
    since they were annotated)."""
    try:
        ref = store.current(SME_ANNOTATIONS, UNPARTITIONED)
    except MissingArtifactError:
        return None, None, 0
    gold = pl.read_parquet(ref.file()).filter(pl.col("iteration") == str(iteration))
    if gold.height == 0:
        return None, ref, 0
    try:
        current = store.current(CANDIDATES, str(iteration)).version
    except MissingArtifactError:
        return None, ref, gold.height
    fresh = gold.filter(pl.col("candidates_version") == current)
    return (fresh.select("candidate_id", "label") if fresh.height else None), ref, gold.height - fresh.height
