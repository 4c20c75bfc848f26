"""Artifacts under `PREFSCALE_HOME`: immutable, content-addressed versions per asset and partition.

Layout::

    artifacts/<asset>/<partition>/<version>/...   # never overwritten once published
    artifacts/<asset>/<partition>/<version>.sha256       # the full content digest of that version
    artifacts/<asset>/<partition>/current -> <version>   # atomic symlink to the latest version

A version is written into a temporary folder next to its final place and renamed into it only when complete,
so a failed step leaves no partial artifact and never touches versions already made. Writing identical
content again resolves to the same version (idempotent re-runs).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

UNPARTITIONED = "all"
CURRENT = "current"
MANIFEST = "_manifest.json"


def default_home() -> Path:
    """`PREFSCALE_HOME`, or `./.prefscale`, as an absolute path."""
    return Path(os.environ.get("PREFSCALE_HOME", ".prefscale")).expanduser().resolve()


@dataclass(frozen=True)
class ArtifactRef:
    asset: str
    partition: str
    version: str
    path: Path
    digest: str = ""  # full sha256 of the version's content (recorded at publish time)

    def file(self, name: str = "data.parquet") -> Path:
        return self.path / name


def file_sha256(path: Path) -> str:
    """sha256 of one file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_manifest(
    folder: Path, asset: str, partition: str, inputs: Sequence[ArtifactRef], params: Mapping[str, Any]
) -> None:
    files = {
        str(p.relative_to(folder)): file_sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {
        "asset": asset,
        "partition": partition,
        "files": files,
        "inputs": [
            {"asset": r.asset, "partition": r.partition, "version": r.version, "sha256": r.digest}
            for r in inputs
        ],
        "params": params,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")


def digest_folder(folder: Path) -> str:
    """sha256 over every file's relative path and bytes."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(folder)).encode())
        h.update(b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


class MissingArtifactError(FileNotFoundError):
    """An upstream artifact that has not been materialized yet."""


TEMP_PREFIX = ".tmp-"


def _host_prefix() -> str:
    """`.tmp-<host>-`: where this host's temporary entries start (the host name without `-`)."""
    host = "".join(c if c.isalnum() else "_" for c in socket.gethostname()) or "host"
    return f"{TEMP_PREFIX}{host}-"


def _temp_prefix() -> str:
    """`.tmp-<host>-<pid>`: a temporary entry names the process writing it, so a later writer can tell a
    live writer's entry from one a killed process left behind."""
    return f"{_host_prefix()}{os.getpid()}"


def process_alive(pid: int) -> bool:
    """Whether process `pid` of this machine still exists (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sweep_stale_temps(slot: Path) -> list[Path]:
    """Remove the temporary entries in `slot` that a dead process of this host left (a SIGKILL mid-write);
    entries of live processes and of other hosts (a shared volume) are kept. Returns what was removed."""
    if not slot.is_dir():
        return []
    prefix = _host_prefix()
    removed = []
    for entry in slot.iterdir():
        if not entry.name.startswith(prefix):
            continue
        pid_text = entry.name[len(prefix) :].split("-", 1)[0]
        if not pid_text.isdigit() or process_alive(int(pid_text)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


class ArtifactStore:
    """Versioned artifacts rooted at `<home>/artifacts`."""

    def __init__(self, home: Path | str) -> None:
        self.home = Path(home).expanduser().resolve()
        self.root = self.home / "artifacts"

    def _slot(self, asset: str, partition: str) -> Path:
        if not asset.replace("_", "").isalnum() or not partition.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"bad artifact name {asset!r}/{partition!r}")
        return self.root / asset / partition

    def publish_dir(
        self,
        asset: str,
        partition: str,
        build: Callable[[Path], None],
        inputs: Sequence[ArtifactRef] = (),
        params: Mapping[str, Any] | None = None,
    ) -> ArtifactRef:
        """Run `build(tmp_dir)`, then publish the folder as a version named after its content hash.

        The version also holds `_manifest.json`: each file's sha256, the upstream versions it was made from
        (`inputs`) and the settings that shaped it (`params`), so the whole chain can be audited later.
        """
        slot = self._slot(asset, partition)
        slot.mkdir(parents=True, exist_ok=True)
        sweep_stale_temps(slot)
        tmp = Path(tempfile.mkdtemp(prefix=f"{_temp_prefix()}-", dir=slot))
        try:
            build(tmp)
            if not any(tmp.iterdir()):
                raise ValueError(f"{asset}/{partition}: the build wrote nothing")
            _write_manifest(tmp, asset, partition, inputs, params or {})
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; published versions are readable like any file
            digest = digest_folder(tmp)
            version = digest[:16]
            final = slot / version
            try:
                if final.exists():
                    raise FileExistsError(final)
                os.rename(tmp, final)
            except OSError:
                if not final.is_dir():
                    raise
                shutil.rmtree(tmp)  # identical content already published (maybe concurrently): keep it
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        sidecar = slot / f"{version}.sha256"
        if not sidecar.exists():
            tmp_sidecar = slot / f"{_temp_prefix()}-{version}.sha256-{uuid.uuid4().hex}"
            tmp_sidecar.write_text(digest + "\n")
            os.replace(tmp_sidecar, sidecar)
        self._point_current(slot, version)
        return ArtifactRef(asset, partition, version, final, digest)

    def write_tables(
        self,
        asset: str,
        partition: str,
        tables: Mapping[str, pl.DataFrame],
        inputs: Sequence[ArtifactRef] = (),
        params: Mapping[str, Any] | None = None,
    ) -> ArtifactRef:
        """Publish one or more frames (`<name>.parquet`) as one version."""

        def build(d: Path) -> None:
            for name, df in tables.items():
                df.write_parquet(d / f"{name}.parquet", statistics=False)

        return self.publish_dir(asset, partition, build, inputs, params)

    def write_frame(
        self,
        asset: str,
        partition: str,
        df: pl.DataFrame,
        inputs: Sequence[ArtifactRef] = (),
        params: Mapping[str, Any] | None = None,
    ) -> ArtifactRef:
        return self.write_tables(asset, partition, {"data": df}, inputs, params)

    def manifest(self, ref: ArtifactRef) -> dict[str, Any]:
        """The version's `_manifest.json` (files, inputs, params)."""
        path = ref.path / MANIFEST
        if not path.is_file():
            raise MissingArtifactError(f"{ref.asset}[{ref.partition}]@{ref.version}: {path} is missing")
        return json.loads(path.read_text())

    def verify(self, ref: ArtifactRef) -> list[str]:
        """Problems with a stored version (missing or changed files, digest mismatch); empty when intact."""
        if not ref.path.is_dir():
            return [f"{ref.path}: version folder is missing"]
        try:
            files = self.manifest(ref)["files"]
        except (MissingArtifactError, json.JSONDecodeError, KeyError) as e:
            return [f"{ref.path / MANIFEST}: unreadable manifest ({e})"]
        problems = []
        for name, expected in sorted(files.items()):
            f = ref.path / name
            if not f.is_file():
                problems.append(f"{f}: missing")
            elif file_sha256(f) != expected:
                problems.append(f"{f}: content changed (sha256 differs from the manifest)")
        extra = (
            {str(p.relative_to(ref.path)) for p in ref.path.rglob("*") if p.is_file()}
            - set(files)
            - {MANIFEST}
        )
        problems += [f"{ref.path / name}: not part of the published version" for name in sorted(extra)]
        sidecar = ref.path.parent / f"{ref.version}.sha256"
        recorded = sidecar.read_text().strip() if sidecar.is_file() else ""
        if not problems and recorded and digest_folder(ref.path) != recorded:
            problems.append(
                f"{ref.path / MANIFEST}: manifest changed (folder digest differs from {sidecar.name})"
            )
        return problems

    def resolve(self, asset: str, partition: str, version: str) -> ArtifactRef:
        """A specific (possibly older) version."""
        slot = self._slot(asset, partition)
        sidecar = slot / f"{version}.sha256"
        digest = sidecar.read_text().strip() if sidecar.is_file() else ""
        return ArtifactRef(asset, partition, version, slot / version, digest)

    def _point_current(self, slot: Path, version: str) -> None:
        link = slot / CURRENT
        tmp_link = slot / f"{_temp_prefix()}-{CURRENT}-{uuid.uuid4().hex}"
        os.symlink(version, tmp_link)
        os.replace(tmp_link, link)

    def current(self, asset: str, partition: str) -> ArtifactRef:
        """The latest published version, or `MissingArtifactError` naming what to materialize."""
        slot = self._slot(asset, partition)
        link = slot / CURRENT
        if not link.is_symlink() or not link.resolve().is_dir():
            raise MissingArtifactError(
                f"artifact {asset!r} partition {partition!r} has not been materialized under {self.root}"
            )
        version = os.readlink(link)
        sidecar = slot / f"{version}.sha256"
        digest = sidecar.read_text().strip() if sidecar.is_file() else ""
        return ArtifactRef(asset, partition, version, slot / version, digest)

    def read_frame(self, asset: str, partition: str, name: str = "data") -> pl.DataFrame:
        return pl.read_parquet(self.current(asset, partition).file(f"{name}.parquet"))

    def write_measurements(self, ref: ArtifactRef, df: pl.DataFrame) -> Path:
        """Store what the run that made `ref` measured (timings): `<version>.measurements.parquet` beside it.

        Measurements are not content: two runs that produce the same version measure different times. So they
        stay out of the version folder and its hash, and the latest run's replace the previous ones (atomically).
        """
        slot = self._slot(ref.asset, ref.partition)
        target = slot / f"{ref.version}.measurements.parquet"
        tmp = slot / f"{_temp_prefix()}-{ref.version}.measurements-{uuid.uuid4().hex}.parquet"
        try:
            df.write_parquet(tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target

    def read_measurements(self, ref: ArtifactRef) -> pl.DataFrame | None:
        """The measurements stored for `ref` by `write_measurements`, or None."""
        path = self._slot(ref.asset, ref.partition) / f"{ref.version}.measurements.parquet"
        return pl.read_parquet(path) if path.is_file() else None

    def versions(self, asset: str, partition: str) -> list[str]:
        slot = self._slot(asset, partition)
        if not slot.is_dir():
            return []
        return sorted(
            p.name for p in slot.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
        )


def policy_for_iteration(store: ArtifactStore, iteration: int) -> ArtifactRef:
    """The policy iteration `iteration` starts from: the base for 1, else the previous DPO checkpoint."""
    if iteration < 1:
        raise ValueError(f"iteration must be >= 1, got {iteration}")
    if iteration == 1:
        return store.current("base_policy", UNPARTITIONED)
    try:
        return store.current("dpo_checkpoint", str(iteration - 1))
    except MissingArtifactError:
        raise MissingArtifactError(
            f"iteration {iteration} starts from dpo_checkpoint partition {iteration - 1}, which has not been "
            f"materialized yet: materialize iterations in order"
        ) from None
