"""The labeling-function kinds a recipe may declare (`kind:`): one line each.

Row kinds vote on a row alone (text patterns, `python`, `snorkel`); model-backed kinds need a model context
(`prefscale.labeling.context.LFContext`). A new kind is a declaration class in its own module (a pydantic model
with a `kind` literal, and `fires` for a pattern kind or `scores`/`votes_from_scores` for a model kind) plus one
line here; the recipe schema, the parser and the dbt `lf_summary` accepted values follow from these tuples.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field

from prefscale.labeling.consensus_kind import ConsensusLF
from prefscale.labeling.instruction_kind import InstructionLF
from prefscale.labeling.model_kinds import LLMPromptLF, PerplexityLF, SimilarityLF
from prefscale.labeling.pattern_kinds import (
    FinishLF,
    LengthLF,
    ListFormatLF,
    OrderedLF,
    PythonLF,
    RegexLF,
    RepetitionLF,
    SnorkelLF,
    WordRatioLF,
)
from prefscale.labeling.reference_kind import ReferenceLF
from prefscale.labeling.self_judge_kind import SelfJudgeLF

ROW_KINDS: tuple[type, ...] = (
    RegexLF,
    ListFormatLF,
    OrderedLF,
    WordRatioLF,
    LengthLF,
    RepetitionLF,
    FinishLF,
    InstructionLF,
    PythonLF,
    SnorkelLF,
)
MODEL_KIND_CLASSES: tuple[type, ...] = (
    LLMPromptLF,
    PerplexityLF,
    SimilarityLF,
    ConsensusLF,
    ReferenceLF,
    SelfJudgeLF,
)


def kind_name(cls: type) -> str:
    """The `kind:` a declaration class answers to (its `kind` field's default)."""
    return cls.model_fields["kind"].default  # type: ignore[attr-defined]


LF_KINDS: tuple[str, ...] = tuple(kind_name(c) for c in (*ROW_KINDS, *MODEL_KIND_CLASSES))
MODEL_KINDS: tuple[str, ...] = tuple(kind_name(c) for c in MODEL_KIND_CLASSES)

LabelingFunction: Any = Annotated[Union[ROW_KINDS], Field(discriminator="kind")]  # noqa: UP007
ModelLabelingFunction: Any = Annotated[Union[MODEL_KIND_CLASSES], Field(discriminator="kind")]  # noqa: UP007
# any kind (an LF pack lists both; the ones that need a model get it from the labeling context)
AnyLabelingFunction: Any = Annotated[
    Union[(*ROW_KINDS, *MODEL_KIND_CLASSES)],
    Field(discriminator="kind"),
]
