"""What the annotation tool holds, read in one pass: the ranking project as a gold source, the blind evaluation
project as votes, the SMEs' agreement, and a digest of it all (the sensor's cursor)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import polars as pl

from prefscale.annotation.label_studio import LabelStudio
from prefscale.annotation.pairwise import VOTES_SCHEMA, vote_rows
from prefscale.annotation.ranking import AGREEMENT_SCHEMA, ranking_records
from prefscale.labeling.gold import AnnotationSource

SOURCE_PREFIX = "label-studio:"


@dataclass(frozen=True)
class ToolAnnotations:
    """The annotation tool's content, converted: `ranking` feeds `load_annotations` with the files; `votes` are
    the `sme` judge's; `vote_problems` are (task id, message)s of malformed votes."""

    ranking: AnnotationSource
    votes: pl.DataFrame  # pairwise.VOTES_SCHEMA
    vote_problems: list[tuple[int, str]]
    agreement: pl.DataFrame  # ranking.AGREEMENT_SCHEMA
    evaluation_source: str


def _project_id(client: LabelStudio, title: str) -> int | None:
    return next((int(p["id"]) for p in client.projects() if p.get("title") == title), None)


def _tasks(client: LabelStudio, title: str) -> list[dict[str, Any]]:
    pid = _project_id(client, title)
    return [] if pid is None else list(client.tasks(pid))


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def collect(client: LabelStudio, ranking_project: str, evaluation_project: str) -> ToolAnnotations:
    """Read both projects (a missing project is empty) and convert their annotations."""
    users = client.users()
    ranked = _tasks(client, ranking_project)
    records, problems, agreement = ranking_records(ranked, users)
    source = AnnotationSource(
        SOURCE_PREFIX + ranking_project, records, problems, _sha([r for _, r in records]), unit="task"
    )
    votes, vote_problems = vote_rows(_tasks(client, evaluation_project), users)
    return ToolAnnotations(
        ranking=source,
        votes=votes,
        vote_problems=vote_problems,
        agreement=agreement,
        evaluation_source=SOURCE_PREFIX + evaluation_project,
    )


def tool_state(client: LabelStudio, projects: list[str]) -> str:
    """A digest of every annotation in `projects` (id and last update): it changes when an SME submits, edits,
    skips or deletes an annotation."""
    state = []
    for title in projects:
        for t in _tasks(client, title):
            for a in t.get("annotations") or []:
                state.append((title, t["id"], a["id"], a.get("updated_at"), bool(a.get("was_cancelled"))))
    return _sha(sorted(state))


def empty_votes() -> pl.DataFrame:
    """The votes table before any SME voted."""
    return pl.DataFrame(schema=VOTES_SCHEMA)


def empty_agreement() -> pl.DataFrame:
    """The agreement table before two SMEs ranked one prompt."""
    return pl.DataFrame(schema=AGREEMENT_SCHEMA)
