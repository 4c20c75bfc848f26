"""`prefscale recipe schema`: every recipe field is described, the JSON schema and the markdown reference come
from `Recipe`, and README's recipe reference block is the generated one."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from prefscale.cli import REFERENCE_END, REFERENCE_START, main, recipe_reference_block
from prefscale.config.labeling import LFPack
from prefscale.config.recipe import Recipe
from prefscale.labeling.registry import LF_KINDS

README = Path(__file__).resolve().parents[2] / "README.md"
REGENERATE = "run `make recipe-reference` (or `prefscale recipe schema --markdown --update README.md`)"
CELL_SPLIT = re.compile(r"(?<!\\)\|")


def _properties(schema: Any, where: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every (location, property schema) in `schema`, recursively: nested subschemas and `$defs` alike."""
    if isinstance(schema, Mapping):
        for name, prop in (schema.get("properties") or {}).items():
            yield f"{where}.{name}", prop
        for key, value in schema.items():
            if key == "$defs":
                for name, sub in value.items():
                    yield from _properties(sub, name)
            elif key != "properties":
                yield from _properties(value, where)
        for name, prop in (schema.get("properties") or {}).items():
            yield from _properties(prop, f"{where}.{name}")
    elif isinstance(schema, list):
        for item in schema:
            yield from _properties(item, where)


def _run(capsys, *argv: str) -> str:
    assert main(["recipe", "schema", *argv]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("model", [Recipe, LFPack], ids=lambda m: m.__name__)
def test_every_schema_property_has_a_description(model):
    schema = model.model_json_schema()
    props = list(_properties(schema, model.__name__))
    missing = sorted({where for where, prop in props if not str(prop.get("description", "")).strip()})
    assert not missing, f"recipe fields without a description (add Field(description=...)): {missing}"
    # the walk reached the nested models and every labeling-function kind, not just the top level
    defs = set(schema["$defs"])
    assert {where.split(".")[0] for where, _ in props} >= defs | {model.__name__}
    if model is Recipe:
        assert {"DPOSettings", "LoraConfig", "EndpointSettings", "TaskClassifier", "TaskTypeRule"} <= defs
        kinds = {
            d["properties"]["kind"]["const"] for d in schema["$defs"].values() if "kind" in d["properties"]
        }
        assert kinds >= set(LF_KINDS)
        assert len(props) >= 200


def test_every_recipe_model_has_a_docstring():
    schema = Recipe.model_json_schema()
    bare = sorted(name for name, d in schema["$defs"].items() if not d.get("description", "").strip())
    assert not bare, f"recipe sections without a class docstring: {bare}"


def test_schema_prints_recipes_json_schema(capsys):
    schema = json.loads(_run(capsys))
    assert schema == json.loads(json.dumps(Recipe.model_json_schema()))
    assert list(schema["properties"]) == list(Recipe.model_fields)
    assert set(schema["required"]) == {n for n, f in Recipe.model_fields.items() if f.is_required()}
    for name, field in Recipe.model_fields.items():
        section = getattr(field.annotation, "model_fields", None)
        if section is not None:  # a section: its $defs entry lists the section's fields, described
            d = schema["$defs"][field.annotation.__name__]
            assert list(d["properties"]) == list(section), name
            assert d["additionalProperties"] is False, f"{name} must reject unknown keys"
        assert schema["properties"][name]["description"] == field.description


def _tables(markdown: str) -> dict[str, list[list[str]]]:
    """heading -> the rows of the table under it, each a list of 4 cells."""
    tables: dict[str, list[list[str]]] = {}
    heading = None
    for line in markdown.splitlines():
        if line.startswith("#### "):
            heading = line[5:]
            tables[heading] = []
        elif line.startswith("| ") and heading is not None:
            cells = [c.strip() for c in CELL_SPLIT.split(line)[1:-1]]
            assert len(cells) == 4, f"a row needs field, type, default, description: {line}"
            tables[heading].append(cells)
    return tables


def test_markdown_has_a_table_per_section_with_every_field(capsys):
    md = _run(capsys, "--markdown")
    tables = _tables(md)
    assert all(rows[0] == ["field", "type", "default", "description"] for rows in tables.values())
    top = {r[0] for r in tables["Top level"][1:]}
    assert top == {f"`{n}`" for n in Recipe.model_fields}
    for name, field in Recipe.model_fields.items():
        section = getattr(field.annotation, "model_fields", None)
        if section is None:
            continue
        rows = {r[0]: r for r in tables[f"`{name}`"][1:]}
        for sub in section:
            row = rows[f"`{name}.{sub}`"]
            assert row[3], f"{name}.{sub} has no description in the reference"
    for kind in LF_KINDS:
        assert any(h.endswith(f"with `kind: {kind}`") for h in tables), f"no table for kind {kind}"
    rows = {r[0]: r for t in tables.values() for r in t}
    assert rows["`dpo.beta`"][1:3] == ["number > 0", "`0.1`"] and "TRL `beta`" in rows["`dpo.beta`"][3]
    assert rows["`labeling`"][2] == "required"
    assert rows["`dpo.lora.r`"][2] == "`16`"
    assert rows["`generation.top_p`"][1] == "number in (0, 1]"
    assert rows["`reward.sources[].source`"][1] == r"`label_model \| reward_model \| pairrm`"
    assert "`labeling.functions[].pattern`" in rows
    assert "`labeling.model_functions[].question`" in rows
    assert any(h.startswith("LF pack files") for h in tables)
    outside_code = re.sub(r"`[^`]*`", "", md)
    assert not re.search(r"<(?!!--)[A-Za-z/]", outside_code), "a raw <tag> would vanish in the rendered page"


def test_readme_recipe_reference_is_the_generated_one(capsys):
    text = README.read_text(encoding="utf-8")
    assert text.count(REFERENCE_START) == text.count(REFERENCE_END) == 1
    generated = _run(capsys, "--markdown")
    assert recipe_reference_block(text) == generated, (
        f"README.md's recipe reference is out of date with the recipe schema: {REGENERATE}"
    )


def test_update_rewrites_only_the_marked_block(tmp_path, capsys):
    doc = tmp_path / "README.md"
    before, after = "# Title\n\nprose before\n\n", "\n\nprose after\n"
    doc.write_text(f"{before}{REFERENCE_START}\nstale table\n{REFERENCE_END}{after}", encoding="utf-8")
    assert "updated" in _run(capsys, "--markdown", "--update", str(doc))
    text = doc.read_text(encoding="utf-8")
    assert text.startswith(before + REFERENCE_START) and text.endswith(REFERENCE_END + after)
    assert recipe_reference_block(text) == _run(capsys, "--markdown")
    assert "already up to date" in _run(capsys, "--markdown", "--update", str(doc))
    assert doc.read_text(encoding="utf-8") == text


def test_update_without_markers_exits_2(tmp_path, capsys):
    doc = tmp_path / "README.md"
    doc.write_text("no markers here\n", encoding="utf-8")
    assert main(["recipe", "schema", "--markdown", "--update", str(doc)]) == 2
    assert "recipe-reference:start" in capsys.readouterr().err
    assert doc.read_text(encoding="utf-8") == "no markers here\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["recipe", "schema", "embedded"], "takes no recipe"),
        (["recipe", "schema", "--all"], "takes no recipe"),
        (["recipe", "schema", "--update", "README.md"], "give --markdown too"),
        (["recipe", "validate", "embedded", "--markdown"], "belong to `prefscale recipe schema`"),
    ],
)
def test_misused_schema_options_exit_2(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err
