"""`kind: snorkel`: a team's Snorkel `LabelingFunction`s, as they are, give the label matrix `PandasLFApplier` gives."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml
from snorkel.labeling import PandasLFApplier, labeling_function
from snorkel.preprocess import preprocessor

from prefscale.cli import main
from prefscale.config.recipe import parse_recipe
from prefscale.data import domain
from prefscale.labeling.apply import apply_all_lfs, apply_lfs, snorkel_lfs
from prefscale.labeling.pattern_kinds import PythonLF, RegexLF, SnorkelLF, python_lf_problems
from prefscale.labeling.registry import LF_KINDS
from prefscale.labeling.votes import ABSTAIN, HIGH, LOW, LabelingFunctionError
from recipes import snorkel_lfs_example as example

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = "recipes.snorkel_lfs_example"
HERE = __name__  # this module, importable by the name pytest gave it


def candidates(n_prompts: int = 15, n: int = 4, seed: int = 3) -> pl.DataFrame:
    """`n_prompts` × `n` embedded-domain candidates with every column the candidates artifact has."""
    pool = domain.make_prompt_pool(n_prompts, seed)
    rng = random.Random(seed)
    rows = []
    for pid, task, prompt in pool.iter_rows():
        for k in range(n):
            response = domain.make_response(prompt, task, rng)
            rows.append(
                {
                    "candidate_id": f"{pid}-{k}",
                    "prompt_id": pid,
                    "sample_idx": k,
                    "task_type": task,
                    "prompt": prompt,
                    "response": response,
                    "finish_reason": "length" if k == 3 else "stop",
                    "n_tokens": len(response.split()),
                }
            )
    return pl.DataFrame(rows)


ROWS = candidates()


def declarations() -> list[SnorkelLF]:
    return [
        SnorkelLF(name="refund_policy", object=f"{EXAMPLE}:mentions_refund_policy"),
        SnorkelLF(name="asks_back", object=f"{EXAMPLE}:only_asks_back", description="questions only"),
        SnorkelLF(name="device", object=f"{EXAMPLE}:echoes_device"),
    ]


# Test-only Snorkel LFs, named by `{HERE}:...`.


@preprocessor(memoize=True)
def word_count(x: Any) -> Any:
    x.words = len(x.response.split())
    return x


@labeling_function(pre=[word_count], resources={"limit": 15})
def short_reply(x: Any, limit: int) -> int:
    return LOW if x.words < limit else ABSTAIN


@labeling_function()
def reads_every_column(x: Any) -> int:
    """Fails unless every candidate column is an attribute; high on the first sample of each prompt."""
    _ = (x.candidate_id, x.prompt_id, x.prompt, x.response, x.task_type, x.finish_reason, x.n_tokens)
    return HIGH if x.sample_idx == 0 else ABSTAIN


@labeling_function()
def returns_two(x: Any) -> int:
    return 2 if x.sample_idx == 1 else ABSTAIN


@labeling_function()
def raises_on_length(x: Any) -> int:
    if x.finish_reason == "length":
        raise KeyError("no verdict")
    return ABSTAIN


def not_a_labeling_function(x: Any) -> int:
    return ABSTAIN


# --- the acceptance test: the same label matrix as PandasLFApplier --------------------------------------------


def test_label_matrix_equals_pandas_lf_applier():
    lfs = declarations()
    votes = apply_lfs(ROWS, lfs)
    expected = PandasLFApplier(example.LFS).apply(ROWS.to_pandas(), progress_bar=False)
    assert votes.columns == ["candidate_id", "refund_policy", "asks_back", "device"]
    assert votes["candidate_id"].to_list() == ROWS["candidate_id"].to_list()
    got = votes.drop("candidate_id").to_numpy()
    for j, lf in enumerate(lfs):
        assert got[:, j].tolist() == expected[:, j].tolist(), lf.name
        assert (got[:, j] != ABSTAIN).any(), f"{lf.name} never votes on the test rows"
    assert votes.schema["refund_policy"] == pl.Int8


def test_memoized_preprocessor_resources_and_every_column_match_too():
    extra = [
        SnorkelLF(name="short", object=f"{HERE}:short_reply"),
        SnorkelLF(name="columns", object=f"{HERE}:reads_every_column"),
    ]
    mixed = [RegexLF(name="lumora", pattern="lumora", vote="high"), *declarations(), *extra]
    votes = apply_all_lfs(ROWS, mixed)
    assert votes.columns == [
        "candidate_id",
        "lumora",
        "refund_policy",
        "asks_back",
        "device",
        "short",
        "columns",
    ]
    slfs = [*example.LFS, short_reply, reads_every_column]
    expected = PandasLFApplier(slfs).apply(ROWS.to_pandas(), progress_bar=False)
    np.testing.assert_array_equal(votes.select(votes.columns[2:]).to_numpy(), expected)
    # prefscale's own LFs wrapped for Snorkel (`row_vote`), a `snorkel` one included, agree as well
    wrapped = PandasLFApplier(snorkel_lfs(mixed)).apply(ROWS.to_pandas(), progress_bar=False)
    np.testing.assert_array_equal(votes.drop("candidate_id").to_numpy(), wrapped)


def test_task_types_scope_abstains_and_row_vote_takes_a_mapping():
    lf = SnorkelLF(name="refund_billing", object=f"{EXAMPLE}:mentions_refund_policy", task_types=("billing",))
    votes = apply_lfs(ROWS, [lf])["refund_billing"]
    unscoped = apply_lfs(ROWS, [lf.model_copy(update={"task_types": None})])["refund_billing"]
    billing = ROWS["task_type"] == "billing"
    assert votes.filter(~billing).to_list() == [ABSTAIN] * int((~billing).sum())
    assert votes.filter(billing).to_list() == unscoped.filter(billing).to_list()
    assert HIGH in votes.to_list()
    row = {"task_type": "billing", "response": "We will refund it.", "prompt": "p"}
    assert lf.row_vote(row) == HIGH
    assert lf.row_vote({**row, "task_type": "complaint"}) == ABSTAIN


def test_empty_frame_and_version():
    assert apply_lfs(ROWS.head(0), declarations())["refund_policy"].to_list() == []
    a, b = declarations()[0], SnorkelLF(name="refund_policy", object=f"{EXAMPLE}:only_asks_back")
    assert a.version == declarations()[0].version and len(a.version) == 12
    assert a.version != b.version
    # the version covers the LF's source, resources and preprocessors, not only the declaration; an object
    # that does not import (yet) is versioned by its declaration alone
    assert a.version != _definition_only(a)
    missing = SnorkelLF(name="refund_policy", object="no_such_team_module:mentions_refund_policy")
    assert missing.version == _definition_only(missing)


def _definition_only(lf: SnorkelLF) -> str:
    blob = json.dumps(lf.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256((blob + "\0").encode()).hexdigest()[:12]


# --- recipes ---------------------------------------------------------------------------------------------------


def _embedded_with(*lfs: dict[str, Any]) -> dict[str, Any]:
    data = yaml.safe_load((REPO / "recipes" / "embedded.yaml").read_text())
    data["labeling"]["functions"] = [*data["labeling"]["functions"], *lfs]
    return data


def test_a_recipe_declares_a_snorkel_lf_and_it_votes():
    recipe = parse_recipe(
        _embedded_with(
            {
                "name": "mentions_refund_policy",
                "kind": "snorkel",
                "object": f"{EXAMPLE}:mentions_refund_policy",
                "description": "Say how the money comes back.",
            }
        )
    )
    lf = recipe.labeling.functions[-1]
    assert isinstance(lf, SnorkelLF) and lf.kind == "snorkel" and "snorkel" in LF_KINDS
    assert python_lf_problems(recipe.labeling.all_functions) == []
    votes = apply_lfs(ROWS, recipe.labeling.functions)
    expected = PandasLFApplier([example.mentions_refund_policy]).apply(ROWS.to_pandas(), progress_bar=False)
    assert votes["mentions_refund_policy"].to_list() == expected[:, 0].tolist()
    assert set(votes["mentions_refund_policy"].to_list()) == {HIGH, ABSTAIN}


def test_recipe_rejects_a_malformed_object_path():
    with pytest.raises(Exception, match=r"snorkel\.object"):
        parse_recipe(_embedded_with({"name": "x", "kind": "snorkel", "object": "not a path"}))


def test_validate_names_an_unimportable_or_wrong_object(monkeypatch, tmp_path, capsys):
    lfs = [
        SnorkelLF(name="ghost", object="no_such_team_module:mentions_refund_policy"),
        SnorkelLF(name="typo", object=f"{EXAMPLE}:mentions_refund"),
        SnorkelLF(name="plain_function", object=f"{HERE}:not_a_labeling_function"),
        SnorkelLF(name="a_preprocessor", object=f"{EXAMPLE}:reply_lines"),
        PythonLF(name="snorkel_as_python", callable=f"{EXAMPLE}:only_asks_back"),
        SnorkelLF(name="fine", object=f"{EXAMPLE}:only_asks_back"),
    ]
    problems = python_lf_problems(lfs)
    assert len(problems) == 5
    ghost, typo, plain, pre, as_python = problems
    assert ghost.startswith(
        "labeling function 'ghost': cannot import no_such_team_module:mentions_refund_policy"
    )
    assert "ModuleNotFoundError" in ghost
    assert typo.startswith(
        f"labeling function 'typo': cannot import {EXAMPLE}:mentions_refund (AttributeError"
    )
    assert plain == (
        f"labeling function 'plain_function': {HERE}:not_a_labeling_function is a function, not a "
        "snorkel.labeling.LabelingFunction (make it with @labeling_function())"
    )
    assert (
        pre.startswith("labeling function 'a_preprocessor': ")
        and "reply_lines is a LambdaMapper, not a" in pre
    )
    assert as_python.startswith("labeling function 'snorkel_as_python': ") and "`kind: snorkel`" in as_python

    # the same through `prefscale recipe validate`, run at the repository root
    monkeypatch.chdir(REPO)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(_embedded_with({"name": "ghost", "kind": "snorkel", "object": "nope_mod:lf"}))
    )
    assert main(["recipe", "validate", str(bad)]) == 2
    assert "labeling function 'ghost': cannot import nope_mod:lf" in capsys.readouterr().err
    good = tmp_path / "good.yaml"
    good.write_text(
        yaml.safe_dump(
            _embedded_with({"name": "asks_back", "kind": "snorkel", "object": f"{EXAMPLE}:only_asks_back"})
        )
    )
    assert main(["recipe", "validate", str(good)]) == 0
    assert "is valid" in capsys.readouterr().out


# --- failures name the function and the row --------------------------------------------------------------------


def test_a_label_outside_high_low_abstain_names_the_lf_and_row():
    lf = SnorkelLF(name="two_classes_too_many", object=f"{HERE}:returns_two")
    with pytest.raises(
        LabelingFunctionError, match=r"'two_classes_too_many' .* returned 2 for candidate"
    ) as e:
        apply_lfs(ROWS, [lf])
    assert e.value.lf_name == "two_classes_too_many"
    assert e.value.row == 1 and e.value.candidate_id == ROWS["candidate_id"][1]
    with pytest.raises(LabelingFunctionError, match="returned 2"):
        lf.row_vote({"sample_idx": 1})


def test_a_raising_lf_names_itself_and_the_row():
    lf = SnorkelLF(name="fragile", object=f"{HERE}:raises_on_length")
    with pytest.raises(
        LabelingFunctionError, match=r"'fragile' raised KeyError: 'no verdict' for candidate"
    ) as e:
        apply_lfs(ROWS, [lf])
    assert e.value.row == 3 and e.value.candidate_id == ROWS["candidate_id"][3]
    ghost = SnorkelLF(name="ghost", object="no_such_team_module:lf")
    with pytest.raises(LabelingFunctionError, match="'ghost': cannot import no_such_team_module:lf"):
        apply_lfs(ROWS, [ghost])
