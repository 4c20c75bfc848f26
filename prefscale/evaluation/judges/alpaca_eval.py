"""The `alpaca_eval_gpt4_turbo` judge: the official AlpacaEval 2.0 annotator (needs OPENAI_API_KEY)."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from prefscale.evaluation.judges.base import PAIR_COLUMNS, Judge, JudgeContext

OPENAI_KEY_VAR = "OPENAI_API_KEY"


class MissingAPIKeyError(RuntimeError):
    """A judge that needs an API key found none in the environment."""


# ------------------------------------------------------------------------------------ the official AlpacaEval


@contextlib.contextmanager
def _quiet_alpaca_eval() -> Iterator[None]:
    """alpaca_eval sets the root logger to INFO on import and warns loudly; keep the caller's logging as it was."""
    root = logging.getLogger()
    level = root.level
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def require_openai_key() -> None:
    """Raise `MissingAPIKeyError` naming `OPENAI_API_KEY` when it is unset or empty (the value is never shown)."""
    if not os.environ.get(OPENAI_KEY_VAR, "").strip():
        raise MissingAPIKeyError(
            f"the alpaca_eval_gpt4_turbo judge calls the OpenAI API and needs a key in the environment variable "
            f"{OPENAI_KEY_VAR}, which is not set. Export {OPENAI_KEY_VAR} (and OPENAI_BASE_URL for an "
            "OpenAI-compatible server), or remove alpaca_eval_gpt4_turbo from evaluation.judges."
        )


class AlpacaEvalJudge(Judge):
    """The official AlpacaEval judge via `alpaca_eval.annotators.PairwiseAnnotator` (its prompts, its parser).

    `annotator_config` is an alpaca_eval evaluator name (default `weighted_alpaca_eval_gpt4_turbo`: GPT-4 Turbo,
    the preference from the logprobs of the two model identifiers) or a path to a `configs.yaml`. The OpenAI
    client is configured through a client-config file alpaca_eval reads (`client_config_path`) that holds no
    secret: the client takes the key from `OPENAI_API_KEY` itself, and the base URL from `OPENAI_BASE_URL` (or
    alpaca_eval's `OPENAI_API_BASE`). `caching_path` is alpaca_eval's JSON cache of annotations, so a re-run
    does not pay twice (None: no cache).
    """

    name = "alpaca_eval_gpt4_turbo"

    @classmethod
    def preflight(cls) -> None:
        require_openai_key()

    @classmethod
    def from_recipe(cls, ctx: JudgeContext) -> AlpacaEvalJudge:
        judge = cls(ctx.evaluation.annotator_config)
        if ctx.cache_dir:  # alpaca_eval's own JSON cache of annotations: a re-run does not pay twice
            judge.caching_path = ctx.cache_dir / "alpaca_eval" / f"annotations_{judge.annotator}.json"
        return judge

    def __init__(
        self,
        annotator_config: str = "weighted_alpaca_eval_gpt4_turbo",
        *,
        caching_path: str | Path | None = None,
        seed: int = 0,
    ) -> None:
        require_openai_key()  # before any work
        self.annotator_config = annotator_config
        self.caching_path = caching_path
        self.seed = seed

    @property
    def annotator(self) -> str:
        cfg = Path(self.annotator_config)
        return cfg.parent.name if cfg.name == "configs.yaml" else cfg.name

    def _client_config(self, folder: Path) -> Path:
        import yaml

        config: dict[str, Any] = {}
        base = os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_BASE")
        if base:
            config["base_url"] = base
        path = folder / "openai_client_configs.yaml"
        path.write_text(yaml.safe_dump({"default": [config]}))
        return path

    def _judge(self, pairs: pl.DataFrame):
        require_openai_key()
        with _quiet_alpaca_eval():
            from alpaca_eval.annotators import PairwiseAnnotator

        frame = pairs.select(*PAIR_COLUMNS).to_pandas()
        if self.caching_path is not None:
            Path(self.caching_path).parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="prefscale-alpaca-eval-") as tmp, _quiet_alpaca_eval():
            annotator = PairwiseAnnotator(
                annotators_config=self.annotator_config,
                caching_path=str(self.caching_path) if self.caching_path is not None else None,
                seed=self.seed,
            )
            out = annotator.annotate_pairs(frame, client_config_path=str(self._client_config(Path(tmp))))
        found: dict[tuple[str, str, str], float | None] = {}
        for row in out:
            pref = row.get("preference")
            pref = None if pref is None or (isinstance(pref, float) and math.isnan(pref)) else float(pref)
            found[(str(row["instruction"]), str(row["output_1"]), str(row["output_2"]))] = pref
        prefs = [found.get(k) for k in pairs.select(*PAIR_COLUMNS).iter_rows()]
        none = [None] * len(prefs)
        return prefs, none, none
