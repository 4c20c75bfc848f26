"""Votes (HIGH, LOW, ABSTAIN) and what every labeling function declaration has."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # pragma: no cover
    pass

ABSTAIN, LOW, HIGH = -1, 0, 1
VOTE_DTYPE = pl.Int8
_VOTES = (ABSTAIN, LOW, HIGH)


class LabelingFunctionError(ValueError):
    """A labeling function that failed (raised, or voted outside HIGH/LOW/ABSTAIN), with the first bad row."""

    def __init__(self, message: str, lf_name: str, row: int | None = None, candidate_id: Any = None) -> None:
        super().__init__(message)
        self.lf_name, self.row, self.candidate_id = lf_name, row, candidate_id


def definition_version(declaration: BaseModel) -> str:
    """A declaration's version: the first 12 hex digits of the sha256 of its definition (canonical JSON)."""
    blob = json.dumps(declaration.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


class _LFCommon(BaseModel):
    """What every labeling function has: a name, a description (shown in the UI), an optional task-type scope,
    and a version that is the hash of its definition."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        pattern=r"^[a-z][a-z0-9_]*$",
        description="unique identifier, snake_case: the label matrix column and the name in the LF catalog",
    )
    description: str = Field(
        default="", description="what the function checks, in the SMEs' words (shown in the UI and catalog)"
    )
    task_types: tuple[str, ...] | None = Field(
        default=None,
        description="only vote on rows of these task types (abstain elsewhere); null: every row",
    )

    @property
    def version(self) -> str:
        """Hash of the definition: changes whenever the function's behaviour can."""
        return definition_version(self)

    @property
    def vote_label(self) -> str:
        """The votes this function can cast, for the catalog: `high`, `low` or `high|low`."""
        return "high|low"

    def in_scope(self, row: Mapping[str, Any]) -> bool:
        if not self.task_types:
            return True
        task = row["task_type"]
        return isinstance(task, str) and task in self.task_types


def _valid_vote(value: Any) -> bool:
    """HIGH, LOW or ABSTAIN as an int (numpy ints too; not a bool, a float or a string)."""
    return (
        isinstance(value, int | np.integer)
        and not isinstance(value, bool | np.bool_)
        and int(value) in _VOTES
    )


def validate_lfs(lfs: Sequence[Any]) -> None:
    """Reject an empty set or duplicate names."""
    if not lfs:
        raise ValueError("at least one labeling function is required")
    names = [lf.name for lf in lfs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate labeling function names: {dupes}")
