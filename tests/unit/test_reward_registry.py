"""The reward source registry: every entry satisfies the protocol, and the three callers dispatch through it.

The pipeline (`source_scores`: `reward_scores` and the pair ablation), best-of-N (`score_pool`) and
`prefscale score` (`score_pairs`, the `--reward` choices) all look a source up in `REWARD_SOURCES`: a new
source registered the way a contributor would (a module-level object here, one `Registry` line) reaches all of
them. The recipe schema and the dbt accepted values are the registry's names.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from prefscale.cli import main
from prefscale.config.evaluation import EvaluationConfig
from prefscale.config.labeling import load_lf_pack
from prefscale.config.recipe import load_recipe
from prefscale.config.rewards import RewardModelSettings, RewardSource
from prefscale.evaluation.best_of_n import pool_with_slots, score_pool
from prefscale.generation.base import CANDIDATE_SCHEMA
from prefscale.labeling.apply import apply_lfs
from prefscale.labeling.label_model import fit_label_model
from prefscale.registry import Registry, UnknownEntryError
from prefscale.rewards import registry
from prefscale.rewards.base import (
    ENSEMBLE_SOURCE,
    MissingInputError,
    RewardSourceImpl,
    ScoringContext,
    SourceScores,
    score_rows,
)
from prefscale.rewards.registry import REWARD_SOURCES
from prefscale.rewards.reward_model import reward_model_scores, score_texts, train_reward_model
from prefscale.rewards.sources import source_scores
from prefscale.rewards.text_scores import score_pairs, text_rows

DBT = Path(__file__).resolve().parents[2] / "dbt" / "models"


def pool(prompts: int = 2, slots: int = 2, n: int = 2) -> pl.DataFrame:
    rows = [
        {
            "candidate_id": f"p{p}-{k}",
            "prompt_id": f"p{p}",
            "sample_idx": k,
            "task_type": "billing",
            "prompt": f"prompt {p}",
            "response": "x" * (1 + (7 * p + 3 * k) % 5),
            "n_tokens": 3,
            "finish_reason": "stop",
            "latency_s": 0.1,
        }
        for p in range(prompts)
        for k in range(slots * n)
    ]
    return pl.DataFrame(rows, schema=CANDIDATE_SCHEMA)


# --- the table ---------------------------------------------------------------------------------------------


def test_every_source_resolves_and_satisfies_the_protocol():
    assert REWARD_SOURCES.names == ("label_model", "reward_model", "pairrm")
    for name in REWARD_SOURCES.names:
        source = REWARD_SOURCES.get(name)
        assert isinstance(source, RewardSourceImpl), f"{name} -> {REWARD_SOURCES.target(name)}"
        assert source.name == name


def test_recipe_schema_takes_its_sources_from_the_registry():
    assert typing.get_args(RewardSource.model_fields["source"].annotation) == REWARD_SOURCES.names
    best_of_n = EvaluationConfig.model_fields["best_of_n_source"].annotation
    assert typing.get_args(best_of_n) == REWARD_SOURCES.names


def _accepted_values(yml: Path, model: str, column: str) -> list[str]:
    for m in yaml.safe_load(yml.read_text())["models"]:
        if m["name"] == model:
            for c in m["columns"]:
                if c["name"] == column:
                    for t in c.get("data_tests", []):
                        if isinstance(t, dict) and "accepted_values" in t:
                            return list(t["accepted_values"]["arguments"]["values"])
    raise AssertionError(f"no accepted_values on {model}.{column} in {yml}")


@pytest.mark.parametrize(
    ("yml", "model"),
    [("marts/alignment.yml", "reward_distribution"), ("staging/schema.yml", "stg_reward_scores")],
)
def test_dbt_accepted_reward_sources_are_the_registry(yml, model):
    got = _accepted_values(DBT / yml, model, "reward_source")
    assert tuple(got) == (*REWARD_SOURCES.names, ENSEMBLE_SOURCE)


def test_unknown_source_lists_the_known_ones():
    rows = text_rows(["q"], ["a"])
    with pytest.raises(UnknownEntryError, match=r"unknown reward source 'vibes'; known: label_model, "):
        score_rows("vibes", rows, ScoringContext())
    with pytest.raises(UnknownEntryError, match=r"unknown best-of-N source 'vibes'; known: label_model, "):
        score_pool(pool_with_slots(pool(), 2), "vibes")


# --- a new source reaches every caller ---------------------------------------------------------------------


class LengthSource:
    """The test's new source: the response length, with every context it is called with kept."""

    name = "length"

    def __init__(self) -> None:
        self.calls: list[tuple[pl.DataFrame, ScoringContext]] = []

    def score(self, rows: pl.DataFrame, ctx: ScoringContext) -> SourceScores:
        self.calls.append((rows, ctx))
        return SourceScores(rows.select("candidate_id", pl.col("response").str.len_chars().alias("score")))


class HalfSource:
    """A broken source: scores only the first half of the rows."""

    name = "half"

    def score(self, rows: pl.DataFrame, ctx: ScoringContext) -> SourceScores:
        return SourceScores(rows.head(rows.height // 2).select("candidate_id", pl.lit(1.0).alias("score")))


LENGTH = LengthSource()
HALF = HalfSource()


@pytest.fixture
def length_source(monkeypatch):
    """`length` (and `half`) registered beside the real sources, as one line each in the table would."""
    table = {n: REWARD_SOURCES.target(n) for n in REWARD_SOURCES}
    extended = Registry(
        "reward source", {**table, "length": f"{__name__}:LENGTH", "half": f"{__name__}:HALF"}
    )
    monkeypatch.setattr(registry, "REWARD_SOURCES", extended)
    LENGTH.calls.clear()
    return LENGTH


def test_the_pipeline_dispatches_a_new_source(length_source):
    cands = pool().drop("n_tokens", "latency_s")
    labels = pl.DataFrame({"candidate_id": cands["candidate_id"], "p_high": np.linspace(0, 1, cands.height)})
    sources = [RewardSource(source="label_model"), RewardSource.model_construct(source="length")]
    scores, matrix = source_scores(cands, labels, sources, policy_source="pretrained", seed=4)
    assert list(scores) == ["label_model", "length"] and matrix is None
    assert scores["length"]["score"].to_list() == [float(len(r)) for r in cands["response"]]
    assert scores["length"]["score"].dtype == pl.Float64  # the dispatcher casts every source's score
    ((rows, ctx),) = length_source.calls
    assert rows.equals(cands)
    assert ctx.labels is labels and ctx.policy_source == "pretrained" and ctx.seed == 4
    assert ctx.kind == "reward source"


def test_best_of_n_dispatches_a_new_source(length_source):
    recipe = load_recipe("embedded")
    p = pool_with_slots(pool(), 2)
    scores = score_pool(p, "length", lfs=recipe.labeling.functions, seed=2, pairrm_model="tiny")
    assert scores["score"].to_list() == [float(len(r)) for r in p["response"]]
    ((rows, ctx),) = length_source.calls
    assert "slot" in rows.columns and ctx.group_by == ("prompt_id", "slot")
    assert ctx.kind == "best-of-N source" and ctx.seed == 2 and ctx.ranker == "tiny"
    assert [lf.name for lf in ctx.lfs] == [lf.name for lf in recipe.labeling.functions]


def test_prefscale_score_dispatches_a_new_source(length_source, tmp_path, capsys):
    prompts = ["Fix my router", "Why is the sky blue?", "Fix my router"]
    responses = ["Restart it.", "Rayleigh scattering.", "No."]
    got = score_pairs(prompts, responses, source="length", model="m", seed=1)
    assert got.tolist() == [float(len(r)) for r in responses]
    ((rows, ctx),) = length_source.calls
    assert rows["prompt_id"].to_list() == ["1", "2", "1"]  # the rows sharing a prompt share its id
    assert rows["task_type"].to_list() == load_lf_pack().task_type_of(prompts)
    assert ctx.reward_model_dir == ctx.ranker == "m" and ctx.device == "auto" and ctx.seed == 1
    # the CLI's --reward choices are the registry's names
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(
        "".join(
            json.dumps({"prompt": p, "response": r}) + "\n" for p, r in zip(prompts, responses, strict=True)
        )
    )
    assert main(["score", "--input", str(src), "--output", str(out), "--reward", "length"]) == 0
    assert [json.loads(line)["reward"] for line in out.read_text().splitlines()] == got.tolist()
    assert "with length" in capsys.readouterr().out


def test_the_cli_offers_only_registered_sources(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["score", "--input", "x", "--output", "y", "--reward", "length"])
    assert e.value.code == 2 and "invalid choice: 'length'" in capsys.readouterr().err


def test_a_source_must_score_every_row_once(length_source):
    with pytest.raises(ValueError, match=r"best-of-N source 'half' returned 4 scores .* for 8 rows"):
        score_pool(pool_with_slots(pool(), 2), "half")
    with pytest.raises(ValueError, match="must score every row once"):
        score_pairs(["q", "q"], ["a", "b"], source="half")


# --- the real sources ----------------------------------------------------------------------------------------


def test_missing_inputs_are_named_in_the_callers_words():
    cands = pool().drop("n_tokens", "latency_s")
    rm = [RewardSource(source="reward_model")]
    with pytest.raises(MissingInputError, match=r"^reward source 'label_model' needs the quality labels$"):
        source_scores(cands, None, [RewardSource(source="label_model")])
    with pytest.raises(
        MissingInputError, match=r"^reward source 'reward_model' needs a trained reward model"
    ):
        source_scores(cands, None, rm)
    p = pool_with_slots(pool(), 2)
    with pytest.raises(
        MissingInputError, match=r"^best-of-N source 'label_model' needs the recipe's labeling"
    ):
        score_pool(p, "label_model")
    with pytest.raises(MissingInputError, match=r"^best-of-N source 'pairrm' needs a ranker \(a folder"):
        score_pool(p, "pairrm")
    with pytest.raises(MissingInputError, match=r"^best-of-N source 'pairrm' needs the pool's slot column"):
        score_pool(p.drop("slot"), "pairrm", pairrm_model="tiny")
    with pytest.raises(
        MissingInputError, match=r"^reward source 'reward_model' needs --model: a reward model"
    ):
        score_pairs(["q"], ["a"], source="reward_model")
    with pytest.raises(MissingInputError, match=r"needs the quality labels \(or labeling functions to fit"):
        score_rows("label_model", cands, ScoringContext())


def test_label_model_source_uses_labels_or_fits_on_the_rows():
    recipe = load_recipe("embedded")
    lfs, lm = recipe.labeling.functions, recipe.labeling.label_model
    p = pool(3)
    labels = pl.DataFrame({"candidate_id": p["candidate_id"], "p_high": [0.5] * p.height})
    given = score_rows("label_model", p, ScoringContext(labels=labels, lfs=lfs)).scores
    assert given["score"].to_list() == [0.5] * p.height  # given labels win over fitting
    fitted = score_rows("label_model", p, ScoringContext(lfs=lfs, label_model=lm, seed=3)).scores
    expected = fit_label_model(
        apply_lfs(p, lfs),
        [lf.name for lf in lfs],
        n_epochs=lm.n_epochs,
        lr=lm.lr,
        l2=lm.l2,
        prec_init=lm.prec_init,
        seed=3,
    ).labels["p_high"]
    assert fitted["candidate_id"].equals(p["candidate_id"]) and fitted["score"].equals(
        expected.alias("score")
    )
    # tie_break length: equal P(high), the longer response scores higher; distinct scores keep their order
    broken = score_rows("label_model", p, ScoringContext(labels=labels, tie_break="length")).scores
    order = np.argsort(broken["score"].to_numpy(), kind="stable")
    lengths = p["response"].str.len_chars().to_numpy()
    assert np.all(np.diff(lengths[order]) >= 0) and broken["score"].n_unique() == len(set(lengths))


def test_pairrm_gives_a_lone_row_the_neutral_score_without_loading_a_ranker():
    rows = text_rows(["a", "b"], ["x", "y"])  # two prompts, one row each
    out = score_rows("pairrm", rows, ScoringContext(ranker="/no/such/ranker"))
    assert out.scores["score"].to_list() == [0.0, 0.0]
    assert out.matrix is not None and out.matrix["pairrm_logits"].to_list() == [[0.0], [0.0]]
    assert out.matrix["matrix_index"].to_list() == [0, 0]


def test_reward_model_source_in_every_caller(tiny_policy, cpu, tmp_path):
    policy, _ = tiny_policy
    p = pool_with_slots(pool(), 2)
    labels = pl.DataFrame({"candidate_id": p["candidate_id"], "p_high": np.linspace(0.1, 0.9, p.height)})
    settings = RewardModelSettings(epochs=1, batch_size=8, max_length=32)
    folder = tmp_path / "rm"
    train_reward_model(policy, p, labels, settings, folder, cpu, seed=0)
    direct = reward_model_scores(p, folder, cpu)
    assert score_pool(p, "reward_model", reward_model_dir=folder, compute=cpu).equals(direct)
    scores, _ = source_scores(
        p, labels, [RewardSource(source="reward_model")], reward_model_dir=folder, compute=cpu
    )
    assert scores["reward_model"].equals(direct)
    prompts, responses = p["prompt"].to_list(), p["response"].to_list()
    text = score_pairs(prompts, responses, source="reward_model", model=str(folder))
    np.testing.assert_array_equal(text, score_texts(folder, prompts, responses, cpu).astype(np.float64))
