"""Bad inputs at every boundary, one row each: the error names the bad thing, the exit code is non-zero, and
nothing is written or lost (the case's folder holds exactly what it held before, byte for byte).

A case builds its inputs in a fresh folder and returns the command line; the command runs through
`prefscale.cli.main` (the `prefscale` entry point's code path, in this process).
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from prefscale.cli import main
from prefscale.config.recipe import RECIPES_DIR

EMBEDDED = yaml.safe_load((RECIPES_DIR / "embedded.yaml").read_text())
ROWS = [
    {"prompt": f"How do I reset my router, take {i}?", "response": f"Unplug it, wait {i} s."}
    for i in range(4)
]


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Path], list[str]]  # writes the inputs under the folder, returns the argv
    expect: str  # a piece of the error message (stderr)
    code: int = 2


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _recipe(d: Path, change: Callable[[dict], None]) -> list[str]:
    data = copy.deepcopy(EMBEDDED)
    change(data)
    return ["recipe", "validate", str(_write(d / "recipe.yaml", yaml.safe_dump(data)))]


def _set(path: str, value: object) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return change


def _own_prompts(data: dict) -> Callable[[dict], None]:
    """The embedded recipe on prompts of its own: `data` replaced, and a primary judge other than the rubric
    (which knows only the embedded domain)."""

    def change(r: dict) -> None:
        r.update(data=data)
        r["evaluation"].update(judge="local_llm", judges=["local_llm", "weak_supervision"])

    return change


def _prompts_file(name: str, content: str | bytes, **data: object) -> Callable[[Path], list[str]]:
    """A recipe reading `content` as its prompts file (small splits, so a good file of 12 prompts would do)."""

    def build(d: Path) -> list[str]:
        f = _write(d / name, content)
        spec = {"source": "file", "path": str(f), "prompts_per_iteration": 3, "heldout_size": 2, **data}
        return _recipe(d, _own_prompts(spec))

    return build


def _add_lf(lf: dict) -> Callable[[Path], list[str]]:
    return lambda d: _recipe(d, lambda r: r["labeling"]["functions"].append(lf))


def _score(rows_text: str | bytes, *extra: str, name: str = "in.jsonl") -> Callable[[Path], list[str]]:
    def build(d: Path) -> list[str]:
        f = _write(d / name, rows_text)
        return ["score", "--input", str(f), "--output", str(d / "out.jsonl"), *extra]

    return build


def _alpacaeval(content: str | bytes, name: str = "annotations.json") -> Callable[[Path], list[str]]:
    return lambda d: ["alpacaeval", "--annotations", str(_write(d / name, content)), "--no-lc"]


GOOD_PROMPTS = _jsonl([{"prompt": f"question number {i}?"} for i in range(12)])
ANNOTATION = {
    "instruction": "Say hi",
    "output_1": "hi",
    "output_2": "hello",
    "generator_2": "model",
    "preference": 2.0,
}

CASES = [
    # --- recipes -------------------------------------------------------------------------------------------
    Case("recipe-not-found", lambda d: ["recipe", "validate", str(d / "missing.yaml")], "missing.yaml"),
    Case(
        "recipe-yaml-syntax",
        lambda d: ["recipe", "validate", str(_write(d / "r.yaml", "name: x\ndata: [unclosed\n"))],
        "r.yaml",
    ),
    Case(
        "recipe-not-utf8",
        lambda d: ["recipe", "validate", str(_write(d / "r.yaml", b"name: x\n\xff\n"))],
        "not UTF-8 text (line 2)",
    ),
    Case(
        "recipe-top-level-list",
        lambda d: ["recipe", "validate", str(_write(d / "r.yaml", "- a\n- b\n"))],
        "expected a mapping",
    ),
    Case("recipe-unknown-key", lambda d: _recipe(d, _set("generation.num_candidate", 5)), "unknown key"),
    Case(
        "recipe-wrong-type",
        lambda d: _recipe(d, _set("generation.num_candidates", "five")),
        "generation.num_candidates",
    ),
    Case("recipe-one-candidate", lambda d: _recipe(d, _set("generation.num_candidates", 1)), "num_candidates"),
    Case("recipe-unknown-pair-strategy", lambda d: _recipe(d, _set("pairs.strategy", "nope")), "pairs.strategy"),
    Case("recipe-zero-iterations", lambda d: _recipe(d, _set("iterations", 0)), "iterations"),
    Case(
        "recipe-file-source-without-path",
        lambda d: _recipe(d, lambda r: r.update(data={"source": "file"})),
        "data.path is required",
    ),
    Case(
        "recipe-prompts-file-missing",
        lambda d: _recipe(d, _own_prompts({"source": "file", "path": str(d / "nope.jsonl")})),
        "prompts file not found",
    ),
    Case(
        "recipe-own-prompts-judged-by-the-embedded-rubric",
        lambda d: _recipe(d, lambda r: r.update(data={"source": "file", "path": str(d / "p.jsonl")})),
        "evaluation.judge rubric scores the embedded Lumora demo domain only",
    ),
    Case(
        "recipe-pool-too-large-for-embedded",
        lambda d: _recipe(d, _set("data.pool_size", 100_000)),
        "over the 14850 distinct prompts",
    ),
    # --- prompts files (read by `recipe validate`) ------------------------------------------------------------
    Case("prompts-malformed-jsonl", _prompts_file("p.jsonl", '{"prompt": "a"}\n{"prompt": \n'), "line 2: invalid JSON"),
    Case("prompts-empty", _prompts_file("p.jsonl", ""), "is empty"),
    Case("prompts-blank-lines-only", _prompts_file("p.jsonl", "\n \n"), "is empty"),
    Case("prompts-not-utf8", _prompts_file("p.jsonl", b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n'), "not UTF-8 text: line 2"),
    Case(
        "prompts-duplicates-only",
        _prompts_file("p.jsonl", _jsonl([{"prompt": "Same question?"}, {"prompt": " same  QUESTION? "}] * 10)),
        "has 1 distinct prompts",
    ),
    Case(
        "prompts-one-megabyte-prompt",
        _prompts_file("p.jsonl", GOOD_PROMPTS + _jsonl([{"prompt": "x" * 1_048_576}])),
        "row 13 has 1,048,576 characters, over data.max_prompt_chars",
    ),
    Case(
        "prompts-first-row-without-prompt",
        _prompts_file("p.jsonl", _jsonl([{"text": "q?"}, *({"prompt": f"q{i}?"} for i in range(12))])),
        "line 1: no 'prompt' field",
    ),
    Case("prompts-wrong-column", _prompts_file("p.jsonl", _jsonl([{"text": "q?"}] * 3)), "no 'prompt' column"),
    Case(
        "prompts-non-text-prompt",
        _prompts_file("p.jsonl", _jsonl([{"prompt": "ok?"}, {"prompt": 42}])),
        "line 2: 'prompt' must be text, got int",
    ),
    Case("prompts-array-line", _prompts_file("p.jsonl", '{"prompt": "ok?"}\n["a"]\n'), "line 2: expected a JSON object"),
    Case("prompts-unsupported-suffix", _prompts_file("p.txt", "a question?\n"), "unsupported format '.txt'"),
    Case("prompts-csv-wrong-column", _prompts_file("p.csv", "question\nwhat?\n"), "no 'prompt' column"),
    # --- labeling functions ------------------------------------------------------------------------------------
    Case(
        "lf-bad-regex",
        _add_lf({"name": "broken", "kind": "regex", "pattern": "(unclosed", "vote": "high"}),
        "invalid regex '(unclosed': unclosed group at character 1",
    ),
    Case(
        "lf-python-missing-module",
        _add_lf({"name": "team_lf", "kind": "python", "callable": "no_such_team_module:check"}),
        "labeling function 'team_lf': cannot import no_such_team_module:check (ModuleNotFoundError",
    ),
    Case(
        "lf-python-missing-function",
        _add_lf({"name": "team_lf", "kind": "python", "callable": "json:no_such_function"}),
        "cannot import json:no_such_function (AttributeError",
    ),
    Case(
        "lf-python-not-callable",
        _add_lf({"name": "team_lf", "kind": "python", "callable": "json:__version__"}),
        "is not callable",
    ),
    Case(
        "lf-python-bad-callable-syntax",
        _add_lf({"name": "team_lf", "kind": "python", "callable": "not a callable"}),
        "python.callable: String should match pattern",
    ),
    Case(
        "lf-duplicate-name",
        _add_lf({"name": "mentions_company", "kind": "regex", "pattern": "x", "vote": "high"}),
        "duplicate labeling function names: ['mentions_company']",
    ),
    Case("lf-unknown-kind", _add_lf({"name": "x", "kind": "telepathy"}), "Input tag 'telepathy' found using 'kind'"),
    Case(
        "lf-modules-folder-missing",
        lambda d: _recipe(d, lambda r: r["labeling"].update(modules=["team_lfs"])),
        "labeling.modules: folder not found:",
    ),
    # --- DPO settings ------------------------------------------------------------------------------------------
    Case("dpo-negative-beta", lambda d: _recipe(d, _set("dpo.beta", -0.1)), "dpo.beta"),
    Case("dpo-unknown-loss", lambda d: _recipe(d, _set("dpo.loss_type", "magic")), "dpo.loss_type"),
    Case("dpo-zero-learning-rate", lambda d: _recipe(d, _set("dpo.learning_rate", 0)), "dpo.learning_rate"),
    # --- prefscale score ---------------------------------------------------------------------------------------
    Case("score-input-missing", lambda d: ["score", "--input", str(d / "no.jsonl"), "--output", str(d / "o.jsonl")], "no.jsonl: cannot read it (No such file"),
    Case("score-malformed-row", _score(_jsonl(ROWS[:2]) + "{oops\n"), "line 3"),
    Case("score-missing-response", _score(_jsonl([*ROWS[:2], {"prompt": "q"}])), "line 3"),
    Case(
        "score-output-is-input",
        lambda d: ["score", "--input", str(_write(d / "in.jsonl", _jsonl(ROWS))), "--output", str(d / "in.jsonl")],
        "is the input file",
    ),
    Case("score-unknown-reward", _score(_jsonl(ROWS), "--reward", "vibes"), "invalid choice: 'vibes'"),
    Case("score-reward-model-without-model", _score(_jsonl(ROWS), "--reward", "reward_model"), "--model"),
    Case("score-eval-pairs-missing-dir", lambda d: ["score", "--eval-alpaca-pairs", str(d / "none")], "none: no such folder"),
    Case("score-recipe-with-lf-pack", _score(_jsonl(ROWS), "--recipe", "embedded", "--lf-pack", "helpfulness"), "--recipe and --lf-pack cannot be combined"),
    Case("score-recipe-model-lfs-without-policy", _score(_jsonl(ROWS), "--recipe", "embedded"), "run on the base policy: pass --base-policy DIR"),
    # --- prefscale init ----------------------------------------------------------------------------------------
    Case("init-into-a-non-empty-folder", lambda d: ["init", str(_write(d / "team" / "notes.txt", "ours").parent)], "is not empty"),
    # --- prefscale alpacaeval ----------------------------------------------------------------------------------
    Case("alpacaeval-missing-file", lambda d: ["alpacaeval", "--annotations", str(d / "a.json")], "a.json"),
    Case("alpacaeval-malformed-json", _alpacaeval('[{"instruction": "x",'), "annotations.json"),
    Case(
        "alpacaeval-preference-out-of-range",
        _alpacaeval(json.dumps([{**ANNOTATION, "preference": 7.0}])),
        "preference",
    ),
    Case("alpacaeval-bad-gzip", _alpacaeval(b"not gzip at all", name="a.jsonl.gz"), "a.jsonl.gz: named .gz but not a gzip file"),
    Case(
        "alpacaeval-no-preference",
        _alpacaeval(gzip.compress(_jsonl([{k: v for k, v in ANNOTATION.items() if k != "preference"}]).encode()), name="a.jsonl.gz"),
        "preference",
    ),
    # --- prefscale audit / train-dpo ----------------------------------------------------------------------------
    Case("audit-no-checkpoint", lambda d: ["audit", "3", "--home", str(d / "home")], "'dpo_checkpoint' partition '3' has not been materialized"),
    Case("audit-bad-model-uri", lambda d: ["audit", "models:/nope/1", "--home", str(d / "home")], "models:/nope/1: no MLflow tracking store"),
    Case(
        "train-dpo-missing-policy",
        lambda d: [
            "train-dpo", "--policy", str(d / "no-policy"), "--pairs", str(d / "p.parquet"), "--out", str(d / "out"),
        ],
        "no-policy: not a model folder",
    ),
    Case(
        "train-dpo-bad-settings-json",
        lambda d: [
            "train-dpo", "--policy", str(d), "--pairs", str(d / "p.parquet"), "--out", str(d / "out"),
            "--settings-json", "{not json",
        ],
        "--settings-json",
    ),
]  # fmt: skip


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_the_table_holds_at_least_forty_cases():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_is_refused_by_name_and_changes_nothing(case: Case, tmp_path, capsys):
    argv = case.build(tmp_path)
    before = _snapshot(tmp_path)
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    err = capsys.readouterr().err
    assert code == case.code, f"exit {code}, stderr:\n{err}"
    assert case.expect in err, f"expected {case.expect!r} in:\n{err}"
    assert "Traceback" not in err
    assert _snapshot(tmp_path) == before, "the command wrote or changed files"
