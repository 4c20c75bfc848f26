"""SME annotation files: parsing, per-line validation, gold derivation, and the sensor's decisions."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from prefscale.labeling.gold import (
    AnnotationsRejected,
    annotation_files,
    changed_iterations,
    file_digests,
    load_annotations,
)
from sensors.annotations import annotations_decision, sme_annotations_job, sme_annotations_sensor
from sensors.jobs import alignment_iteration_job

KEYS = ["1", "2", "3"]


def cands() -> pl.DataFrame:
    """Two prompts in iteration 1 (3 candidates each), one in iteration 2."""
    rows = [(f"p1-{k}", "p1", "1") for k in range(3)]
    rows += [(f"p2-{k}", "p2", "1") for k in range(3)]
    rows += [(f"p3-{k}", "p3", "2") for k in range(3)]
    return pl.DataFrame(rows, schema=["candidate_id", "prompt_id", "iteration"], orient="row")


def jsonl(path: Path, *records) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def test_labels_and_rankings_from_jsonl_and_csv(tmp_path):
    jsonl(
        tmp_path / "a.jsonl",
        {"candidate_id": "p1-0", "label": "high", "annotator": "ana"},
        "",
        {"candidate_id": "p1-1", "label": "LOW"},
        {"candidate_id": "p3-2", "label": 1, "note": "fine"},
    )
    (tmp_path / "b.csv").write_text(
        'prompt_id,ranking\np2,"[""p2-2"", ""p2-0"", ""p2-1""]"\np3,p3-0 > p3-1\n'
    )
    (tmp_path / ".hidden.jsonl").write_text("not json\n")
    (tmp_path / "notes.txt").write_text("ignored\n")
    ann = load_annotations(tmp_path, cands(), {"1": "v1", "2": "v2"})
    g = ann.gold.sort("candidate_id")
    assert g.select("candidate_id", "label", "source", "rank", "iteration").rows() == [
        ("p1-0", 1, "label", None, "1"),
        ("p1-1", 0, "label", None, "1"),
        ("p2-1", 0, "ranking", 3, "1"),  # best first: p2-2 high, p2-0 (the middle) unlabelled, p2-1 low
        ("p2-2", 1, "ranking", 1, "1"),
        ("p3-0", 1, "ranking", 1, "2"),
        ("p3-1", 0, "ranking", 2, "2"),
        ("p3-2", 1, "label", None, "2"),
    ]
    assert g.filter(pl.col("candidate_id") == "p1-0")["annotator"][0] == "ana"
    assert set(g["candidates_version"]) == {"v1", "v2"}
    assert ann.rankings["ranking"].to_list() == [["p2-2", "p2-0", "p2-1"], ["p3-0", "p3-1"]]
    assert ann.files["file"].to_list() == ["a.jsonl", "b.csv"]
    assert ann.for_iteration("2").height == 3
    assert [p.name for p in annotation_files(tmp_path)] == ["a.jsonl", "b.csv"]
    assert set(file_digests(tmp_path)) == {"a.jsonl", "b.csv"}


def test_a_malformed_file_is_rejected_whole_with_every_bad_line(tmp_path):
    jsonl(tmp_path / "a_good.jsonl", {"candidate_id": "p1-0", "label": "high"})
    jsonl(
        tmp_path / "bad.jsonl",
        {"candidate_id": "p1-1", "label": "high"},  # fine on its own, rejected with its file
        '{"candidate_id": "p1-2", "label": ',  # 2: invalid JSON
        {"candidate_id": "nope", "label": "high"},  # 3
        {"candidate_id": "p2-0", "label": "meh"},  # 4
        {"candidate_id": "p1-1", "label": "low"},  # 5: duplicate of line 1
        {"candidate_id": "p1-0", "label": "low"},  # 6: already in a_good.jsonl (read first: files go by name)
        {"candidate_id": "p2-1"},  # 7
        {"candidate_id": "p2-2", "label": "high", "score": 3},  # 8
        {"prompt_id": "p2", "ranking": ["p2-0", "p1-0"]},  # 9: p1-0 is not p2's
        {"prompt_id": "p9", "ranking": ["p2-0", "p2-1"]},  # 10
        {"prompt_id": "p3", "ranking": ["p3-0", "p3-0"]},  # 11
        {"prompt_id": "p3", "ranking": ["p3-0"]},  # 12
        [1, 2],  # 13
    )
    with pytest.raises(AnnotationsRejected) as e:
        load_annotations(tmp_path, cands())
    assert list(e.value.problems) == ["bad.jsonl"]
    lines = dict(e.value.problems["bad.jsonl"])
    assert sorted(lines) == list(range(2, 14))
    assert "invalid JSON" in lines[2]
    assert lines[3] == "unknown candidate_id 'nope'"
    assert lines[4] == "label must be high or low (or 1 / 0), got 'meh'"
    assert lines[5] == "duplicate: candidate 'p1-1' already annotated on line 1"
    assert lines[6] == "duplicate: candidate 'p1-0' already annotated in a_good.jsonl line 1"
    assert lines[7] == "missing label"
    assert lines[8] == "unexpected field(s) ['score']"
    assert lines[9] == "candidate(s) ['p1-0'] are not candidates of prompt 'p2'"
    assert lines[10] == "unknown prompt_id 'p9'"
    assert "more than once" in lines[11]
    assert "at least two" in lines[12]
    assert "JSON object" in lines[13]
    msg = str(e.value)
    assert msg.startswith("bad.jsonl: rejected, nothing from it was used (12 problem(s)):")
    assert "  line 3: unknown candidate_id 'nope'" in msg


def test_csv_problems_are_reported_by_line(tmp_path):
    (tmp_path / "x.csv").write_text("candidate_id,label\np1-0,high\np1-1\np1-2,maybe\n\np9-0,low\n")
    with pytest.raises(AnnotationsRejected) as e:
        load_annotations(tmp_path, cands())
    assert e.value.problems["x.csv"] == [
        (3, "1 fields, the header has 2"),
        (4, "label must be high or low (or 1 / 0), got 'maybe'"),
        (6, "unknown candidate_id 'p9-0'"),
    ]
    (tmp_path / "x.csv").write_text("")
    with pytest.raises(AnnotationsRejected, match="no header row"):
        load_annotations(tmp_path, cands())


def test_changed_iterations():
    a = pl.DataFrame({"candidate_id": ["x", "y"], "iteration": ["1", "2"], "label": [1, 0]})
    b = pl.DataFrame({"candidate_id": ["x", "y", "z"], "iteration": ["1", "2", "3"], "label": [1, 1, 0]})
    assert changed_iterations(None, a) == ["1", "2"]
    assert changed_iterations(a, b) == ["2", "3"]
    assert changed_iterations(b, b) == []
    assert changed_iterations(b, b.head(0)) == ["1", "2", "3"]


# --- the sensor -------------------------------------------------------------------------------------------------


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def record_materialization(instance, key: str, partition: str | None = None, metadata=None) -> int:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=key, partition=partition, metadata=metadata or {})
    )
    return instance.fetch_materializations(dg.AssetKey(key), limit=1).records[0].storage_id


def test_sensor_ingests_new_files_then_relabels_the_affected_iterations(instance, tmp_path):
    folder = tmp_path / "annotations"
    first = annotations_decision(instance, folder, None, KEYS)
    assert not first.run_requests and "no annotation files" in first.skip_reason.skip_message
    folder.mkdir()
    jsonl(folder / "a.jsonl", {"candidate_id": "p1-0", "label": "high"})
    tick = annotations_decision(instance, folder, first.cursor, KEYS)
    (req,) = tick.run_requests
    assert req.job_name == sme_annotations_job.name and req.partition_key is None
    assert json.loads(tick.cursor)["files"] == file_digests(folder)
    again = annotations_decision(instance, folder, tick.cursor, KEYS)
    assert not again.run_requests and "no new annotation files" in again.skip_reason.skip_message
    # the run succeeded: gold changed for iterations 1 and 3; only 1 and 2 have a label matrix
    for k in ("1", "2"):
        record_materialization(instance, "lf_votes", k)
    sid = record_materialization(instance, "sme_annotations", metadata={"affected_iterations": ["1", "3"]})
    relabel = annotations_decision(instance, folder, again.cursor, KEYS)
    (req,) = relabel.run_requests
    assert req.job_name == alignment_iteration_job.name and req.partition_key == "1"
    assert req.asset_selection == [dg.AssetKey("quality_labels")]
    assert req.run_key == f"gold-{sid}-iteration-1"
    assert json.loads(relabel.cursor)["handled"] == sid
    done = annotations_decision(instance, folder, relabel.cursor, KEYS)
    assert not done.run_requests
    # a changed file is a new request with a new run key; a removed one too
    jsonl(folder / "a.jsonl", {"candidate_id": "p1-0", "label": "low"})
    changed = annotations_decision(instance, folder, done.cursor, KEYS)
    assert changed.run_requests[0].run_key != tick.run_requests[0].run_key
    (folder / "a.jsonl").unlink()
    removed = annotations_decision(instance, folder, changed.cursor, KEYS)
    assert removed.run_requests and "removed ['a.jsonl']" not in (removed.skip_reason or "")


def test_sensor_first_tick_does_not_replay_an_old_ingestion(instance, tmp_path):
    record_materialization(instance, "lf_votes", "1")
    record_materialization(instance, "sme_annotations", metadata={"affected_iterations": ["1"]})
    tick = annotations_decision(instance, tmp_path, None, KEYS)
    assert not tick.run_requests
    assert "already handled" in tick.skip_reason.skip_message


def test_sensor_is_registered_against_both_jobs():
    assert sme_annotations_sensor.name == "sme_annotations_sensor"
    assert {t.job_name for t in sme_annotations_sensor.targets} == {
        sme_annotations_job.name,
        alignment_iteration_job.name,
    }


def test_sensor_ingests_tool_annotations_and_rejudges_changed_votes(instance, tmp_path):
    folder = tmp_path / "annotations"
    first = annotations_decision(instance, folder, None, KEYS, tool="digest-a")
    (req,) = first.run_requests  # new annotations in Label Studio, no files: the same ingestion run
    assert req.job_name == sme_annotations_job.name and json.loads(first.cursor)["tool"] == "digest-a"
    assert not annotations_decision(instance, folder, first.cursor, KEYS, tool="digest-a").run_requests
    unread = annotations_decision(
        instance, folder, first.cursor, KEYS, tool=None
    )  # the tool could not be read
    assert not unread.run_requests and json.loads(unread.cursor)["tool"] == "digest-a"
    (req,) = annotations_decision(instance, folder, first.cursor, KEYS, tool="digest-b").run_requests
    assert req.job_name == sme_annotations_job.name and req.run_key != first.run_requests[0].run_key
    # the ingestion changed iteration 2's votes: its alpaca_eval_results (materialized) is judged again
    record_materialization(instance, "alpaca_eval_results", "2")
    sid = record_materialization(
        instance,
        "sme_annotations",
        metadata={"affected_iterations": [], "votes_changed_iterations": ["2", "3"]},
    )
    rejudge = annotations_decision(instance, folder, first.cursor, KEYS, tool="digest-a")
    (req,) = rejudge.run_requests
    assert (req.partition_key, req.asset_selection, req.run_key) == (
        "2",
        [dg.AssetKey("alpaca_eval_results")],
        f"votes-{sid}-iteration-2",
    )
