"""MLflow as a user meets it: runs that link back to their Dagster run, experiments in the model-training view,
and the small plots the Dagster UI shows in place. Against a real MLflow sqlite store."""

import dagster as dg
import polars as pl
import pytest

from prefscale.lineage.eval_runs import log_eval_run, results_preview
from prefscale.lineage.mlflow_runs import (
    DAGSTER_URL_ENV,
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    NOTE_TAG,
    dagster_base_url,
    dagster_run_tags,
    log_training_run,
    mlflow_client,
    run_url,
    tracking_uri_for,
)
from prefscale.report import INLINE_MD_LIMIT, histogram_markdown, line_chart_markdown
from resources import MLflowResource

RUN_ID = "0f1e2d3c-aaaa-bbbb-cccc-1234567890ab"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://127.0.0.1:3000", "http://127.0.0.1:3000"),
        ("http://127.0.0.1:3000/", "http://127.0.0.1:3000"),
        (" https://dagster.example.org/prefix/ ", "https://dagster.example.org/prefix"),
        ("", ""),
        (None, ""),
        ("127.0.0.1:3000", ""),  # no scheme: not a URL a browser would follow
        ("ftp://host", ""),
        ("http://", ""),
        ("http://host:3000/?x=1", ""),
        ("http://host:3000/#runs", ""),
    ],
)
def test_only_a_real_base_url_is_used(value, expected):
    assert dagster_base_url(value) == expected


def test_without_a_base_url_the_run_carries_ids_but_no_link():
    tags = dagster_run_tags(RUN_ID, "dpo_checkpoint", "2")
    assert tags == {"dagster.run_id": RUN_ID, "dagster.asset_key": "dpo_checkpoint", "dagster.partition": "2"}
    assert NOTE_TAG not in dagster_run_tags(RUN_ID, "dpo_checkpoint", "2", "not a url")


def test_with_a_base_url_the_note_links_the_run_and_the_asset_partition():
    tags = dagster_run_tags(RUN_ID, "alpaca_eval_results", "3", "http://127.0.0.1:3000/")
    run = f"http://127.0.0.1:3000/runs/{RUN_ID}"
    asset = "http://127.0.0.1:3000/assets/alpaca_eval_results?view=partitions&partition=3"
    assert tags["dagster.run_url"] == run
    assert tags[NOTE_TAG] == (
        f"Made by [Dagster run {RUN_ID}]({run}), materializing [alpaca_eval_results[3]]({asset})."
    )
    unpartitioned = dagster_run_tags(RUN_ID, "warehouse/eval_leaderboard", None, "http://h:1")
    assert "dagster.partition" not in unpartitioned
    assert (
        "[warehouse/eval_leaderboard](http://h:1/assets/warehouse/eval_leaderboard)"
        in unpartitioned[NOTE_TAG]
    )


def test_runs_in_the_sqlite_store_carry_the_note_and_the_experiment_its_kind(tmp_path):
    uri = tracking_uri_for(tmp_path)
    tags = dagster_run_tags(RUN_ID, "dpo_checkpoint", "1", "http://127.0.0.1:3000")
    run_id = log_training_run(
        uri,
        "prefscale",
        tmp_path / "mlruns",
        run_name="dpo_checkpoint-1",
        params={"seed": 1},
        history=[{"step": 1, "loss": 0.7}],
        final_metrics={"loss": 0.7},
        tags=tags,
    )
    eval_id = log_eval_run(
        uri, "prefscale", tmp_path / "mlruns", run_name="alpaca_eval-1", params={}, metrics={}, tags=tags
    )
    client = mlflow_client(uri)
    for rid in (run_id, eval_id):
        run = client.get_run(rid)
        assert run.data.tags[NOTE_TAG] == tags[NOTE_TAG]  # the run's description in the MLflow UI
        assert run.data.tags["dagster.run_url"] == f"http://127.0.0.1:3000/runs/{RUN_ID}"
    exp = client.get_experiment_by_name("prefscale")
    assert exp.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"
    # MLflow 3.17's UI picks its view from the URL: every link prefscale prints opens the model-training view
    url = run_url(uri, run_id)
    assert url.endswith(f"/#/experiments/{exp.experiment_id}/runs/{run_id}?workflowType=machine_learning")


def test_an_older_experiment_gets_the_kind_but_a_chosen_one_is_kept(tmp_path):
    uri = tracking_uri_for(tmp_path)
    client = mlflow_client(uri)
    client.create_experiment("old", artifact_location=(tmp_path / "a").as_uri())
    client.create_experiment(
        "chosen", artifact_location=(tmp_path / "b").as_uri(), tags={EXPERIMENT_KIND_TAG: "x"}
    )
    for name in ("old", "chosen"):
        log_eval_run(uri, name, tmp_path / "mlruns", run_name="r", params={}, metrics={}, tags={})
    assert client.get_experiment_by_name("old").tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    assert client.get_experiment_by_name("chosen").tags[EXPERIMENT_KIND_TAG] == "x"


PARTS = dg.StaticPartitionsDefinition(["1", "2"])


@dg.asset(partitions_def=PARTS)
def linked(context: dg.AssetExecutionContext, mlflow: MLflowResource) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata=mlflow.run_tags(context, context.asset_key))


@pytest.mark.parametrize(
    ("configured", "env", "base"),
    [
        ("", None, None),
        ("", "http://127.0.0.1:3999", "http://127.0.0.1:3999"),  # what `make ui` sets
        ("https://dagster.example.org", "http://127.0.0.1:3999", "https://dagster.example.org"),
    ],
)
def test_the_resource_tags_a_materialization_with_its_run_and_the_ui_url(monkeypatch, configured, env, base):
    if env is None:
        monkeypatch.delenv(DAGSTER_URL_ENV, raising=False)
    else:
        monkeypatch.setenv(DAGSTER_URL_ENV, env)
    result = dg.materialize(
        [linked], resources={"mlflow": MLflowResource(dagster_url=configured)}, partition_key="2"
    )
    meta = {k: v.value for k, v in result.asset_materializations_for_node("linked")[0].metadata.items()}
    assert meta["dagster.run_id"] == result.run_id
    assert meta["dagster.asset_key"] == "linked" and meta["dagster.partition"] == "2"
    if base is None:
        assert NOTE_TAG not in meta and "dagster.run_url" not in meta
    else:
        assert meta["dagster.run_url"] == f"{base}/runs/{result.run_id}"
        assert f"({base}/assets/linked?view=partitions&partition=2)" in meta[NOTE_TAG]


def test_plot_previews_fit_what_the_dagster_ui_shows_in_place():
    metrics = pl.DataFrame(
        {
            "judge": ["sme_rubric"] * 4 + ["pairrm"] * 4,
            "iteration": [0, 1, 2, 3] * 2,
            "win_rate": [0.5, 0.55, None, 0.7, 0.5, 0.45, 0.6, 0.65],
        }
    )
    md = results_preview(metrics)
    assert md.startswith("![win rate vs reference per iteration, 0-1](data:image/svg+xml,%3Csvg")
    assert len(md) < INLINE_MD_LIMIT and "sme_rubric (blue), pairrm (orange)" in md
    assert " " not in md.split("](", 1)[1].split(")", 1)[0]  # one markdown link target, spaces encoded
    hist = histogram_markdown([float(x % 17) / 3 for x in range(2000)] + [float("nan"), None], "reward")
    assert hist.startswith("![reward](data:image/svg+xml,") and len(hist) < INLINE_MD_LIMIT
    assert "2000 values from 0 to 5.33" in hist
    assert histogram_markdown([], "reward") == "" == line_chart_markdown({}, "empty")
    too_many = {f"judge{k}": [(1.0, 0.5)] for k in range(9)}
    assert line_chart_markdown(too_many, "crowded") == ""
