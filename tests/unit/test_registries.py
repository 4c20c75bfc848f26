"""Registries: every entry resolves, and the recipe schema and the dbt accepted values are the registries' names.

Adding an extension is one module plus one registration line: these tests register a new entry the way a
contributor would (a module-level function or class here, one `Registry` line) and check that the real code path
dispatches to it.
"""

from __future__ import annotations

import typing
from pathlib import Path

import polars as pl
import pytest
import yaml

from prefscale.config.evaluation import EvaluationConfig
from prefscale.config.generation import GenerationConfig
from prefscale.config.pairs import PairsConfig
from prefscale.config.recipe import Recipe
from prefscale.evaluation.judges import registry as judges_registry
from prefscale.evaluation.judges.base import Judge, JudgeContext
from prefscale.generation import registry as generation_registry
from prefscale.generation.base import GenerationInfo
from prefscale.labeling.registry import LF_KINDS, MODEL_KIND_CLASSES, MODEL_KINDS, ROW_KINDS
from prefscale.pairs import selection
from prefscale.pairs.registry import PAIR_STRATEGIES
from prefscale.pairs.strategies import strategy
from prefscale.registry import Registry, UnknownEntryError

DBT = Path(__file__).resolve().parents[2] / "dbt" / "models"
REGISTRIES = [
    PAIR_STRATEGIES,
    judges_registry.JUDGES,
    generation_registry.BACKENDS,
]


def _accepted_values(yml: Path, model: str, column: str) -> list[str]:
    doc = yaml.safe_load(yml.read_text())
    for m in doc["models"]:
        if m["name"] != model:
            continue
        for c in m["columns"]:
            if c["name"] == column:
                for t in c.get("data_tests", []):
                    if isinstance(t, dict) and "accepted_values" in t:
                        return list(t["accepted_values"]["arguments"]["values"])
    raise AssertionError(f"no accepted_values on {model}.{column} in {yml}")


@pytest.mark.parametrize("registry", REGISTRIES, ids=lambda r: r.kind)
def test_every_entry_resolves(registry):
    for name in registry.names:
        assert callable(registry.get(name)), f"{registry.kind} {name!r} -> {registry.target(name)}"


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownEntryError, match=r"unknown pair strategy 'nope'; known: best_vs_worst, "):
        PAIR_STRATEGIES.get("nope")
    with pytest.raises(ValueError, match="not 'module:attribute'"):
        Registry("thing", {"x": "no_colon"})


def test_recipe_schema_takes_its_names_from_the_registries():
    enum = typing.get_args
    assert enum(PairsConfig.model_fields["strategy"].annotation) == PAIR_STRATEGIES.names
    assert enum(GenerationConfig.model_fields["backend"].annotation) == generation_registry.BACKENDS.names
    judges = enum(enum(EvaluationConfig.model_fields["judges"].annotation)[0])[0]
    assert enum(judges) == judges_registry.JUDGES.names
    schema = Recipe.model_json_schema()["$defs"]
    lf_kinds = {
        schema[name]["properties"]["kind"]["const"]
        for name in schema
        if "kind" in schema[name].get("properties", {})
    }
    assert set(LF_KINDS) <= lf_kinds
    assert tuple(c.model_fields["kind"].default for c in MODEL_KIND_CLASSES) == MODEL_KINDS
    assert len(LF_KINDS) == len(ROW_KINDS) + len(MODEL_KIND_CLASSES) == len(set(LF_KINDS))


def test_dbt_accepted_values_are_the_registries_names():
    marts = DBT / "marts"
    assert _accepted_values(marts / "lf_summary.yml", "lf_summary", "kind") == list(LF_KINDS)
    assert _accepted_values(marts / "alignment.yml", "pair_stats", "strategy") == list(PAIR_STRATEGIES.names)


@strategy()
def worst_vs_best(ranked, draw):
    """A deliberately inverted strategy (the test's new entry)."""
    return ranked[-1], ranked[0]


def test_a_new_pair_strategy_is_one_function_and_one_line(monkeypatch):
    table = {n: PAIR_STRATEGIES.target(n) for n in PAIR_STRATEGIES}
    extended = Registry("pair strategy", {**table, "worst_vs_best": f"{__name__}:worst_vs_best"})
    monkeypatch.setattr(selection, "PAIR_STRATEGIES", extended)
    cands = pl.DataFrame(
        {
            "candidate_id": ["a", "b"],
            "prompt_id": ["p", "p"],
            "sample_idx": [0, 1],
            "prompt": ["q", "q"],
            "response": ["good", "bad"],
            "finish_reason": ["stop", "stop"],
        },
        schema_overrides={"sample_idx": pl.Int32},
    )
    rewards = pl.DataFrame({"candidate_id": ["a", "b"], "reward": [1.0, 0.0]})
    picked = selection.select_pairs(cands, rewards, strategy="worst_vs_best").pairs
    assert picked["chosen_id"].to_list() == ["b"] and picked["rejected_id"].to_list() == ["a"]


class EchoJudge(Judge):
    """The test's new judge: prefers the longer output."""

    name = "echo"

    @classmethod
    def from_recipe(cls, ctx: JudgeContext) -> EchoJudge:
        judge = cls()
        judge.seed = ctx.seed
        return judge

    def _judge(self, pairs):
        longer = [
            2.0 if len(b) > len(a) else 1.0 for a, b in zip(pairs["output_1"], pairs["output_2"], strict=True)
        ]
        return longer, None, None


def test_a_new_judge_is_one_class_and_one_line(monkeypatch):
    table = {n: judges_registry.JUDGES.target(n) for n in judges_registry.JUDGES}
    monkeypatch.setattr(
        judges_registry, "JUDGES", Registry("judge", {**table, "echo": f"{__name__}:EchoJudge"})
    )
    (judge,) = judges_registry.make_judges(["echo"], EvaluationConfig(), seed=7)
    assert isinstance(judge, EchoJudge) and judge.seed == 7
    with pytest.raises(UnknownEntryError, match="unknown judge 'nope'"):
        judges_registry.make_judges(["rubric", "nope"], EvaluationConfig())


class ListBackend:
    """The test's new backend: answers every prompt with its own text."""

    name = "list"

    def __init__(self, sampling) -> None:
        self.sampling = sampling

    @classmethod
    def from_config(cls, spec):
        return cls(spec.sampling)

    def generate(self, prompts, n, *, seed):
        return prompts, GenerationInfo(backend=self.name)


def test_a_new_backend_is_one_class_and_one_line(monkeypatch):
    table = {n: generation_registry.BACKENDS.target(n) for n in generation_registry.BACKENDS}
    extended = Registry("generation backend", {**table, "list": f"{__name__}:ListBackend.from_config"})
    monkeypatch.setattr(generation_registry, "BACKENDS", extended)
    config = GenerationConfig().model_copy(update={"backend": "list", "max_new_tokens": 9})
    backend = generation_registry.make_backend(config, "unused")
    assert isinstance(backend, ListBackend) and backend.sampling.max_new_tokens == 9
