from __future__ import annotations

import copy

import pytest
import yaml

from prefscale.config.base import RecipeError
from prefscale.config.policy import PolicyConfig
from prefscale.config.recipe import (
    RECIPES_DIR,
    Recipe,
    deep_merge,
    load_recipe,
    parse_recipe,
    resolve_recipe_path,
)


@pytest.fixture(scope="module")
def embedded_data():
    return yaml.safe_load((RECIPES_DIR / "embedded.yaml").read_text())


@pytest.fixture
def write_recipe(tmp_path, embedded_data):
    """Write the embedded recipe with `overrides` merged in (or raw text) and return the path as a string."""

    def write(overrides=None, text=None, name="bad.yaml"):
        path = tmp_path / name
        path.write_text(
            text if text is not None else yaml.safe_dump(deep_merge(embedded_data, overrides or {}))
        )
        return str(path)

    return write


def test_embedded_recipe_validates():
    r = load_recipe("embedded")
    assert isinstance(r, Recipe)
    assert r.name == "embedded"
    assert r.seed == 17
    assert r.iterations == 3
    assert r.policy.source == "embedded"
    assert r.policy.embedded.hidden_size == 128
    assert r.generation.num_candidates == 5
    assert r.dpo.lora is not None and r.dpo.lora.r == 16
    names = [lf.name for lf in r.labeling.functions]
    assert len(names) == len(set(names)) == 9
    assert "unfinished" in names
    assert {lf.kind for lf in r.labeling.functions} == {
        "regex",
        "list_format",
        "ordered",
        "word_ratio",
        "length",
        "unfinished",
    }


def test_load_by_path_equals_load_by_name():
    assert load_recipe(str(RECIPES_DIR / "embedded.yaml")) == load_recipe("embedded")
    assert resolve_recipe_path("embedded") == RECIPES_DIR / "embedded.yaml"


def test_overrides_are_deep_merged():
    r = load_recipe("embedded", overrides={"iterations": 1, "generation": {"num_candidates": 2}})
    assert r.iterations == 1
    assert r.generation.num_candidates == 2
    assert r.generation.max_new_tokens == 128  # sibling keys kept
    assert r.generation.batch_size == 75


def test_unknown_top_level_key(write_recipe):
    with pytest.raises(RecipeError) as e:
        load_recipe(write_recipe({"bogus": 1}))
    assert "bogus: unknown key" in str(e.value)
    assert "bad.yaml" in str(e.value)


@pytest.mark.parametrize(
    ("overrides", "dotted"),
    [
        ({"generation": {"num_candidatez": 3}}, "generation.num_candidatez"),
        ({"policy": {"embedded": {"hidden_sise": 3}}}, "policy.embedded.hidden_sise"),
        ({"dpo": {"lora": {"rank": 3}}}, "dpo.lora.rank"),
    ],
)
def test_unknown_nested_key_names_the_dotted_path(write_recipe, overrides, dotted):
    with pytest.raises(RecipeError) as e:
        load_recipe(write_recipe(overrides))
    assert f"{dotted}: unknown key" in str(e.value)


def test_unknown_key_inside_a_labeling_function(embedded_data):
    data = copy.deepcopy(embedded_data)
    data["labeling"]["functions"][0]["patern"] = "x"
    with pytest.raises(RecipeError, match="unknown key") as e:
        parse_recipe(data)
    assert "labeling.functions.0.regex.patern" in str(e.value)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"iterations": 0}, "iterations must be >= 1"),
        ({"generation": {"num_candidates": 1}}, "generation.num_candidates must be >= 2"),
        ({"policy": {"source": "pretrained"}}, "policy.model is required"),
        ({"policy": {"source": "pretrained", "model": "./nope/model"}}, "policy.model path does not exist"),
        ({"data": {"source": "file"}}, "data.path is required"),
        ({"data": {"pool_size": 2}}, "data.pool_size"),
        ({"dpo": {"loss_type": "nope"}}, "dpo.loss_type"),
        ({"name": "has spaces"}, "- name: String should match pattern"),
    ],
)
def test_invalid_values_name_the_field(write_recipe, monkeypatch, tmp_path, overrides, needle):
    monkeypatch.chdir(tmp_path)  # "./nope/model" is resolved against the working directory
    with pytest.raises(RecipeError) as e:
        load_recipe(write_recipe(overrides))
    msg = str(e.value)
    assert msg.startswith("invalid recipe ")
    assert needle in msg


def test_pretrained_hub_id_is_accepted_without_a_local_folder():
    r = load_recipe("embedded", overrides={"policy": {"source": "pretrained", "model": "org/some-model"}})
    assert r.policy.model == "org/some-model"


def test_pretrained_existing_local_path_is_accepted(tmp_path):
    r = load_recipe("embedded", overrides={"policy": {"source": "pretrained", "model": str(tmp_path)}})
    assert r.policy.model == str(tmp_path)


def test_pretrained_home_relative_path_is_accepted(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "models" / "mine").mkdir(parents=True)
    assert PolicyConfig(source="pretrained", model="~/models/mine").model == "~/models/mine"


def test_duplicate_lf_names_rejected(embedded_data):
    data = copy.deepcopy(embedded_data)
    data["labeling"]["functions"].append(dict(data["labeling"]["functions"][0]))
    with pytest.raises(RecipeError, match="duplicate labeling function names"):
        parse_recipe(data)


def test_invalid_lf_regex_rejected(embedded_data):
    data = copy.deepcopy(embedded_data)
    data["labeling"]["functions"][0]["pattern"] = "(unclosed"
    with pytest.raises(RecipeError, match="invalid regex"):
        parse_recipe(data)


@pytest.mark.parametrize(
    ("text", "kind"), [("- a\n- b\n", "list"), ("just a string\n", "str"), ("", "NoneType")]
)
def test_non_mapping_yaml(write_recipe, text, kind):
    with pytest.raises(RecipeError, match=f"expected a mapping at the top level, got {kind}"):
        load_recipe(write_recipe(text=text))


def test_invalid_yaml(write_recipe):
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(write_recipe(text="name: [unclosed\n  iterations: 3\n"))


def test_unknown_recipe_name():
    with pytest.raises(RecipeError, match="unknown recipe 'no_such_recipe'") as e:
        load_recipe("no_such_recipe")
    assert "embedded" in str(e.value)  # lists the shipped recipes


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(str(tmp_path / "missing.yaml"))


def test_recipe_error_is_a_value_error():
    assert issubclass(RecipeError, ValueError)


def test_deep_merge():
    base = {"a": 1, "b": {"c": 2, "d": {"e": 3, "f": 4}}, "g": {"h": 5}}
    extra = {"b": {"d": {"e": 30}, "x": 9}, "g": 7, "a": {"new": 1}}
    merged = deep_merge(base, extra)
    assert merged == {"a": {"new": 1}, "b": {"c": 2, "d": {"e": 30, "f": 4}, "x": 9}, "g": 7}
    # the inputs are not mutated
    assert base == {"a": 1, "b": {"c": 2, "d": {"e": 3, "f": 4}}, "g": {"h": 5}}
    assert extra == {"b": {"d": {"e": 30}, "x": 9}, "g": 7, "a": {"new": 1}}
    assert deep_merge({}, {"a": {"b": 1}}) == {"a": {"b": 1}}
    assert deep_merge({"a": 1}, {}) == {"a": 1}
