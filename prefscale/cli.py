"""`prefscale` command line: recipes, the leaderboard, and the sub-commands in `prefscale.commands`."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from prefscale.commands import COMMAND_MODULES
from prefscale.config.base import RecipeError
from prefscale.config.labeling import LFPack
from prefscale.config.recipe import (
    RECIPES_DIR,
    Recipe,
    iteration_assets,
    load_recipe,
    recipe_input_problems,
    resolve_recipe_path,
)
from prefscale.progress import log_to_stderr
from prefscale.storage import default_home


def recipe_summary(recipe: Recipe) -> str:
    """One line: what a valid recipe will run."""
    policy = recipe.policy.source
    if recipe.policy.source == "pretrained":
        policy += f" {recipe.policy.model}"
    elif recipe.policy.gguf is not None:
        g = recipe.policy.gguf
        policy += f" {g.path or f'{g.package}/{g.file}'}"
    data = recipe.data.source
    if recipe.data.source == "file":
        data += f" {recipe.data.path}"
    elif recipe.data.source == "hf_dataset":
        data += f" {recipe.data.dataset}[{recipe.data.split}].{recipe.data.column}"
    its = recipe.iterations
    return (
        f"recipe {recipe.name!r} is valid: {its} iteration{'s' if its != 1 else ''}, "
        f"{recipe.generation.num_candidates} candidates per prompt, "
        f"{len(recipe.labeling.all_functions)} labeling functions"
        f"{f' ({n} model-backed)' if (n := len(recipe.labeling.model_functions)) else ''}, "
        f"policy {policy}, data {data} "
        f"({recipe.data.prompts_per_iteration} prompts per iteration, {recipe.data.heldout_size} held out), "
        f"reward {'+'.join(recipe.reward.names)}, pairs {recipe.pairs.strategy}, "
        f"{_training_summary(recipe)}, "
        f"judges {'+'.join(recipe.evaluation.all_judges)} vs {recipe.evaluation.reference}"
    )


def _training_summary(recipe: Recipe) -> str:
    method = recipe.training.method
    if method == "dpo":
        d = recipe.dpo
        return f"DPO {'LoRA' if d.lora else 'full'} {d.loss_type} beta {d.beta}"
    o = recipe.online
    return (
        f"{method.upper()} {'LoRA' if o.lora else 'full'} online ({o.num_generations} per prompt, {o.max_steps} "
        f"steps, KL beta {o.beta})"
    )


def validate_recipe(name_or_path: str) -> tuple[Path, Recipe]:
    """Load a recipe and check what it reads: local files and `labeling.modules` folders exist, the prompts file's
    rows are usable and fill every split, Python labeling functions import; `RecipeError` naming every bad field
    otherwise.

    Nothing here touches the network: hub ids are accepted as they are written.
    """
    from prefscale.data.prompts import prompt_pool_problems  # lazy: CLI start-up

    path = resolve_recipe_path(name_or_path)
    recipe = load_recipe(str(path))
    problems = [
        *recipe_input_problems(recipe),
        *prompt_pool_problems(recipe.data, recipe.iterations, recipe.seed, recipe.labeling.task_types),
        *recipe.labeling.import_problems(),
    ]
    if problems:
        raise RecipeError("\n".join([f"invalid recipe {path}:", *(f"  - {p}" for p in problems)]))
    return path, recipe


# --- the recipe reference (`prefscale recipe schema --markdown`) ---------------------------------------------

REFERENCE_START = "<!-- recipe-reference:start -->"
REFERENCE_END = "<!-- recipe-reference:end -->"
_HEADER = "| field | type | default | description |\n|---|---|---|---|"
_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")


def _cell(text: str) -> str:
    """Text for a table cell: one line, `|` escaped, and a `<` that could open an HTML tag escaped outside code
    spans (`<name>`; `<=` stays as written)."""
    parts = " ".join(str(text).split()).split("`")
    parts = [p if i % 2 else _TAG_START.sub("&lt;", p) for i, p in enumerate(parts)]
    return "`".join(parts).replace("|", "\\|")


def _first_paragraph(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def _value(v: Any) -> str:
    """A default as a recipe would write it: strings bare unless they need quotes, the rest as JSON."""
    quoted = json.dumps(v, ensure_ascii=False)
    if isinstance(v, str) and v and v == v.strip() and quoted[1:-1] == v:
        return v
    return quoted


def _bounds(s: Mapping[str, Any]) -> str:
    """A number's bounds: `>= 1`, `> 0`, `in (0, 1]`; empty without bounds."""
    lo = next(((b, s[k]) for k, b in (("minimum", "["), ("exclusiveMinimum", "(")) if k in s), None)
    hi = next(((s[k], b) for k, b in (("maximum", "]"), ("exclusiveMaximum", ")")) if k in s), None)
    if lo and hi:
        return f"in {lo[0]}{_value(lo[1])}, {_value(hi[0])}{hi[1]}"
    if lo:
        return f"{'>=' if lo[0] == '[' else '>'} {_value(lo[1])}"
    if hi:
        return f"{'<=' if hi[1] == ']' else '<'} {_value(hi[0])}"
    return ""


def _type(s: Mapping[str, Any]) -> str:
    """A JSON-schema type in words: `integer >= 1`, `` `sigmoid | ipo` ``, `list of string`, `object or null`."""
    if "$ref" in s:
        return "object"
    if "anyOf" in s:
        return " or ".join(_type(x) for x in s["anyOf"])
    if "oneOf" in s:
        kinds = s.get("discriminator", {}).get("mapping", {})
        return f"labeling function (`kind`: `{' | '.join(kinds)}`)" if kinds else "object"
    if "const" in s:
        return f"`{s['const']}`"
    if "enum" in s:
        return "`" + " | ".join(str(e) for e in s["enum"]) + "`"
    t = s.get("type")
    if t == "array":
        if "prefixItems" in s:
            items = [_type(x) for x in s["prefixItems"]]
            out = f"list of {len(items)} {items[0]}" if len(set(items)) == 1 else f"list: {', '.join(items)}"
        else:
            out = f"list of {_type(s['items'])}" if "items" in s else "list"
            if s.get("minItems"):
                out += f", at least {s['minItems']}"
        return out
    if t == "object":
        extra = s.get("additionalProperties")
        return f"mapping of string to {_type(extra)}" if isinstance(extra, dict) else "mapping"
    out = str(t or "any")
    if s.get("minLength"):
        out = "non-empty string" if s["minLength"] == 1 else f"string of at least {s['minLength']} characters"
    if "pattern" in s:
        out += f" matching `{s['pattern']}`"
    return f"{out} {_bounds(s)}".strip()


class _Reference:
    """Markdown tables for a JSON schema: one per section, nested objects flattened into dotted paths
    (`dpo.lora.r`, `reward.sources[].weight`), and one table per member of a discriminated union."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.defs: dict[str, Any] = dict(schema.get("$defs", {}))
        self.unions: list[tuple[str, list[str]]] = []  # (path, member $defs names), in the order met
        self.documented: set[str] = set()

    def model_of(self, s: Mapping[str, Any]) -> str | None:
        """The $defs name of a schema that is a model, or a model or null."""
        if "$ref" in s:
            return s["$ref"].rsplit("/", 1)[-1]
        refs = [x for x in s.get("anyOf", ()) if "$ref" in x]
        if len(refs) == 1 and all("$ref" in x or x.get("type") == "null" for x in s["anyOf"]):
            return refs[0]["$ref"].rsplit("/", 1)[-1]
        return None

    def rows(self, model: Mapping[str, Any], prefix: str, nested: bool = True) -> Iterator[str]:
        """A row per property of `model`, then (`nested`) its nested models' rows, each under its dotted path."""
        required = set(model.get("required", ()))
        props = dict(model.get("properties", {}))
        if "const" in props.get("kind", {}):  # a labeling function kind: its `kind` first
            props = {"kind": props.pop("kind"), **props}
        for name, prop in props.items():
            path = f"{prefix}{name}"
            sub = self.model_of(prop)
            items = prop.get("items", {}) if prop.get("type") == "array" else {}
            item_model = self.model_of(items) if items else None
            if "default" in prop:
                expanded = sub is not None and isinstance(prop["default"], dict)
                default = "see below" if expanded else f"`{_value(prop['default'])}`"
            else:
                default = "required" if name in required else "—"
            yield f"| `{path}` | {_cell(_type(prop))} | {_cell(default)} | {_cell(prop.get('description', ''))} |"
            if not nested:
                continue
            if sub:
                yield from self.rows(self.defs[sub], f"{path}.")
            elif item_model:
                yield from self.rows(self.defs[item_model], f"{path}[].")
            elif "oneOf" in items:
                self.unions.append((f"{path}[]", [self.model_of(x) or "" for x in items["oneOf"]]))

    def section(
        self, title: str, model: Mapping[str, Any], prefix: str, intro: str | None = None, nested: bool = True
    ) -> str:
        lines = [f"#### {title}", ""]
        about = _first_paragraph(intro if intro is not None else model.get("description"))
        if about:
            lines += [_cell(about).replace("\\|", "|"), ""]
        return "\n".join([*lines, _HEADER, *self.rows(model, prefix, nested)])

    def union_sections(self) -> Iterator[str]:
        while self.unions:
            path, members = self.unions.pop(0)
            for name in members:
                if name in self.documented:
                    continue
                self.documented.add(name)
                member = self.defs[name]
                kind = member.get("properties", {}).get("kind", {}).get("const", name)
                yield self.section(f"`{path}` with `kind: {kind}`", member, f"{path}.")


def recipe_reference_markdown() -> str:
    """The recipe field reference (README's recipe reference block): every field of `Recipe` with its type,
    default and description, from `Recipe.model_json_schema()`, then the LF pack file format."""
    schema = Recipe.model_json_schema()
    ref = _Reference(schema)
    props = schema["properties"]
    blocks = [ref.section("Top level", schema, "", nested=False)]
    for name, prop in props.items():
        model = ref.model_of(prop)
        if model is None:
            continue
        blocks.append(ref.section(f"`{name}`", ref.defs[model], f"{name}."))
        blocks.extend(ref.union_sections())
    pack = LFPack.model_json_schema()
    pack_ref = _Reference(pack)
    pack_ref.documented = ref.documented  # the labeling function kinds are documented above
    blocks.append(
        pack_ref.section(
            "LF pack files (`recipes/lf_packs/<name>.yaml`, named by `labeling.pack`)",
            pack,
            "",
            intro=f"{_first_paragraph(pack.get('description'))} Functions take the kinds of `labeling.functions`.",
        )
    )
    blocks.extend(pack_ref.union_sections())
    return "\n\n".join(blocks) + "\n"


def _reference_span(text: str) -> tuple[int, int]:
    """Where the recipe reference block of `text` (README.md) starts and ends, the markers excluded."""
    start, end = text.find(REFERENCE_START), text.find(REFERENCE_END)
    if start < 0 or end < start:
        raise ValueError(f"no {REFERENCE_START} ... {REFERENCE_END} block")
    return start + len(REFERENCE_START), end


def with_recipe_reference(text: str, reference: str) -> str:
    """`text` (README.md) with the block between the recipe-reference markers replaced by `reference`."""
    start, end = _reference_span(text)
    return f"{text[:start]}\n{reference}{text[end:]}"


def recipe_reference_block(text: str) -> str:
    """The block between the recipe-reference markers of `text`, as `with_recipe_reference` writes it."""
    start, end = _reference_span(text)
    return text[start:end].removeprefix("\n")


def _cmd_schema(args: argparse.Namespace) -> int:
    if args.recipe or args.all:
        print("error: `prefscale recipe schema` takes no recipe: it describes every recipe", file=sys.stderr)
        return 2
    if args.update and not args.markdown:
        print("error: --update rewrites a markdown block: give --markdown too", file=sys.stderr)
        return 2
    if not args.markdown:
        print(json.dumps(Recipe.model_json_schema(), indent=2))
        return 0
    reference = recipe_reference_markdown()
    if not args.update:
        sys.stdout.write(reference)
        return 0
    path = Path(args.update)
    try:
        text = path.read_text(encoding="utf-8")
        updated = with_recipe_reference(text, reference)
    except (OSError, ValueError) as e:
        print(f"error: {path}: {e}", file=sys.stderr)
        return 2
    if updated != text:
        path.write_text(updated, encoding="utf-8")
    print(f"{path}: recipe reference {'updated' if updated != text else 'already up to date'}")
    return 0


def _cmd_recipe(args: argparse.Namespace) -> int:
    if args.action == "schema":
        return _cmd_schema(args)
    if args.markdown or args.update:
        print("error: --markdown and --update belong to `prefscale recipe schema`", file=sys.stderr)
        return 2
    if args.all and args.recipe:
        print("error: give a recipe or --all, not both", file=sys.stderr)
        return 2
    if args.action in ("iterations", "iteration-assets"):
        if args.all or not args.recipe:
            print(f"error: `prefscale recipe {args.action}` needs one recipe", file=sys.stderr)
            return 2
        recipe = load_recipe(args.recipe)
        if args.action == "iterations":
            print(" ".join(str(i) for i in range(1, recipe.iterations + 1)))
        else:
            print(",".join(iteration_assets(recipe)))
        return 0
    if args.all:
        names = [str(p) for p in sorted(RECIPES_DIR.glob("*.yaml"))]
        if not names:
            print(f"error: no recipes in {RECIPES_DIR}", file=sys.stderr)
            return 2
    elif args.recipe:
        names = [args.recipe]
    else:
        print("error: give a recipe name or path, or --all", file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        try:
            _, recipe = validate_recipe(name)
        except RecipeError as e:
            failed += 1
            print(f"error: {e}", file=sys.stderr)
            continue
        print(recipe_summary(recipe))
    if failed and len(names) > 1:
        print(f"{failed} of {len(names)} recipes are invalid", file=sys.stderr)
    return 2 if failed else 0


# eval_leaderboard's rows of the embedded domain's SME rubric (`sme_rubric`; `rubric` in an old warehouse)
RUBRIC_LABELS = frozenset({"sme_rubric", "rubric"})


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from prefscale.report import text_table  # lazy: CLI start-up
    from prefscale.warehouse import WarehouseBusy, connect_read_only  # lazy: CLI start-up

    db = Path(args.home or default_home()) / "warehouse.duckdb"
    if not db.is_file():
        print(f"error: no warehouse at {db}; run `make run` first", file=sys.stderr)
        return 1
    try:
        con = connect_read_only(db)
    except WarehouseBusy as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    with con:
        # One row per (iteration, judge[, reference]); the AlpacaEval columns only where the warehouse has them
        # (a warehouse built before alpaca_eval_results existed does not).
        have = {r[0] for r in con.sql("select column_name from (describe eval_leaderboard)").fetchall()}
        extra = [
            f"round({c}, 3) as {c}" if c != "reference" else c
            for c in ("finished_adherence", "standard_error", "reference")
            if c in have
        ]
        # the length-controlled win rate beside the raw one: a gain that is only longer replies shows as a gap
        lc = ", round(lc_win_rate, 3) as lc_win_rate" if "lc_win_rate" in have else ""
        # the generator (base, dpo-iter<i>, dpo-iter<i>+bo<N>) where the warehouse has it: best-of-N rows sit
        # beside their plain checkpoint
        gen = ", generator" if "generator" in have else ""
        order = "iteration, judge" + (", reference" if "reference" in have else "") + gen
        board = con.sql(
            f"select iteration, judge{gen}, round(win_rate, 3) as win_rate{lc}, n_total, "
            "round(avg_length, 1) as avg_length, round(mean_adherence, 3) as mean_adherence, "
            "round(adherence_gain, 3) as adherence_gain, round(unfinished_rate, 3) as unfinished_rate"
            + "".join(f", {c}" for c in extra)
            + f" from eval_leaderboard order by {order}"
        ).pl()
        adh_cols = {r[0] for r in con.sql("select column_name from (describe eval_adherence)").fetchall()}
        if "generator" in adh_cols:
            adh = con.sql(
                "pivot (select generator, preference, round(rate, 2) as rate from eval_adherence) "
                "on generator using first(rate) order by preference"
            ).pl()
        else:
            adh = con.sql(
                "pivot (select iteration, preference, round(rate, 2) as rate from eval_adherence) "
                "on iteration using first(rate) order by preference"
            ).pl()
            adh = adh.rename({c: f"iter {c}" for c in adh.columns if c != "preference"})
    all_judges = sorted(set(board["judge"].to_list()))
    print(f"eval_leaderboard (held-out prompts; win rate by judge: {', '.join(all_judges) or 'none yet'})")
    print(text_table(board))
    rubric = [j for j in all_judges if j in RUBRIC_LABELS]
    if rubric:
        print(
            f"({rubric[0]}: the embedded Lumora domain's SME rubric, eval_results' judge; it knows only that "
            "domain's preferences, so on other prompts its rows show the loop running, not your team's verdict)"
        )
    judges = [j for j in all_judges if j not in RUBRIC_LABELS]
    if judges:
        print(
            f"({'also ' if rubric else ''}judged by {', '.join(judges)} in alpaca_eval_results: win rates on 0-1 "
            "against each row's reference; lc_win_rate = alpaca_eval's length_controlled_minimal)"
        )
    if "weak_supervision" in judges:
        print(
            "(weak_supervision: the recipe's own labeling functions and label model, the training reward itself)"
        )
    if "generator" in board.columns and board["generator"].str.contains(r"\+bo\d+$").any():
        print("(dpo-iter<i>+bo<N>: the checkpoint with best-of-N at inference, asset best_of_n)")
    print()
    by = "generator" if "generator" in adh_cols else "iteration"
    print(f"eval_adherence (share of held-out responses satisfying each SME preference, by {by})")
    print(text_table(adh))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prefscale", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser(
        "recipe",
        help="validate recipes (schema + the local files they read; no network), list a recipe's iterations "
        "or the assets one iteration materializes, or print the recipe schema",
    )
    r.add_argument("action", choices=["validate", "iterations", "iteration-assets", "schema"])
    r.add_argument("recipe", nargs="?", help="a recipe name from recipes/ or a YAML path")
    r.add_argument("--all", action="store_true", help="validate every recipes/*.yaml")
    r.add_argument(
        "--markdown",
        action="store_true",
        help="schema: print the field reference (one table per section: field, type, default, description) "
        "instead of the JSON schema",
    )
    r.add_argument(
        "--update",
        metavar="FILE",
        help="schema --markdown: rewrite the block between the recipe-reference markers of FILE (README.md)",
    )
    r.set_defaults(func=_cmd_recipe)
    lb = sub.add_parser("leaderboard", help="print eval_leaderboard and eval_adherence from the warehouse")
    lb.add_argument("--home", help="PREFSCALE_HOME (default: $PREFSCALE_HOME or ./.prefscale)")
    lb.set_defaults(func=_cmd_leaderboard)
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_to_stderr()  # progress of long steps on stderr; stdout stays the command's output
    try:
        return int(args.func(args))
    except RecipeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
