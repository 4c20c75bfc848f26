"""Blocking asset checks: a bad artifact fails its check and the downstream asset of the same run never executes.

Each test materializes the asset and its downstream asset in one Dagster run over a small store built by the
real core functions (small_home.py), after breaking the input on purpose: a pair with margin 0, a pair whose
candidate does not exist, a DPO checkpoint whose weights file is corrupt.
"""

import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

import assets.pairs
import definitions
from prefscale.pairs.selection import PairSelection
from prefscale.storage import ArtifactStore
from tests.integration.conftest import small_resources
from tests.integration.small_home import build_small_home, tiny_policy

pytestmark = pytest.mark.integration

CORRUPTING_TRAINER = Path(__file__).with_name("corrupting_trainer.py")


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_policy(tmp_path_factory.mktemp("policy") / "base")


@pytest.fixture
def home(tmp_path: Path, policy_dir: Path) -> Path:
    build_small_home(tmp_path / "home", policy_dir, iterations=1, upto="preference_pairs")
    return tmp_path / "home"


def _run(home: Path, selection: list[str]) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        list(definitions.defs.assets),
        selection=dg.AssetSelection.assets(*selection),
        partition_key="1",
        resources=small_resources(home),
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def _check(result: dg.ExecuteInProcessResult, name: str) -> dg.AssetCheckEvaluation:
    evals = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        and e.asset_check_evaluation_data.check_name == name
    ]
    assert len(evals) == 1, f"expected one evaluation of {name}, got {len(evals)}"
    return evals[0]


def _started_steps(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START}


def _blocked(result: dg.ExecuteInProcessResult, asset: str, check: str, downstream: str) -> None:
    """`asset`'s step failed on its blocking `check`, and `downstream`'s step never started."""
    assert not result.success
    failures = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert [e.step_key for e in failures] == [asset]
    message = failures[0].step_failure_data.error.message
    assert "blocking asset check failed" in message and check in message, message
    assert asset in _started_steps(result)
    assert downstream not in _started_steps(result)


def _materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def _breaking(break_pairs):
    """`select_pairs` as the asset calls it, with `break_pairs` applied to its pairs."""
    real = assets.pairs.select_pairs

    def select(*args, **kwargs) -> PairSelection:
        sel = real(*args, **kwargs)
        return PairSelection(pairs=break_pairs(sel.pairs), dropped=sel.dropped)

    return select


def test_good_pairs_pass_every_pair_check(home):
    result = _run(home, ["preference_pairs"])
    assert result.success
    for name in ("chosen_differs_from_rejected", "margins_positive", "pairs_reference_candidates"):
        assert _check(result, name).passed, name


@pytest.mark.parametrize(
    ("check", "break_pairs", "detail"),
    [
        (
            "margins_positive",
            lambda p: p.with_columns(
                pl.when(pl.int_range(pl.len()) == 0).then(0.0).otherwise(pl.col("margin")).alias("margin")
            ),
            "non_positive",
        ),
        (
            "pairs_reference_candidates",
            lambda p: p.with_columns(
                pl.when(pl.int_range(pl.len()) == 0)
                .then(pl.lit("no-such-candidate"))
                .otherwise(pl.col("rejected_id"))
                .alias("rejected_id")
            ),
            "bad_references",
        ),
    ],
)
def test_bad_pairs_fail_their_check_and_block_dpo(home, monkeypatch, check, break_pairs, detail):
    monkeypatch.setattr(assets.pairs, "select_pairs", _breaking(break_pairs))
    result = _run(home, ["preference_pairs", "dpo_checkpoint"])
    evaluation = _check(result, check)
    assert not evaluation.passed
    assert evaluation.metadata[detail].value == 1
    assert evaluation.blocking
    # the pairs were published (and their failed check recorded); the checkpoint step never ran
    assert _materialized(result) == {"preference_pairs"}
    _blocked(result, "preference_pairs", check, "dpo_checkpoint")
    assert ArtifactStore(home).versions("dpo_checkpoint", "1") == []


def test_corrupt_checkpoint_fails_checkpoint_loads_and_blocks_evaluation(home, monkeypatch):
    import prefscale.training.launch

    # the real `prefscale train-dpo`, followed by truncating the weights it saved (corrupting_trainer.py)
    monkeypatch.setattr(
        prefscale.training.launch, "launcher", lambda *a, **k: [sys.executable, str(CORRUPTING_TRAINER)]
    )
    result = _run(home, ["dpo_checkpoint", "eval_results"])
    evaluation = _check(result, "checkpoint_loads")
    assert not evaluation.passed, evaluation.metadata
    store = ArtifactStore(home)
    ckpt = store.current("dpo_checkpoint", "1")
    error = evaluation.metadata["error"].value
    assert error.startswith(f"{ckpt.path}: ") and "SafetensorError" in error, error
    assert _materialized(result) == {"dpo_checkpoint"}
    _blocked(result, "dpo_checkpoint", "checkpoint_loads", "eval_results")
    assert store.versions("eval_results", "1") == []
    # a checkpoint that does not load is not registered as an MLflow model version
    records = result.get_asset_materialization_events()
    assert "not registered" in records[0].materialization.metadata["mlflow_model_version"].value


class _Emptied:
    """The recipe's backend, with the responses of the rows `which` selects emptied."""

    def __init__(self, backend, which: pl.Expr) -> None:
        self.backend, self.which = backend, which

    def generate(self, *args, **kwargs):
        cands, info = self.backend.generate(*args, **kwargs)
        emptied = pl.when(self.which).then(pl.lit("  ")).otherwise("response").alias("response")
        return cands.with_columns(emptied), info


@pytest.mark.parametrize("broken", [False, True], ids=["one_empty_warns", "mostly_empty_blocks"])
def test_empty_responses_warn_and_a_broken_generator_blocks_labeling(home, monkeypatch, broken):
    import prefscale.generation.registry
    from prefscale.data.domain import make_prompt_pool

    real = prefscale.generation.registry.make_backend
    which = pl.int_range(pl.len()) < (pl.len() if broken else 1)
    monkeypatch.setattr(
        prefscale.generation.registry, "make_backend", lambda *a, **k: _Emptied(real(*a, **k), which)
    )
    store = ArtifactStore(home)
    store.write_frame("prompts", "1", make_prompt_pool(8, seed=1).head(4))  # real prompts to sample from
    before = store.versions("lf_votes", "1")
    result = _run(home, ["candidates", "lf_votes"])
    evaluation = _check(result, "no_empty_responses")
    assert not evaluation.passed and evaluation.blocking
    if not broken:  # one empty sample: a warning, and labeling runs
        assert evaluation.metadata["empty"].value == 1
        assert evaluation.severity == dg.AssetCheckSeverity.WARN
        assert result.success and _materialized(result) == {"candidates", "lf_votes"}
        return
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["empty_share"].value == 1.0
    assert _materialized(result) == {"candidates"}
    _blocked(result, "candidates", "no_empty_responses", "lf_votes")
    assert store.versions("lf_votes", "1") == before
