"""The primary judge (`evaluation.judge`): independent of the training reward, and named by every recipe whose
prompts are not the embedded Lumora domain's (the default, the rubric, knows only that domain); the local_llm
judge's question carries the team's written criteria (`evaluation.judge_criteria`)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from prefscale.config.base import RecipeError
from prefscale.config.evaluation import EvaluationConfig
from prefscale.config.recipe import RECIPES_DIR, load_recipe, parse_recipe
from prefscale.evaluation.judges.local_llm import LOCAL_LLM_QUESTION, LocalLLMJudge, local_llm_question
from prefscale.evaluation.judges.registry import PRIMARY_JUDGES, make_judges

REPO = Path(__file__).resolve().parents[2]
EMBEDDED = yaml.safe_load((RECIPES_DIR / "embedded.yaml").read_text())
NO_JUDGE = {"judge": None, "judges": None, "judge_criteria": None}
CRITERIA = "Thank the customer.\nGive the steps as a numbered list."


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)  # smollm2 names its prompts file relative to the repository root


def _embedded(**evaluation: object) -> dict:
    data = copy.deepcopy(EMBEDDED)
    data["evaluation"].update(evaluation)
    return data


def test_primary_judges_are_the_ones_independent_of_training():
    assert set(PRIMARY_JUDGES) == {"rubric", "sme", "local_llm", "alpaca_eval_gpt4_turbo", "pairrm"}
    assert "weak_supervision" not in PRIMARY_JUDGES


@pytest.mark.parametrize(
    ("recipe", "source"), [("smollm2", "file"), ("snorkel-mistral-pairrm", "hf_dataset")]
)
def test_own_prompts_without_a_judge_fail_naming_the_key_the_reason_and_the_choices(recipe, source):
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe, {"evaluation": NO_JUDGE})
    msg = str(exc.value)
    assert f"evaluation.judge is required when data.source is '{source}'" in msg
    assert "embedded Lumora demo domain only" in msg
    for choice in ("sme (", "local_llm (", "alpaca_eval_gpt4_turbo (", "pairrm ("):
        assert choice in msg


def test_own_prompts_with_no_evaluation_section_fail_too():
    data = yaml.safe_load((RECIPES_DIR / "smollm2.yaml").read_text())
    del data["evaluation"]
    with pytest.raises(RecipeError, match=r"evaluation\.judge is required when data\.source is 'file'"):
        parse_recipe(data)


def test_own_prompts_judged_by_the_rubric_fail():
    overrides = {"evaluation": {**NO_JUDGE, "judge": "rubric", "judges": ["rubric", "weak_supervision"]}}
    with pytest.raises(RecipeError) as exc:
        load_recipe("smollm2", overrides)
    msg = str(exc.value)
    assert "evaluation.judge rubric scores the embedded Lumora demo domain only" in msg
    assert "data.source is 'file'" in msg and "local_llm (" in msg


def test_embedded_prompts_without_a_judge_get_the_rubric():
    r = parse_recipe(_embedded(judge=None))
    assert r.evaluation.judge == "rubric" and r.evaluation.all_judges == ("rubric", "weak_supervision")
    bare = copy.deepcopy(EMBEDDED)
    del bare["evaluation"]
    r = parse_recipe(bare)
    assert r.evaluation.judge == "rubric" and r.evaluation.all_judges == ("rubric",)
    assert load_recipe("embedded", {"evaluation": NO_JUDGE}).evaluation.all_judges == ("rubric",)
    # another independent judge may lead on the embedded domain too
    r = parse_recipe(_embedded(judge="local_llm", judges=["local_llm", "rubric"]))
    assert r.evaluation.all_judges == ("local_llm", "rubric")


def test_a_null_judge_on_embedded_prompts_must_still_lead_the_judges():
    with pytest.raises(RecipeError, match=r"must start with evaluation\.judge \('rubric'\)"):
        parse_recipe(_embedded(judge=None, judges=["weak_supervision", "rubric"]))


def test_pairrm_cannot_lead_when_it_is_the_training_reward():
    overrides = {"evaluation": {"judge": "pairrm", "judges": ["pairrm", "weak_supervision"]}}
    with pytest.raises(RecipeError) as exc:
        load_recipe("snorkel-mistral-pairrm", overrides)
    msg = str(exc.value)
    assert "evaluation.judge pairrm is also in reward.sources" in msg
    assert "alpaca_eval_gpt4_turbo (" in msg and "pairrm (" not in msg
    # with the label model as the reward, PairRM is an independent judge
    r = load_recipe("smollm2", {"evaluation": {**NO_JUDGE, "judge": "pairrm", "judges": ["pairrm"]}})
    assert r.evaluation.judge == "pairrm"
    # an ensemble that includes pairrm counts too
    ensemble = {"sources": [{"source": "label_model"}, {"source": "pairrm", "model": "tiny"}]}
    with pytest.raises(RecipeError, match=r"pairrm is also in reward\.sources"):
        parse_recipe({**_embedded(judge="pairrm", judges=["pairrm"]), "reward": ensemble})


def test_weak_supervision_is_never_the_primary_judge():
    with pytest.raises(RecipeError) as exc:
        parse_recipe(_embedded(judge="weak_supervision", judges=["weak_supervision"]))
    msg = str(exc.value)
    assert "evaluation.judge: Value error, weak_supervision cannot be evaluation.judge" in msg
    assert "the training reward judging itself" in msg


def test_judge_criteria_need_the_local_llm_judge_and_some_text():
    with pytest.raises(RecipeError, match=r"judge_criteria is only read by the local_llm judge"):
        parse_recipe(_embedded(judge_criteria=CRITERIA))
    with pytest.raises(RecipeError, match=r"judge_criteria is empty"):
        parse_recipe(_embedded(judge="local_llm", judges=["local_llm"], judge_criteria="  "))
    r = parse_recipe(_embedded(judge="rubric", judges=["rubric", "local_llm"], judge_criteria=CRITERIA))
    assert r.evaluation.judge_criteria == CRITERIA


def test_the_shipped_recipes_on_their_own_prompts_choose_an_independent_judge():
    smol = load_recipe("smollm2")
    assert smol.evaluation.judge == "local_llm" and smol.evaluation.local_llm_model is None  # the base policy
    assert smol.evaluation.all_judges == ("local_llm", "weak_supervision") and smol.evaluation.judge_criteria
    snorkel = load_recipe("snorkel-mistral-pairrm")
    assert snorkel.evaluation.judge == "alpaca_eval_gpt4_turbo"
    assert "rubric" not in snorkel.evaluation.all_judges
    assert load_recipe("smollm2-lumora").evaluation.judge == "rubric"  # embedded prompts: unchanged


def test_a_bare_evaluation_config_keeps_the_embedded_default():
    assert EvaluationConfig().judge is None and EvaluationConfig().all_judges == ("rubric",)


def test_the_criteria_go_before_the_question():
    plain = local_llm_question("Reset my router?", "Reply A.", "Reply B.")
    assert plain == LOCAL_LLM_QUESTION.format(instruction="Reset my router?", a="Reply A.", b="Reply B.")
    assert local_llm_question("Reset my router?", "Reply A.", "Reply B.", "  ") == plain
    judged = local_llm_question("Reset my router?", "Reply A.", "Reply B.", f"\n{CRITERIA}\n")
    assert judged == f"Judge by these criteria:\n{CRITERIA}\n\n{plain}"
    assert local_llm_question("{x}", "a {b}", "b", "use {braces}").startswith(
        "Judge by these criteria:\nuse {braces}"
    )


def test_judge_criteria_reach_the_local_llm_judges_prompt(tiny_policy, cpu):
    folder, _ = tiny_policy
    cfg = EvaluationConfig(judge="local_llm", judges=("local_llm",), judge_criteria=CRITERIA)
    (judge,) = make_judges(cfg.all_judges, cfg, compute=cpu, local_llm_model=folder)
    assert isinstance(judge, LocalLLMJudge) and judge.criteria == CRITERIA
    rendered = judge._render("Reset my router?", "Reply A.", "Reply B.")
    assert f"Judge by these criteria:\n{CRITERIA}\n\n" in rendered and "Reply B." in rendered
    (plain,) = make_judges(
        ("local_llm",), EvaluationConfig(judges=("local_llm",)), compute=cpu, local_llm_model=folder
    )
    assert "criteria" not in plain._render("Reset my router?", "Reply A.", "Reply B.")
    assert len(judge.encode("Reset my router?", "Reply A.", "Reply B.")) > len(
        plain.encode("Reset my router?", "Reply A.", "Reply B.")
    )
    # other criteria make another annotator (and so another alpaca_eval_results version)
    assert plain.annotator == f"local_llm[{folder.name}]"
    assert (
        judge.annotator.startswith(f"local_llm[{folder.name}, criteria ")
        and judge.annotator != plain.annotator
    )
