"""Task types from prompt rules: the first rule whose regex matches the prompt wins."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:  # pragma: no cover
    pass

DEFAULT_TASK_TYPE = "general"


class TaskTypeRule(BaseModel):
    """A prompt rule that assigns a task type: the first rule whose regex matches the prompt wins."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        pattern=r"^[a-z][a-z0-9_]*$", description="the task type assigned (snake_case), e.g. coding"
    )
    pattern: str = Field(description="a regex searched in the prompt, case-insensitive (Python `re`)")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"invalid regex {v!r}: {e}") from e
        return v


def task_type_of(prompts: Sequence[str], rules: Sequence[TaskTypeRule]) -> list[str]:
    """Each prompt's task type: the first rule whose pattern matches (case-insensitive), else `general`."""
    compiled = [(r.name, re.compile(r.pattern, re.IGNORECASE)) for r in rules]
    return [next((name for name, rx in compiled if rx.search(p)), DEFAULT_TASK_TYPE) for p in prompts]


def tag_task_types(prompts: pl.DataFrame, rules: Sequence[TaskTypeRule]) -> pl.DataFrame:
    """`prompts` with `task_type` set by `rules` where it is missing (null, empty or `general`).

    A task type the data already carries is kept; with no rules the frame is returned unchanged.
    """
    if not rules or prompts.height == 0:
        return prompts
    tagged = pl.Series("_tagged", task_type_of(prompts["prompt"].to_list(), rules), dtype=pl.String)
    current = pl.col("task_type").cast(pl.String) if "task_type" in prompts.columns else pl.lit(None)
    missing = current.is_null() | current.is_in(["", DEFAULT_TASK_TYPE])
    return (
        prompts.with_columns(tagged)
        .with_columns(pl.when(missing).then(pl.col("_tagged")).otherwise(current).alias("task_type"))
        .drop("_tagged")
    )
