"""The shape ARCHITECTURE.md promises: stages in pipeline order, imports pointing one way, no cycle, thin assets.

Every `from prefscale... import` counts, inside functions and under TYPE_CHECKING too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "prefscale"

# Pipeline order: a module may import its own layer and the layers before it.
LAYERS: dict[str, int] = {
    "config": 1,
    "data": 2,
    "policy": 2,
    "generation": 3,
    "labeling": 4,
    "rewards": 5,
    "pairs": 6,
    "training": 7,
    "evaluation": 8,
    "lineage": 9,
    "annotation": 9,
    "tools": 10,
    "commands": 11,
    "cli": 11,
}
STAGES = (
    "data",
    "policy",
    "generation",
    "labeling",
    "rewards",
    "pairs",
    "training",
    "evaluation",
    "lineage",
    "annotation",
)
# What a recipe is made of, so config may import it: the registries' name tables and the labeling-function
# declarations. They import only the foundation and each other.
DECLARATIONS = {
    "prefscale.generation.base",
    "prefscale.generation.registry",
    "prefscale.evaluation.judges.base",
    "prefscale.evaluation.judges.registry",
    "prefscale.pairs.registry",
    "prefscale.rewards.registry",
    "prefscale.labeling.registry",
    "prefscale.labeling.votes",
    "prefscale.labeling.regex_dialect",
    "prefscale.labeling.pattern_kinds",
    "prefscale.labeling.model_kinds",
    "prefscale.labeling.consensus_kind",
    "prefscale.labeling.reference_kind",
    "prefscale.labeling.instruction_kind",
    "prefscale.labeling.self_judge_kind",
    "prefscale.labeling.lm_scores",
    "prefscale.labeling.task_types",
    "prefscale.labeling.task_classifier",
}
LAZY_REASON = re.compile(r"#\s*lazy:\s*\S")


def _modules() -> dict[str, Path]:
    out = {}
    for f in CORE.rglob("*.py"):
        parts = f.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


MODULES = _modules()


def _resolve(name: str) -> str:
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(tree: ast.AST) -> list[tuple[ast.ImportFrom | ast.Import, str]]:
    """(node, imported prefscale module) for every prefscale import in a parsed file."""
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").startswith("prefscale")
        ):
            found += [(node, _resolve(f"{node.module}.{a.name}")) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(node, _resolve(a.name)) for a in node.names if a.name.startswith("prefscale.")]
    return found


TREES = {m: ast.parse(f.read_text(encoding="utf-8")) for m, f in MODULES.items()}
GRAPH = {
    m: {t for _, t in _imports(TREES[m]) if t != m and not m.startswith(t + ".")} for m, f in MODULES.items()
}


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0  # 0: the foundation (storage, compute, ...)


def test_no_import_cycle():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(GRAPH[m]):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(t) :], t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)


def test_imports_point_down_the_pipeline():
    upward = [
        f"{m} -> {t}"
        for m, targets in GRAPH.items()
        for t in targets
        if _layer(t) > _layer(m) and t not in DECLARATIONS
    ]
    assert not upward, "imports against the pipeline order:\n" + "\n".join(sorted(upward))


def test_declarations_stand_alone():
    above = [
        f"{m} -> {t}"
        for m in DECLARATIONS
        for t in GRAPH[m]
        if t not in DECLARATIONS and (_layer(t) > 0 or t.startswith("prefscale.config"))
    ]
    assert not above, "declarations must import only the foundation and each other:\n" + "\n".join(above)


def test_function_level_imports_name_their_reason():
    missing = []
    for m, f in MODULES.items():
        lines = f.read_text(encoding="utf-8").splitlines()
        tree = TREES[m]
        top = {id(n) for n in tree.body}
        checking = {
            id(x)
            for n in tree.body
            if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)
            for x in ast.walk(n)
        }
        for node, _ in _imports(tree):
            if id(node) in top or id(node) in checking:
                continue
            text = " ".join(lines[node.lineno - 1 : node.end_lineno])
            if not LAZY_REASON.search(text):
                missing.append(f"{f.relative_to(ROOT)}:{node.lineno}")
    assert not missing, "function-level prefscale imports without a `# lazy: <reason>`:\n" + "\n".join(
        missing
    )


def test_one_subpackage_per_stage_and_no_framework_in_the_core():
    for stage in STAGES:
        assert (CORE / stage / "__init__.py").is_file(), stage
    dagster = [
        str(f)
        for f in CORE.rglob("*.py")
        if re.search(r"^\s*(import|from) dagster(\.| |$)", f.read_text(), re.M)
    ]
    assert not dagster, (
        f"the core must not import dagster (dagster_pipes is the protocol, allowed): {dagster}"
    )


def test_module_sizes():
    def lines(f: Path) -> int:
        return len(f.read_text(encoding="utf-8").splitlines())

    big_core = {str(f.relative_to(ROOT)): lines(f) for f in CORE.rglob("*.py") if lines(f) > 600}
    big_assets = {
        str(f.relative_to(ROOT)): lines(f) for f in (ROOT / "assets").glob("*.py") if lines(f) > 200
    }
    assert not big_core, f"core modules over 600 lines: {big_core}"
    assert not big_assets, f"asset modules over 200 lines: {big_assets}"
