"""The annotation tool's core without a server: active sampling, ranking and pairwise tasks, the conversion of
Label Studio annotations into gold records and votes, and the `sme` judge."""

from __future__ import annotations

import polars as pl
import pytest

from prefscale.annotation.label_studio import KEY_FIELD, LabelStudio, check_url
from prefscale.annotation.pairwise import changed_vote_iterations, pairwise_tasks, vote_rows
from prefscale.annotation.ranking import ranking_records, ranking_tasks, select_prompts
from prefscale.annotation.server import redact
from prefscale.evaluation.judges.sme import SMEJudge
from prefscale.labeling.gold import AnnotationSource, AnnotationsRejected, load_annotations


def _candidates() -> pl.DataFrame:
    rows = []
    for p in range(6):
        for k in range(4):
            rows.append(
                {"candidate_id": f"p{p}-{k}", "prompt_id": f"p{p}", "prompt": f"q{p}", "response": f"r{p}{k}"}
            )
    return pl.DataFrame(rows)


def _labels(cands: pl.DataFrame) -> pl.DataFrame:
    # p0 is the most uncertain (P(high) 0.5), p5 the most certain
    p = {f"p{k}": 0.5 + 0.09 * k for k in range(6)}
    return cands.select("candidate_id", pl.col("prompt_id").replace_strict(p).alias("p_high"))


def test_select_prompts_takes_the_uncertain_then_a_random_share():
    cands = _candidates()
    sel = select_prompts(cands, _labels(cands), None, n=4, random_share=0.25, seed=1)
    assert sel.height == 4
    assert sel.filter(pl.col("reason") == "uncertain")["prompt_id"].to_list() == ["p0", "p1", "p2"]
    rnd = sel.filter(pl.col("reason") == "random")["prompt_id"].to_list()
    assert len(rnd) == 1 and rnd[0] in {"p3", "p4", "p5"}
    again = select_prompts(cands, _labels(cands), None, n=4, random_share=0.25, seed=1)
    assert again.equals(sel)  # deterministic: a re-push selects the same tasks


def test_lf_conflict_raises_a_prompt():
    cands = _candidates()
    labels = cands.select("candidate_id", pl.lit(0.99).alias("p_high"))  # the label model is sure everywhere
    votes = cands.select(
        "candidate_id",
        pl.when(pl.col("prompt_id") == "p4").then(1).otherwise(-1).alias("a"),
        pl.when(pl.col("prompt_id") == "p4").then(0).otherwise(-1).alias("b"),
    )
    sel = select_prompts(cands, labels, votes, n=1, random_share=0.0)
    assert sel["prompt_id"].to_list() == ["p4"] and sel["conflict"][0] == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [{"n": 0}, {"n": 2, "random_share": 1.5}])
def test_select_prompts_rejects_bad_settings(bad):
    cands = _candidates()
    with pytest.raises(ValueError, match=r"tasks per iteration|random_share"):
        select_prompts(cands, _labels(cands), None, **({"n": 2} | bad))


def _task(tid: int, cands: pl.DataFrame, pid: str, annotations: list[dict]) -> dict:
    sel = pl.DataFrame({"prompt_id": [pid], "reason": ["uncertain"]})
    (task,) = ranking_tasks(cands, sel, iteration="1", candidates_version="v1")
    return {"id": tid, "data": task["data"], "annotations": annotations}


def _ranked(aid: int, user: int, order: list[str], high=(), low=(), reason=None) -> dict:
    result = [{"type": "ranker", "from_name": "rank", "value": {"ranker": {"responses": order}}}]
    for name, marks in (("high", high), ("low", low)):
        if marks:
            result.append({"type": "choices", "from_name": name, "value": {"choices": list(marks)}})
    if reason:
        result.append({"type": "textarea", "from_name": "reason", "value": {"text": [reason]}})
    return {"id": aid, "completed_by": user, "was_cancelled": False, "result": result}


def test_ranking_tasks_shuffle_and_key_the_candidates():
    cands = _candidates()
    task = _task(1, cands, "p2", [])
    data = task["data"]
    assert data[KEY_FIELD] == "ranking:1:p2:v1"
    assert sorted(it["id"] for it in data["items"]) == [f"p2-{k}" for k in range(4)]
    assert [it["title"] for it in data["items"]] == [f"Response {k}" for k in range(1, 5)]


def test_rankings_become_gold_with_marks_and_agreement():
    cands = _candidates()
    task = _task(7, cands, "p1", [])
    titles = {it["title"]: it["id"] for it in task["data"]["items"]}
    best = ["p1-2", "p1-0", "p1-3", "p1-1"]
    title_of = {v: k for k, v in titles.items()}
    task["annotations"] = [
        _ranked(11, 1, best, low=[title_of["p1-0"]], reason="too long"),
        _ranked(12, 2, ["p1-2", "p1-3", "p1-0", "p1-1"]),
    ]
    records, problems, agreement = ranking_records([task], {1: "ana@x", 2: "bo@x"})
    assert problems == []
    ((tid, rec),) = records
    assert tid == 7 and rec["ranking"][0] == "p1-2" and rec["ranking"][-1] == "p1-1"
    assert rec["annotator"] == "ana@x,bo@x" and rec["low"] == ["p1-0"] and "too long" in rec["note"]
    assert agreement.height == 1 and 0 < agreement["kendall_tau"][0] < 1

    source = AnnotationSource("label-studio:rank", records, problems, "sha", unit="task")
    ann = load_annotations(
        _empty_folder(), cands.with_columns(pl.lit("1").alias("iteration")), {"1": "v1"}, [source]
    )
    gold = ann.gold
    assert ann.rankings["note"].to_list() == ["ana@x: too long"]  # the SME's reason is kept
    labels = dict(zip(gold["candidate_id"], gold["label"], strict=True))
    # mean places: p1-2 0, p1-0 1.5, p1-3 1.5, p1-1 3; p1-0 comes 2nd (high) but an SME marked it low
    assert labels == {"p1-2": 1, "p1-0": 0, "p1-3": 0, "p1-1": 0}


def _empty_folder():
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp())


def test_a_malformed_ranking_is_rejected_with_its_task_id():
    cands = _candidates()
    task = _task(42, cands, "p3", [_ranked(99, 1, ["p3-0", "p3-1"])])  # two of four responses
    records, problems, _ = ranking_records([task], {})
    assert records == [] and problems[0][0] == 42 and "annotation 99" in problems[0][1]
    source = AnnotationSource("label-studio:rank", records, problems, "sha", unit="task")
    with pytest.raises(AnnotationsRejected, match="task 42: annotation 99"):
        load_annotations(_empty_folder(), cands.with_columns(pl.lit("1").alias("iteration")), {}, [source])


def _pairs() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "prompt_id": ["e0", "e0", "e1", "e2"],
            "sample_idx": [0, 1, 0, 0],
            "instruction": ["i0", "i0", "i1", "i2"],
            "output_1": ["base0", "base0b", "same", "base2"],
            "output_2": ["ckpt0", "ckpt0b", "same", "ckpt2"],
        }
    )


def test_pairwise_votes_match_the_sme_judge():
    tasks = pairwise_tasks(_pairs(), iteration="2", n=10, seed=3)
    assert [t["data"]["prompt_id"] for t in tasks] == [
        "e0",
        "e2",
    ]  # one per prompt; identical replies skipped
    annotated = []
    for k, t in enumerate(tasks):
        model_is_a = t["data"]["a"].startswith("ckpt")
        pick = "A is better" if model_is_a else "B is better"  # the SME prefers the checkpoint on both
        if k == 1:
            pick = "Tie"
        result = [{"from_name": "preference", "type": "choices", "value": {"choices": [pick]}}]
        annotated.append(
            {
                "id": 100 + k,
                "data": t["data"],
                "annotations": [{"id": k, "completed_by": 5, "result": result}],
            }
        )
    votes, problems = vote_rows(annotated, {5: "sme@x"})
    assert problems == [] and votes["preference"].to_list() == [2.0, 1.5]
    judge = SMEJudge(votes)
    ann = judge.annotate(_pairs(), generator_1="base", generator_2="ckpt")
    # e0/0 voted 2.0, e0/1 and e2 unvoted except e2 (tie), e1 identical replies: a tie without a vote
    assert ann["preference"].to_list() == [2.0, None, 1.5, 1.5]
    assert changed_vote_iterations(None, votes) == ["2"] and changed_vote_iterations(votes, votes) == []


def test_a_vote_outside_the_choices_is_rejected_with_its_task_id():
    (t,) = pairwise_tasks(_pairs().head(1), iteration="1", n=1)
    bad = {"id": 5, "data": t["data"], "annotations": [{"id": 9, "result": []}]}
    votes, problems = vote_rows([bad], {})
    assert votes.height == 0 and problems == [
        (5, "annotation 9: expected one of ['A is better', 'B is better', 'Tie'], got []")
    ]


def test_client_checks_its_inputs_and_hides_the_key():
    with pytest.raises(ValueError, match="http"):
        check_url("127.0.0.1:8080")
    with pytest.raises(ValueError, match="LABEL_STUDIO_API_KEY"):
        LabelStudio("http://127.0.0.1:1", " ")
    client = LabelStudio("http://127.0.0.1:1", "s3cret-key")
    assert "s3cret" not in repr(client)
    assert redact("{'email': 'a@b', 'token': 'abc123'}") == "{'email': 'a@b', 'token': '***'}"
    assert "pw" not in redact("password=pw")
