from __future__ import annotations

import duckdb
import pytest
import yaml

from prefscale.cli import build_parser, main
from prefscale.config.recipe import RECIPES_DIR


def test_recipe_validate_embedded(capsys):
    assert main(["recipe", "validate", "embedded"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "recipe 'embedded' is valid" in out
    assert "3 iterations" in out
    assert "5 candidates per prompt" in out
    assert "11 labeling functions (2 model-backed)" in out
    assert "policy embedded" in out


def test_recipe_iterations_embedded(capsys):
    assert main(["recipe", "iterations", "embedded"]) == 0
    out, err = capsys.readouterr()
    assert out == "1 2 3\n"
    assert err == ""


@pytest.mark.parametrize(("recipe", "best_of_n"), [("embedded", True), ("smollm2", False)])
def test_recipe_iteration_assets_follow_best_of_n(recipe, best_of_n, capsys):
    assert main(["recipe", "iteration-assets", recipe]) == 0
    assets = capsys.readouterr().out.strip().split(",")
    assert assets[0] == "prompts" and assets[-1] == "alpaca_eval_results"
    assert ("best_of_n" in assets) is best_of_n
    import definitions

    known = {k.path[-1] for k in definitions.defs.resolve_asset_graph().get_all_asset_keys()}
    assert set(assets) <= known


def test_recipe_iterations_from_path(tmp_path, capsys):
    data = yaml.safe_load((RECIPES_DIR / "embedded.yaml").read_text())
    data["iterations"] = 5
    path = tmp_path / "five.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["recipe", "iterations", str(path)]) == 0
    assert capsys.readouterr().out == "1 2 3 4 5\n"


def test_recipe_with_unknown_key_exits_2(tmp_path, capsys):
    data = yaml.safe_load((RECIPES_DIR / "embedded.yaml").read_text())
    data["generation"]["num_candidatez"] = 4
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))

    assert main(["recipe", "validate", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: invalid recipe ")
    assert str(path) in err
    assert "generation.num_candidatez: unknown key" in err


def test_unknown_recipe_name_exits_2(capsys):
    assert main(["recipe", "validate", "no_such_recipe"]) == 2
    err = capsys.readouterr().err
    assert "unknown recipe 'no_such_recipe'" in err
    assert "embedded" in err


def test_leaderboard_without_warehouse_exits_1(tmp_path, capsys):
    home = tmp_path / "empty_home"
    home.mkdir()
    assert main(["leaderboard", "--home", str(home)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert f"no warehouse at {home / 'warehouse.duckdb'}" in err


def test_leaderboard_uses_prefscale_home(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PREFSCALE_HOME", str(tmp_path / "envhome"))
    assert main(["leaderboard"]) == 1
    assert str((tmp_path / "envhome" / "warehouse.duckdb").resolve()) in capsys.readouterr().err


@pytest.fixture
def warehouse_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    with duckdb.connect(str(home / "warehouse.duckdb")) as con:
        con.execute(
            "create table eval_leaderboard (iteration integer, judge varchar, win_rate double, "
            "n_total integer, avg_length double, mean_adherence double, adherence_gain double, "
            "unfinished_rate double)"
        )
        con.execute(
            "insert into eval_leaderboard values "
            "(2, 'rubric', 0.71234, 60, 101.26, 0.6123, 0.2468, 0.05), "
            "(1, 'rubric', 0.61234, 58, 99.94, 0.4321, 0.0, 0.125)"
        )
        con.execute("create table eval_adherence (iteration integer, preference varchar, rate double)")
        con.execute(
            "insert into eval_adherence values "
            "(1, 'uses_list', 0.5), (2, 'uses_list', 0.9), "
            "(1, 'mentions_company', 0.333), (2, 'mentions_company', 0.777)"
        )
    return home


def test_leaderboard_prints_both_tables(warehouse_home, capsys):
    assert main(["leaderboard", "--home", str(warehouse_home)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()

    i = lines.index("eval_leaderboard (held-out prompts; win rate by judge: rubric)")
    header = lines[i + 1].split()
    assert header == [
        "iteration",
        "judge",
        "win_rate",
        "n_total",
        "avg_length",
        "mean_adherence",
        "adherence_gain",
        "unfinished_rate",
    ]
    # ordered by iteration, values rounded in SQL then formatted by text_table
    assert lines[i + 3].split() == ["1", "rubric", "0.612", "58", "99.900", "0.432", "0.000", "0.125"]
    assert lines[i + 4].split() == ["2", "rubric", "0.712", "60", "101.300", "0.612", "0.247", "0.050"]
    assert lines[i + 5].startswith("(rubric: the embedded Lumora domain's SME rubric")  # its rows are marked

    j = lines.index(
        "eval_adherence (share of held-out responses satisfying each SME preference, by iteration)"
    )
    assert j > i + 4
    assert lines[j + 1].split() == ["preference", "iter", "1", "iter", "2"]
    # ordered by preference, one column per iteration
    assert lines[j + 3].split() == ["mentions_company", "0.330", "0.780"]
    assert lines[j + 4].split() == ["uses_list", "0.500", "0.900"]


def test_leaderboard_shows_best_of_n_beside_the_checkpoint(tmp_path, capsys):
    home = tmp_path / "home"
    home.mkdir()
    with duckdb.connect(str(home / "warehouse.duckdb")) as con:
        con.execute(
            "create table eval_leaderboard (iteration integer, variant varchar, generator varchar, judge varchar, "
            "reference varchar, win_rate double, standard_error double, lc_win_rate double, n_total integer, "
            "avg_length double, mean_adherence double, adherence_gain double, unfinished_rate double)"
        )
        con.execute(
            "insert into eval_leaderboard values "
            "(1, 'best_of_n', 'dpo-iter1+bo4', 'sme_rubric', 'heldout_base', 0.8, null, 0.75, 60, 90, 0.7, 0.3, 0), "
            "(1, 'checkpoint', 'dpo-iter1', 'sme_rubric', 'heldout_base', 0.6, null, 0.58, 60, 95, 0.5, 0.1, 0), "
            "(0, 'base', 'base', 'sme_rubric', 'heldout_base', 0.5, null, 0.5, 60, 99, 0.4, 0.0, 0)"
        )
        con.execute(
            "create table eval_adherence (iteration integer, model varchar, variant varchar, generator varchar, "
            "preference varchar, rate double)"
        )
        con.execute(
            "insert into eval_adherence values (0, 'm', 'base', 'base', 'uses_list', 0.1), "
            "(1, 'm', 'checkpoint', 'dpo-iter1', 'uses_list', 0.5), "
            "(1, 'm', 'best_of_n', 'dpo-iter1+bo4', 'uses_list', 0.75)"
        )
    assert main(["leaderboard", "--home", str(home)]) == 0
    lines = capsys.readouterr().out.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("eval_leaderboard"))
    # the length-controlled win rate right beside the raw one
    assert lines[i + 1].split()[:5] == ["iteration", "judge", "generator", "win_rate", "lc_win_rate"]
    rows = [line.split()[:5] for line in lines[i + 3 : i + 6]]
    assert rows == [
        ["0", "sme_rubric", "base", "0.500", "0.500"],
        ["1", "sme_rubric", "dpo-iter1", "0.600", "0.580"],
        ["1", "sme_rubric", "dpo-iter1+bo4", "0.800", "0.750"],
    ]
    assert any("best-of-N at inference" in line for line in lines)
    j = lines.index(
        "eval_adherence (share of held-out responses satisfying each SME preference, by generator)"
    )
    assert lines[j + 1].split() == ["preference", "base", "dpo-iter1", "dpo-iter1+bo4"]
    assert lines[j + 3].split() == ["uses_list", "0.100", "0.500", "0.750"]


def test_unknown_subcommand_exits_nonzero(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_no_subcommand_exits_nonzero(capsys):
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2


def test_bad_recipe_action_exits_nonzero(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["recipe", "run", "embedded"])
    assert exc.value.code == 2
    assert "invalid choice: 'run'" in capsys.readouterr().err


def test_parser_prog_and_subcommands():
    parser = build_parser()
    assert parser.prog == "prefscale"
    args = parser.parse_args(["leaderboard", "--home", "/x"])
    assert (args.command, args.home) == ("leaderboard", "/x")
    args = parser.parse_args(["recipe", "validate", "embedded"])
    assert (args.command, args.action, args.recipe) == ("recipe", "validate", "embedded")
