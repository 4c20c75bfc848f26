"""`prefscale init DIR` scaffolds a team recipe that validates from any folder and scores through its own labeling
functions (`prefscale score --recipe`); recipe-relative `labeling.modules`; one-line errors for the bad cases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from prefscale.cli import main
from prefscale.config.recipe import load_recipe
from prefscale.tools import init_scaffold
from prefscale.tools.init_scaffold import module_name
from prefscale.tools.score_recipe import POOL, ROWS, RULES, tag_rows

FILES = {"recipe.yaml", "prompts.jsonl", "SME_GUIDE.md", "example_rows.jsonl"}


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def desk(tmp_path_factory) -> Path:
    """One scaffold for the tests that only read it (its module name is unique to this file)."""
    folder = tmp_path_factory.mktemp("teams") / "unit-desk"
    assert main(["init", str(folder)]) == 0
    return folder


def _answers(prompts: list[str]) -> list[dict]:
    """Two made-up replies per prompt: a careful one and a curt one that asks for a password."""
    rows = []
    for p in prompts:
        topic = " ".join(p.split()[:6])
        good = (
            f"Thank you for writing about this: {topic}. Here is what to do:\n1. Open the help page for it.\n"
            "2. Follow the steps there and restart the app.\nReply here if it is not solved."
        )
        rows += [{"prompt": p, "response": good}, {"prompt": p, "response": "Tell me your password."}]
    return rows


def test_init_writes_a_commented_recipe_prompts_module_and_guide(desk, capsys):
    names = {p.name for p in desk.iterdir()}
    assert names == FILES | {"unit_desk_lfs.py"}
    recipe = yaml.safe_load((desk / "recipe.yaml").read_text())
    assert recipe["name"] == "unit-desk"
    assert recipe["labeling"]["modules"] == ["."]
    assert recipe["data"] == {**recipe["data"], "source": "file", "path": "./prompts.jsonl"}
    callables = {f["callable"] for f in recipe["labeling"]["functions"] if f["kind"] == "python"}
    assert callables == {"unit_desk_lfs:keeps_secrets", "unit_desk_lfs:on_topic"}
    assert sum(f["kind"] != "python" for f in recipe["labeling"]["functions"]) >= 4
    assert (desk / "recipe.yaml").read_text().count("\n#") >= 10  # commented
    prompts = [json.loads(x) for x in (desk / "prompts.jsonl").read_text().splitlines()]
    assert len({p["prompt"] for p in prompts}) >= 40
    assert {p.get("task_type") for p in prompts} >= {
        "billing",
        "account",
        "troubleshooting",
        "complaint",
        None,
    }
    guide = (desk / "SME_GUIDE.md").read_text()
    for needed in ("annotations/", "lf_summary", "make run RECIPE=", "unit_desk_lfs.py", "dpo_checkpoint"):
        assert needed in guide
    assert "{{" not in guide + (desk / "recipe.yaml").read_text()


def test_init_prints_the_next_steps(tmp_path, capsys):
    assert main(["init", str(tmp_path / "desk"), "--name", "steps-desk"]) == 0
    out = capsys.readouterr().out
    assert "steps_desk_lfs.py" in out
    for cmd in ("prefscale recipe validate ", "prefscale score --recipe ", "make run RECIPE="):
        assert cmd + str(tmp_path / "desk" / "recipe.yaml") in out


def test_init_never_overwrites(desk, tmp_path, capsys):
    before = _tree(desk)
    assert main(["init", str(desk)]) == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "nothing was written" in err and len(err.splitlines()) == 1
    assert _tree(desk) == before
    (tmp_path / "file").write_text("x")
    assert main(["init", str(tmp_path / "file")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_init_fills_an_existing_empty_folder_in_place(tmp_path, monkeypatch):
    folder = tmp_path / "empty"
    folder.mkdir()
    inode = folder.stat().st_ino
    monkeypatch.chdir(folder)
    assert main(["init", ".", "--name", "in-place"]) == 0
    assert folder.stat().st_ino == inode  # the same folder: a shell standing in it still sees the files
    assert {p.name for p in folder.iterdir()} == FILES | {"in_place_lfs.py"}


def test_a_failed_init_leaves_nothing(tmp_path, monkeypatch, capsys):
    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(init_scaffold.os, "rename", broken)
    assert main(["init", str(tmp_path / "a" / "b" / "desk")]) == 2
    assert "No space left on device; nothing was written" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # the parents it made are gone too
    (tmp_path / "empty").mkdir()
    assert main(["init", str(tmp_path / "empty")]) == 2
    assert list((tmp_path / "empty").iterdir()) == []


def test_bad_names_are_refused(tmp_path, capsys):
    assert main(["init", str(tmp_path / "d"), "--name", "team desk!"]) == 2
    assert "--name 'team desk!'" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
    assert module_name("9-lives") == "team_9_lives_lfs" and module_name("Help.Desk") == "help_desk_lfs"


def test_the_scaffold_validates_from_another_folder_without_pythonpath(desk, tmp_path):
    """The newcomer's path: the installed console script, another working directory, no PYTHONPATH."""
    script = Path(sys.executable).with_name("prefscale")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [str(script), "recipe", "validate", str(desk / "recipe.yaml")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("recipe 'unit-desk' is valid: 2 iterations")


def test_modules_are_relative_to_the_recipe_file(tmp_path, monkeypatch):
    team = tmp_path / "team"
    (team / "lfs").mkdir(parents=True)
    (team / "lfs" / "relative_team_lfs.py").write_text("def always_high(row):\n    return 1\n")
    recipe = {
        "name": "relative",
        "labeling": {
            "modules": ["lfs"],
            "functions": [{"name": "always", "kind": "python", "callable": "relative_team_lfs:always_high"}],
        },
    }
    (team / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    monkeypatch.chdir(tmp_path)  # not the recipe's folder
    r = load_recipe("team/recipe.yaml")
    assert r.labeling.modules == (str(team / "lfs"),)
    assert str(team / "lfs") in sys.path
    assert r.labeling.functions[0].resolve()({"response": "x"}) == 1


def test_a_dot_relative_data_path_follows_the_recipe_when_its_folder_moves(tmp_path, monkeypatch, capsys):
    assert main(["init", str(tmp_path / "moving-desk")]) == 0
    moved = tmp_path / "elsewhere" / "desk"
    moved.parent.mkdir()
    (tmp_path / "moving-desk").rename(moved)
    monkeypatch.chdir(tmp_path)
    assert load_recipe(str(moved / "recipe.yaml")).data.path == str(moved / "prompts.jsonl")
    assert main(["recipe", "validate", str(moved / "recipe.yaml")]) == 0
    plain = (moved / "recipe.yaml").read_text().replace("path: ./prompts.jsonl", "path: prompts.jsonl")
    (tmp_path / "plain.yaml").write_text(plain)  # no ./: relative to the working directory, left as written
    assert load_recipe(str(tmp_path / "plain.yaml")).data.path == "prompts.jsonl"


def test_a_broken_module_is_one_line_for_all_its_functions(tmp_path, capsys):
    folder = tmp_path / "broken"
    assert main(["init", str(folder), "--name", "broken-desk"]) == 0
    with (folder / "broken_desk_lfs.py").open("a") as fh:
        fh.write("def oops(:\n")
    assert main(["recipe", "validate", str(folder)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[1:] == [
        "  - labeling functions 'keeps_secrets', 'on_topic': cannot import broken_desk_lfs (SyntaxError: "
        f"invalid syntax (broken_desk_lfs.py, line {len((folder / 'broken_desk_lfs.py').read_text().splitlines())}))"
    ]


def test_a_folder_with_a_recipe_yaml_names_its_recipe(desk, tmp_path, capsys):
    assert load_recipe(str(desk)).name == "unit-desk"  # `make run RECIPE=teams/unit-desk` works too
    assert main(["recipe", "validate", str(tmp_path)]) == 2
    assert f"recipe file not found: {tmp_path} is a folder without a recipe.yaml" in capsys.readouterr().err


def test_a_missing_modules_folder_is_one_line(tmp_path, capsys):
    recipe = {
        "name": "nofolder",
        "labeling": {
            "modules": ["lfs"],
            "functions": [{"name": "team_lf", "kind": "python", "callable": "nofolder_lfs:check"}],
        },
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["recipe", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"labeling.modules: folder not found: {tmp_path / 'lfs'}" in err
    assert "cannot import" not in err  # the folder is the one failure, said once
    assert "Traceback" not in err
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "q", "response": "a"}) + "\n")
    argv = ["score", "--recipe", str(path), "--input", str(rows), "--output", str(tmp_path / "out.jsonl")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "labeling.modules: folder not found" in err
    assert not (tmp_path / "out.jsonl").exists()


def test_score_with_the_scaffolds_recipe_writes_rewards(desk, tmp_path, capsys):
    prompts = [json.loads(x)["prompt"] for x in (desk / "prompts.jsonl").read_text().splitlines()]
    rows = _answers(prompts)
    src, out = tmp_path / "rows.jsonl", tmp_path / "scored.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert (
        main(["score", "--recipe", str(desk / "recipe.yaml"), "--input", str(src), "--output", str(out)]) == 0
    )
    stdout = capsys.readouterr().out
    assert f"scored {len(rows)} rows with label_model (recipe unit-desk: 7 labeling functions)" in stdout
    assert f"{len(rows)} from {POOL}" in stdout  # every prompt is the recipe's own
    assert "keeps_secrets" in stdout and "estimated_accuracy" in stdout
    scored = [json.loads(x) for x in out.read_text().splitlines()]
    assert [{k: v for k, v in s.items() if k != "reward"} for s in scored] == rows
    good, curt = [s["reward"] for s in scored[::2]], [s["reward"] for s in scored[1::2]]
    assert all(0.0 <= r <= 1.0 for r in good + curt)
    assert sum(g > c for g, c in zip(good, curt, strict=True)) == len(good)


def test_task_types_from_the_rows_then_the_recipes_prompts_then_its_rules(desk):
    recipe = load_recipe(str(desk / "recipe.yaml"))
    billing = "I was charged twice for my subscription this month. Can I get a refund?"
    types, origins, notes = tag_rows(
        recipe,
        [billing, billing.upper(), "Where is my refund for last month?", "Tell me a joke", billing],
        [None, None, None, None, "complaint"],
    )
    assert types.to_list() == ["billing", "billing", "billing", "general", "complaint"]
    assert origins == {POOL: 2, RULES: 2, ROWS: 1} and notes == []


def test_score_recipe_refuses_an_lf_pack_and_stray_options(desk, tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "q", "response": "a"}) + "\n")
    io = ["--input", str(rows), "--output", str(tmp_path / "o.jsonl")]
    recipe = str(desk / "recipe.yaml")
    for argv, said in [
        (["--recipe", recipe, "--lf-pack", "helpfulness"], "--recipe and --lf-pack cannot be combined"),
        (["--recipe", recipe, "--reward", "pairrm"], "--recipe and --reward pairrm cannot be combined"),
        (["--base-policy", str(tmp_path)], "--base-policy and --skip-model-lfs go with --recipe"),
    ]:
        assert main(["score", *argv, *io]) == 2
        err = capsys.readouterr().err
        assert said in err and err.count("\n") == 1
    assert not (tmp_path / "o.jsonl").exists()


def test_model_backed_functions_need_the_base_policy_or_are_skipped_by_name(tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "".join(
            json.dumps({"prompt": f"My router keeps restarting, take {i}", "response": r}) + "\n"
            for i, r in enumerate(["Thank you! 1. Unplug it.\n2. Wait.", "Why do you ask?"] * 3)
        )
    )
    io = ["--input", str(rows), "--output", str(tmp_path / "o.jsonl")]
    assert main(["score", "--recipe", "embedded", *io]) == 2
    err = capsys.readouterr().err
    assert "llm_no_question_back, base_perplexity run on the base policy: pass --base-policy DIR" in err
    assert err.count("\n") == 1
    assert main(["score", "--recipe", "embedded", *io, "--base-policy", str(tmp_path)]) == 2
    assert "not a model folder (no config.json)" in capsys.readouterr().err
    assert main(["score", "--recipe", "embedded", "--skip-model-lfs", *io]) == 0
    out = capsys.readouterr().out
    assert "note: left out the model-backed functions llm_no_question_back, base_perplexity" in out
    assert "(recipe embedded: 9 labeling functions)" in out


def test_model_backed_functions_run_on_the_given_base_policy(tmp_path, capsys):
    from tests.integration.small_home import tiny_policy

    policy = tiny_policy(tmp_path / "policy")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "".join(
            json.dumps({"prompt": "My bill is wrong", "response": r}) + "\n"
            for r in ["Thank you, Lumora will fix it.", "no", "1. Check.\n2. Pay."]
        )
    )
    argv = ["score", "--recipe", "embedded", "--base-policy", str(policy)]
    assert main([*argv, "--input", str(rows), "--output", str(tmp_path / "o.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "(recipe embedded: 11 labeling functions)" in out and "base_perplexity" in out
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 3
