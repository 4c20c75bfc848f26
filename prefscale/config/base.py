"""What every recipe section shares: strict models (unknown keys are errors) and the recipe error type."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def is_local_path(ref: str | None) -> bool:
    """A model reference that names a local folder (absolute, ./, ../ or ~/), not a hub id like org/name."""
    return bool(ref) and ref.startswith(("/", "./", "../", "~"))


DATA_FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


class RecipeError(ValueError):
    """A recipe that cannot be used, with the file and the offending fields named."""
