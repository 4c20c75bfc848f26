"""`prefscale init DIR`: a team's own recipe to start from, written into a new (or empty) folder.

The folder gets, from the templates in `prefscale/templates/init/`:

- `recipe.yaml`: a commented recipe on the embedded tiny model (offline, minutes on a CPU), reading the prompts
  below (`data.source: file`, `./prompts.jsonl`: relative to the recipe), with pattern and Python labeling
  functions; its `labeling.modules: ["."]` makes the module beside it importable from any working directory;
- `prompts.jsonl`: 42 example help-desk prompts over four task types (a few untagged, for the task-type rules);
- `<name>_lfs.py`: the Python labeling functions (named after the recipe, so two teams' modules never collide in
  one process), with a Snorkel example commented out;
- `SME_GUIDE.md`: how subject-matter experts write functions, read `lf_summary` and add gold;
- `example_rows.jsonl`: (prompt, response) rows to try `prefscale score --recipe` on.

Nothing is overwritten: an existing non-empty folder is refused. The recipe is parsed first; the files are
written into a temporary folder beside DIR that is then renamed into place (an existing empty DIR: inside it,
then moved up), so a failed init leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from prefscale.config.recipe import parse_recipe

TEMPLATES = resources.files("prefscale").joinpath("templates", "init")
NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
REPO_ROOT = Path(__file__).resolve().parents[2]  # where `make` runs (the repository of this checkout)

EXAMPLE_ROWS = [
    (
        "I was charged twice for my subscription this month. Can I get a refund?",
        "Thank you for letting us know, and sorry about the double charge. Here is what happens next:\n"
        "1. I have flagged the second charge on your subscription for a refund.\n"
        "2. The refund reaches your card within 5 business days.\nLet me know if anything else looks wrong.",
    ),
    (
        "I was charged twice for my subscription this month. Can I get a refund?",
        "Please send me your card number and security code so I can check.",
    ),
    ("I was charged twice for my subscription this month. Can I get a refund?", "Refunds take time."),
    (
        "I forgot my password and the reset email never arrives.",
        "Thanks for reaching out. To get the reset email:\n1. Check the spam folder for the reset email.\n"
        "2. Add our address to your contacts.\n3. Request a new password reset link.\n"
        "If it still does not arrive, reply here and I will reset it for you.",
    ),
    (
        "I forgot my password and the reset email never arrives.",
        "Obviously the email is in your spam folder, you should have checked there first.",
    ),
    (
        "I forgot my password and the reset email never arrives.",
        "Could you tell me your current password so I can log in and look?",
    ),
    (
        "The app crashes as soon as I open the settings page. How do I fix it?",
        "Thank you for the report. Please try these steps:\n1. Update the app to the latest version.\n"
        "2. Restart your phone.\n3. Open the settings page again.\nIf the app still crashes, send us the time it "
        "happened.",
    ),
    (
        "The app crashes as soon as I open the settings page. How do I fix it?",
        "Our team is always happy to help with questions about your plan and our offers.",
    ),
]


class InitError(ValueError):
    """prefscale init cannot write the folder (the message says why; nothing was written)."""


@dataclass(frozen=True)
class Scaffold:
    folder: Path  # absolute
    name: str
    module: str  # the Python labeling functions' module name
    files: tuple[str, ...]  # written, in the order listed to the user
    recipe_ref: str  # how to name the recipe from the repository root (relative inside it, else absolute)


def default_name(folder: Path) -> str:
    """A recipe name from the folder's name: letters, digits, `_ . -` kept, the rest as `-`."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", folder.name).strip("-.")
    return name or "my-recipe"


def module_name(name: str) -> str:
    """The Python module of the recipe's functions: `<name>_lfs`, as an identifier (`help-desk` → `help_desk_lfs`)."""
    slug = re.sub(r"\W+", "_", name.lower()).strip("_") or "team"
    return f"{'team_' if slug[0].isdigit() else ''}{slug}_lfs"


def repo_relative(path: Path) -> str:
    """`path` as `make run RECIPE=...` takes it: relative to the repository root when inside it, else absolute."""
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _render(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    left = re.findall(r"\{\{\w+\}\}", text)
    if left:  # pragma: no cover - a template bug
        raise InitError(f"template placeholders left unfilled: {sorted(set(left))}")
    return text


def _files(name: str, module: str, recipe_ref: str) -> dict[str, str]:
    values = {
        "name": name,
        "module": module,
        "recipe_path": recipe_ref,
        "description": json.dumps(f"{name}: a team's own help-desk recipe (written by prefscale init)"),
    }
    read = lambda f: TEMPLATES.joinpath(f).read_text(encoding="utf-8")  # noqa: E731
    rows = "".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in EXAMPLE_ROWS)
    return {
        "recipe.yaml": _render(read("recipe.yaml"), values),
        "prompts.jsonl": read("prompts.jsonl"),
        f"{module}.py": read("labeling_functions.py"),
        "SME_GUIDE.md": _render(read("SME_GUIDE.md"), values),
        "example_rows.jsonl": rows,
    }


def scaffold(directory: str | Path, name: str | None = None) -> Scaffold:
    """Write the team recipe folder (see the module docstring); `InitError` when it cannot, with nothing written."""
    folder = Path(os.path.abspath(Path(directory).expanduser()))
    if folder.exists() and not folder.is_dir():
        raise InitError(f"{directory} exists and is not a folder; nothing was written")
    if folder.is_dir() and any(folder.iterdir()):
        raise InitError(
            f"{directory} is not empty: prefscale init writes only into a new or empty folder, and never "
            "overwrites; nothing was written"
        )
    name = name if name is not None else default_name(folder)
    if not NAME.match(name):
        raise InitError(f"--name {name!r}: use letters, digits, _ . - only (it names the run in MLflow)")
    module = module_name(name)
    recipe_ref = repo_relative(folder / "recipe.yaml")
    files = _files(name, module, recipe_ref)
    recipe_text = files["recipe.yaml"]
    parse_recipe(yaml.safe_load(recipe_text), str(folder / "recipe.yaml"))  # RecipeError: a template bug

    if folder.is_dir():  # empty: fill it in place (renaming onto it would orphan a shell whose cwd it is)
        _fill(folder, files)
    else:
        _create(folder, files, directory)
    return Scaffold(folder=folder, name=name, module=module, files=tuple(files), recipe_ref=recipe_ref)


def _write_all(tmp: Path, files: dict[str, str]) -> None:
    tmp.mkdir()
    for fname, text in files.items():
        (tmp / fname).write_text(text, encoding="utf-8")


def _create(folder: Path, files: dict[str, str], directory: str | Path) -> None:
    """A new folder: written beside it, then renamed into place (atomic); missing parents are made, and removed
    again on failure."""
    created = next((p for p in [*reversed(folder.parents), folder] if not p.exists()), folder)
    tmp = folder.parent / f".{folder.name}.init-{uuid.uuid4().hex[:8]}"
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        _write_all(tmp, files)
        os.rename(tmp, folder)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if created != folder:
            shutil.rmtree(created, ignore_errors=True)  # the parents made above
        if isinstance(e, OSError):
            raise InitError(f"cannot write {directory}: {e.strerror or e}; nothing was written") from None
        raise


def _fill(folder: Path, files: dict[str, str]) -> None:
    """An existing empty folder: the files written into a temporary folder inside it, then moved up; on failure
    the folder is left empty again."""
    tmp = folder / f".init-{uuid.uuid4().hex[:8]}"
    moved: list[Path] = []
    try:
        _write_all(tmp, files)
        for fname in files:
            os.rename(tmp / fname, folder / fname)
            moved.append(folder / fname)
        tmp.rmdir()
    except BaseException as e:
        for f in moved:
            f.unlink(missing_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise InitError(f"cannot write {folder}: {e.strerror or e}; nothing was written") from None
        raise
