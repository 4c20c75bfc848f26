from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

from prefscale.storage import (
    CURRENT,
    UNPARTITIONED,
    ArtifactRef,
    ArtifactStore,
    MissingArtifactError,
    default_home,
    digest_folder,
    policy_for_iteration,
)


@pytest.fixture
def store(tmp_path):
    return ArtifactStore(tmp_path / "home")


def _slot_entries(store: ArtifactStore, asset: str, partition: str) -> list[str]:
    """Entries of a slot, digest sidecars (`<version>.sha256`) left out."""
    return sorted(n for n in os.listdir(store.root / asset / partition) if not n.endswith(".sha256"))


def _write_marker(text: str):
    def build(d: Path) -> None:
        (d / "marker.txt").write_text(text)

    return build


# --- write_frame / write_tables / read_frame / current / versions ------------------------------------------


def test_write_frame_roundtrip_and_layout(store, tmp_path):
    df = pl.DataFrame({"x": [1, 2, 3], "y": ["a", "b", "c"]})
    ref = store.write_frame("pool", UNPARTITIONED, df)

    assert isinstance(ref, ArtifactRef)
    assert (ref.asset, ref.partition) == ("pool", "all")
    assert store.root == (tmp_path / "home").resolve() / "artifacts"
    assert ref.path == store.root / "pool" / "all" / ref.version
    assert ref.path.is_dir()
    assert sorted(p.name for p in ref.path.iterdir()) == ["_manifest.json", "data.parquet"]
    assert ref.file() == ref.path / "data.parquet"
    # the version is the first 16 hex digits of the content hash of the published folder
    assert len(ref.version) == 16
    assert ref.digest.startswith(ref.version)
    assert len(ref.digest) == 64
    assert ref.digest == digest_folder(ref.path)

    assert store.read_frame("pool", "all").equals(df)
    assert store.versions("pool", "all") == [ref.version]


def test_identical_content_twice_is_one_version(store):
    df = pl.DataFrame({"x": [1, 2]})
    a = store.write_frame("pool", "all", df)
    b = store.write_frame("pool", "all", pl.DataFrame({"x": [1, 2]}))

    assert a.version == b.version
    assert a.digest == b.digest
    assert a.path == b.path
    assert store.versions("pool", "all") == [a.version]
    # only the version dir and the `current` link: no leftover temporary folders or links
    assert _slot_entries(store, "pool", "all") == sorted([a.version, CURRENT])
    assert store.current("pool", "all").version == a.version


def test_measurements_live_beside_the_version_and_leave_it_intact(store):
    a = store.write_frame("cands", "1", pl.DataFrame({"candidate_id": ["a", "b"], "text": ["x", "y"]}))
    assert store.read_measurements(a) is None
    store.write_measurements(a, pl.DataFrame({"candidate_id": ["a", "b"], "latency_s": [0.1, 0.2]}))
    # a second run with the same content: one version, its latest timings
    b = store.write_frame("cands", "1", pl.DataFrame({"candidate_id": ["a", "b"], "text": ["x", "y"]}))
    store.write_measurements(b, pl.DataFrame({"candidate_id": ["a", "b"], "latency_s": [0.3, 0.4]}))
    assert b.version == a.version and store.versions("cands", "1") == [a.version]
    assert store.read_measurements(b)["latency_s"].to_list() == [0.3, 0.4]
    assert store.verify(b) == []
    assert sorted(p.name for p in (store.root / "cands" / "1").iterdir() if p.name.startswith(".")) == []


def test_different_content_is_new_version_and_old_one_stays_intact(store):
    old_df = pl.DataFrame({"x": [1, 2]})
    new_df = pl.DataFrame({"x": [1, 3]})
    old = store.write_frame("pool", "all", old_df)
    old_digest = digest_folder(old.path)
    new = store.write_frame("pool", "all", new_df)

    assert new.version != old.version
    assert store.versions("pool", "all") == sorted([old.version, new.version])
    assert _slot_entries(store, "pool", "all") == sorted([old.version, new.version, CURRENT])
    # the older version is untouched and still readable by path
    assert old.path.is_dir()
    assert digest_folder(old.path) == old_digest
    assert pl.read_parquet(old.file()).equals(old_df)
    # `current` now resolves to the newest write
    assert store.current("pool", "all").version == new.version
    assert store.read_frame("pool", "all").equals(new_df)


def test_current_symlink_points_at_latest(store):
    a = store.write_frame("pool", "all", pl.DataFrame({"x": [1]}))
    link = store.root / "pool" / "all" / CURRENT
    assert link.is_symlink()
    assert os.readlink(link) == a.version  # relative link: the home can be moved

    b = store.write_frame("pool", "all", pl.DataFrame({"x": [2]}))
    assert os.readlink(link) == b.version
    assert link.resolve() == b.path

    # re-writing older content makes it current again, without a new version dir
    a2 = store.write_frame("pool", "all", pl.DataFrame({"x": [1]}))
    assert a2.version == a.version
    assert os.readlink(link) == a.version
    assert store.versions("pool", "all") == sorted([a.version, b.version])

    cur = store.current("pool", "all")
    assert (cur.asset, cur.partition, cur.version, cur.path) == ("pool", "all", a.version, a.path)


def test_write_tables_publishes_several_frames_as_one_version(store):
    tables = {"pairs": pl.DataFrame({"a": [1, 2]}), "stats": pl.DataFrame({"n": [2]})}
    ref = store.write_tables("pairs", "2", tables)

    assert sorted(p.name for p in ref.path.iterdir()) == ["_manifest.json", "pairs.parquet", "stats.parquet"]
    assert store.read_frame("pairs", "2", "pairs").equals(tables["pairs"])
    assert store.read_frame("pairs", "2", "stats").equals(tables["stats"])
    assert store.versions("pairs", "2") == [ref.version]
    # partitions are independent slots
    assert store.versions("pairs", "1") == []


def test_write_tables_names_are_part_of_the_content(store):
    df = pl.DataFrame({"a": [1]})
    a = store.write_tables("t", "all", {"one": df})
    b = store.write_tables("t", "all", {"two": df})
    assert a.version != b.version


def test_publish_dir_with_nested_files(store):
    def build(d: Path) -> None:
        (d / "sub").mkdir()
        (d / "sub" / "w.bin").write_bytes(b"\x00\x01")
        (d / "config.json").write_text("{}")

    ref = store.publish_dir("dpo_checkpoint", "1", build)
    assert (ref.path / "sub" / "w.bin").read_bytes() == b"\x00\x01"
    assert (ref.path / "config.json").read_text() == "{}"
    assert ref.digest == digest_folder(ref.path)
    assert store.current("dpo_checkpoint", "1").path == ref.path


def test_failed_build_leaves_nothing_and_keeps_current(store):
    first = store.publish_dir("model", "all", _write_marker("v1"))

    def broken(d: Path) -> None:
        (d / "marker.txt").write_text("half written")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        store.publish_dir("model", "all", broken)

    assert store.versions("model", "all") == [first.version]
    entries = _slot_entries(store, "model", "all")
    assert entries == sorted([first.version, CURRENT])
    assert not [e for e in entries if e.startswith(".tmp-")]
    assert store.current("model", "all").version == first.version
    assert (first.path / "marker.txt").read_text() == "v1"


def test_failed_first_build_leaves_no_version(store):
    def broken(d: Path) -> None:
        (d / "x").write_text("x")
        raise KeyError("nope")

    with pytest.raises(KeyError):
        store.publish_dir("model", "all", broken)
    assert store.versions("model", "all") == []
    assert _slot_entries(store, "model", "all") == []
    with pytest.raises(MissingArtifactError):
        store.current("model", "all")


def test_build_that_writes_nothing_raises(store):
    with pytest.raises(ValueError, match=r"model/all: the build wrote nothing"):
        store.publish_dir("model", "all", lambda d: None)
    assert store.versions("model", "all") == []
    assert _slot_entries(store, "model", "all") == []


def test_current_on_missing_asset_names_asset_and_partition(store):
    with pytest.raises(MissingArtifactError) as exc:
        store.current("dpo_checkpoint", "3")
    msg = str(exc.value)
    assert "'dpo_checkpoint'" in msg
    assert "'3'" in msg
    assert str(store.root) in msg
    # a FileNotFoundError, so callers can catch it generically
    assert isinstance(exc.value, FileNotFoundError)


def test_read_frame_on_missing_asset_raises(store):
    with pytest.raises(MissingArtifactError, match="'pool'"):
        store.read_frame("pool", "all")


def test_versions_of_unknown_slot_is_empty(store):
    assert store.versions("nothing", "all") == []


@pytest.mark.parametrize(
    ("asset", "partition"),
    [
        ("../x", "all"),
        ("a/b", "all"),
        ("", "all"),
        ("x y", "all"),
        (".hidden", "all"),
        ("pool", "../x"),
        ("pool", ".."),
        ("pool", "a/b"),
        ("pool", ""),
    ],
)
def test_bad_names_raise_value_error(store, asset, partition):
    with pytest.raises(ValueError, match="bad artifact name"):
        store.write_frame(asset, partition, pl.DataFrame({"x": [1]}))
    with pytest.raises(ValueError, match="bad artifact name"):
        store.current(asset, partition)
    with pytest.raises(ValueError, match="bad artifact name"):
        store.versions(asset, partition)
    # nothing was created outside (or inside) the store
    assert not store.root.exists()


@pytest.mark.parametrize(("asset", "partition"), [("dpo_checkpoint", "12"), ("eval_set", "heldout-v2")])
def test_good_names_accepted(store, asset, partition):
    ref = store.write_frame(asset, partition, pl.DataFrame({"x": [1]}))
    assert ref.path.parent == store.root / asset / partition


# --- digest_folder ------------------------------------------------------------------------------------------


def test_digest_folder_tracks_bytes_and_names(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.txt").write_bytes(b"hello")
    (d / "sub").mkdir()
    (d / "sub" / "b.txt").write_bytes(b"world")
    base = digest_folder(d)
    assert len(base) == 64
    assert digest_folder(d) == base

    (d / "a.txt").write_bytes(b"hellp")
    changed = digest_folder(d)
    assert changed != base
    (d / "a.txt").write_bytes(b"hello")
    assert digest_folder(d) == base

    (d / "a.txt").rename(d / "c.txt")
    assert digest_folder(d) != base


def test_digest_folder_same_content_elsewhere_is_equal(tmp_path):
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f.bin").write_bytes(b"\x01\x02")
    assert digest_folder(tmp_path / "one") == digest_folder(tmp_path / "two")


# --- policy_for_iteration -----------------------------------------------------------------------------------


def test_policy_for_iteration_one_is_base_policy(store):
    base = store.publish_dir("base_policy", UNPARTITIONED, _write_marker("base"))
    ref = policy_for_iteration(store, 1)
    assert (ref.asset, ref.partition, ref.version) == ("base_policy", "all", base.version)
    assert ref.path == base.path


def test_policy_for_iteration_two_is_first_checkpoint(store):
    store.publish_dir("base_policy", UNPARTITIONED, _write_marker("base"))
    ck1 = store.publish_dir("dpo_checkpoint", "1", _write_marker("ck1"))
    store.publish_dir("dpo_checkpoint", "2", _write_marker("ck2"))
    ref = policy_for_iteration(store, 2)
    assert (ref.asset, ref.partition, ref.version) == ("dpo_checkpoint", "1", ck1.version)
    assert policy_for_iteration(store, 3).partition == "2"


def test_policy_for_iteration_missing_previous_checkpoint(store):
    store.publish_dir("base_policy", UNPARTITIONED, _write_marker("base"))
    store.publish_dir("dpo_checkpoint", "1", _write_marker("ck1"))
    with pytest.raises(MissingArtifactError) as exc:
        policy_for_iteration(store, 3)
    msg = str(exc.value)
    assert "materialize iterations in order" in msg
    assert "iteration 3" in msg
    assert "partition 2" in msg


def test_policy_for_iteration_one_without_base_raises(store):
    with pytest.raises(MissingArtifactError, match="'base_policy'"):
        policy_for_iteration(store, 1)


@pytest.mark.parametrize("iteration", [0, -1])
def test_policy_for_iteration_below_one_raises(store, iteration):
    with pytest.raises(ValueError, match=f"iteration must be >= 1, got {iteration}"):
        policy_for_iteration(store, iteration)


# --- default_home -------------------------------------------------------------------------------------------


def test_default_home_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("PREFSCALE_HOME", str(tmp_path / "custom"))
    assert default_home() == (tmp_path / "custom").resolve()


def test_default_home_env_relative_is_resolved(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFSCALE_HOME", "rel/home")
    home = default_home()
    assert home.is_absolute()
    assert home == (tmp_path / "rel" / "home").resolve()


def test_default_home_defaults_to_dot_prefscale(monkeypatch, tmp_path):
    monkeypatch.delenv("PREFSCALE_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    home = default_home()
    assert home.is_absolute()
    assert home == (tmp_path / ".prefscale").resolve()


def test_current_carries_the_full_digest(store):
    ref = store.write_frame("pool", "all", pl.DataFrame({"a": [1, 2]}))
    again = store.current("pool", "all")
    assert len(ref.digest) == 64 and again.digest == ref.digest == digest_folder(ref.path)
    assert ref.version == ref.digest[:16]


def test_manifest_records_files_inputs_and_params(store):
    up = store.write_frame("prompts", "1", pl.DataFrame({"p": ["a"]}))
    ref = store.write_frame("candidates", "1", pl.DataFrame({"r": ["x"]}), inputs=[up], params={"n": 5})
    m = store.manifest(ref)
    assert m["asset"] == "candidates" and m["partition"] == "1"
    assert set(m["files"]) == {"data.parquet"}
    assert m["inputs"] == [{"asset": "prompts", "partition": "1", "version": up.version, "sha256": up.digest}]
    assert m["params"] == {"n": 5}
    assert store.verify(ref) == []


def test_verify_names_a_tampered_file(store):
    ref = store.write_frame("pairs", "1", pl.DataFrame({"a": [1, 2, 3]}))
    target = ref.path / "data.parquet"
    target.chmod(0o644)
    pl.DataFrame({"a": [9]}).write_parquet(target)
    problems = store.verify(ref)
    assert len(problems) == 1 and str(target) in problems[0] and "changed" in problems[0]


def test_verify_reports_missing_and_extra_files(store):
    ref = store.write_tables("t", "1", {"a": pl.DataFrame({"x": [1]}), "b": pl.DataFrame({"x": [2]})})
    (ref.path / "a.parquet").unlink()
    (ref.path / "sneaky.txt").write_text("added later")
    problems = store.verify(ref)
    assert any("a.parquet: missing" in p for p in problems)
    assert any("sneaky.txt: not part of the published version" in p for p in problems)


def test_verify_detects_a_rewritten_manifest(store):
    ref = store.write_frame("t", "1", pl.DataFrame({"x": [1]}))
    m = store.manifest(ref)
    m["params"] = {"forged": True}
    (ref.path / "_manifest.json").write_text(__import__("json").dumps(m))
    assert any("manifest changed" in p for p in store.verify(ref))


def test_publish_removes_the_temporaries_of_dead_processes_only(tmp_path):
    """A SIGKILL mid-write leaves `.tmp-<host>-<pid>-…`; the next publish to the slot removes it, but keeps a live
    writer's entry and another host's (a shared volume)."""
    import subprocess
    import sys

    from prefscale.storage import _host_prefix

    store = ArtifactStore(tmp_path)
    slot = store.root / "prompts" / "1"
    slot.mkdir(parents=True)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    host_prefix = _host_prefix().removesuffix("-")
    left = slot / f"{host_prefix}-{dead.stdout.strip()}-abc"
    (left / "sub").mkdir(parents=True)
    left_link = slot / f"{host_prefix}-{dead.stdout.strip()}-current-123"
    left_link.symlink_to("nowhere")
    live = slot / f"{host_prefix}-{os.getpid()}-def"
    live.mkdir()
    other_host = slot / ".tmp-otherhost-1-ghi"
    other_host.mkdir()
    store.write_frame("prompts", "1", pl.DataFrame({"a": [1]}))
    names = {p.name for p in slot.iterdir()}
    assert left.name not in names and left_link.name not in names
    assert {live.name, other_host.name} <= names
