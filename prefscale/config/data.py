"""The recipe's `data` section: the prompt pool."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from prefscale.config.base import _Strict


class DataConfig(_Strict):
    """The prompt pool: the embedded demo domain, a file of prompts (JSONL, CSV or Parquet), or a dataset loaded
    with `datasets.load_dataset` (a hub id such as `HuggingFaceH4/ultrafeedback_binarized`, or a local folder /
    data file). The pool is de-duplicated, then split into a held-out set and one disjoint shard per iteration.
    """

    source: Literal["embedded", "file", "hf_dataset"] = Field(
        default="embedded",
        description="where prompts come from: embedded (the generated Lumora demo domain), file (`path`) or "
        "hf_dataset (`dataset`, loaded with datasets.load_dataset)",
    )
    path: str | None = Field(
        default=None,
        description="file only: a JSONL, JSON, CSV or Parquet file with a `prompt` column (optionally "
        "`task_type`); relative to the working directory, or to the recipe file's folder when written `./...` "
        "or `../...` (as `prefscale init` writes it)",
    )
    dataset: str | None = Field(
        default=None,
        description="hf_dataset only: a hub id (e.g. HuggingFaceH4/ultrafeedback_binarized), a local dataset "
        "folder or a data file (.jsonl/.json/.csv/.parquet); the `path` of datasets.load_dataset",
    )
    config_name: str | None = Field(
        default=None,
        description="hf_dataset only: the dataset's configuration (subset), the `name` of load_dataset",
    )
    split: str = Field(
        default="train",
        description="hf_dataset only: the split, with optional slicing, e.g. train_prefs or train[:20000]",
    )
    column: str = Field(
        default="prompt",
        description="hf_dataset only: the prompt column: text, or a list of chat messages (the first user turn "
        "is taken)",
    )
    revision: str | None = Field(
        default=None, description="hf_dataset only: the hub revision to load (commit sha, tag or branch)"
    )
    reference_column: str = Field(
        default="reference",
        min_length=1,
        description="file and hf_dataset: the column holding a known good answer per prompt (an SME's reply, "
        "an eval set's reference output), read when the data has it; it feeds `kind: reference` labeling "
        "functions. A name other than the default must exist",
    )
    pool_size: int = Field(
        default=560, ge=4, description="embedded only: prompts generated before de-duplication"
    )
    prompts_per_iteration: int = Field(
        default=150,
        ge=1,
        description="prompts in each iteration's disjoint shard (the prompts candidates are sampled for); the "
        "pool must hold heldout_size + iterations x this distinct prompts",
    )
    max_prompt_chars: int = Field(
        default=32_000,
        ge=1,
        description="the longest prompt accepted, in characters: a longer one fails the load naming its row "
        "(it would not fit a small model's context, and would be cut silently)",
    )
    heldout_size: int = Field(
        default=60,
        ge=1,
        description="prompts held out of training for evaluation (eval_baseline, eval_results, best_of_n)",
    )

    @model_validator(mode="after")
    def _path_given(self) -> DataConfig:
        # Whether the file exists is checked when it is read (and by `recipe_input_problems`), not here: a
        # recipe stays loadable while its prompts file is being replaced.
        if self.source == "file" and not self.path:
            raise ValueError("data.path is required when data.source is 'file'")
        if self.source != "file" and self.path:
            raise ValueError(f"data.path is only used by source 'file', not {self.source!r}")
        if self.source == "hf_dataset":
            if not self.dataset:
                raise ValueError(
                    "data.dataset (a hub id or a local dataset folder/file) is required when data.source is "
                    "'hf_dataset'"
                )
        elif self.dataset:
            raise ValueError(f"data.dataset is only used by source 'hf_dataset', not {self.source!r}")
        if self.source == "embedded" and self.reference_column != "reference":
            raise ValueError(
                "data.reference_column is only used by sources 'file' and 'hf_dataset', not 'embedded'"
            )
        return self
