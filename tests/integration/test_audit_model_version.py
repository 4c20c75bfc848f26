"""`prefscale audit models:/NAME/VERSION`: the checkpoint found through a real MLflow registry (sqlite store).

The registered versions carry the tags the dpo_checkpoint asset gives them (prefscale.lineage.register_checkpoint
with checkpoint.path / checkpoint.version / checkpoint.sha256 / dagster.partition), over a small store made by
the real core functions (small_home.py).
"""

import shutil
from pathlib import Path

import pytest

from prefscale.cli import main
from prefscale.lineage.mlflow_runs import (
    parse_model_ref,
    register_checkpoint,
    registered_checkpoint,
    tracking_uri_for,
)
from prefscale.storage import ArtifactRef, ArtifactStore
from tests.integration.small_home import build_small_home, tiny_policy

pytestmark = pytest.mark.integration

MODEL = "prefscale-test"


def _tags(ref: ArtifactRef, **override: str) -> dict[str, str]:
    return {
        "dagster.partition": ref.partition,
        "checkpoint.sha256": ref.digest,
        "checkpoint.version": ref.version,
        "checkpoint.path": str(ref.path),
        **override,
    }


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("audit_mlflow")
    small = build_small_home(root / "home", tiny_policy(root / "policy"))
    uri = tracking_uri_for(small.home)
    for i in ("1", "2"):  # versions 1 and 2: the two checkpoints, as the asset registers them
        ref = small.store.current("dpo_checkpoint", i)
        assert register_checkpoint(uri, MODEL, source=str(ref.path), run_id="", tags=_tags(ref)) == i
    return small


def _audit(home: Path, what: str, capsys) -> tuple[int, str, str]:
    code = main(["audit", what, "--home", str(home)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("what", [f"models:/{MODEL}/2", f"{MODEL}/2", f"models:/{MODEL}/latest"])
def test_audit_by_model_version_prints_the_chain(registry, capsys, what):
    store = registry.store
    code, out, err = _audit(registry.home, what, capsys)
    assert code == 0, out + err
    ckpt2, ckpt1 = store.current("dpo_checkpoint", "2"), store.current("dpo_checkpoint", "1")
    assert out.startswith(f"audit of dpo_checkpoint[2]@{ckpt2.version}")
    assert f"requested as models:/{MODEL}/2 (MLflow model version" in out
    assert f"registered as models:/{MODEL}/2" in out
    for asset, part in [
        ("preference_pairs", "2"),
        ("candidates", "2"),
        ("lf_votes", "1"),
        ("base_policy", "all"),
    ]:
        assert f"{asset}[{part}]@{store.current(asset, part).version}" in out
    assert f"dpo_checkpoint[1]@{ckpt1.version}" in out
    assert "all hashes match" in out


def test_an_iteration_audit_names_its_registered_versions(registry, capsys):
    code, out, _ = _audit(registry.home, "1", capsys)
    assert code == 0
    assert f"registered as models:/{MODEL}/1" in out and f"models:/{MODEL}/2" not in out


def test_model_version_audit_names_a_tampered_file(registry, tmp_path, capsys):
    home = tmp_path / "copy"
    shutil.copytree(registry.home, home, symlinks=True)
    # the copied registry still points at the original store: re-register against the copy
    store = ArtifactStore(home)
    ref = store.current("dpo_checkpoint", "2")
    (home / "mlflow.db").unlink()
    register_checkpoint(tracking_uri_for(home), MODEL, source=str(ref.path), run_id="", tags=_tags(ref))
    pairs = store.current("preference_pairs", "1")
    target = pairs.path / "data.parquet"
    target.chmod(0o644)
    target.write_bytes(target.read_bytes() + b"\0")
    code, out, _ = _audit(home, f"models:/{MODEL}/1", capsys)
    assert code == 1
    assert f"{target}: content changed" in out


def test_a_digest_the_store_does_not_hold_is_a_mismatch(registry, capsys):
    ref = registry.store.current("dpo_checkpoint", "1")
    uri = tracking_uri_for(registry.home)
    version = register_checkpoint(
        uri,
        f"{MODEL}-wrong",
        source=str(ref.path),
        run_id="",
        tags=_tags(ref, **{"checkpoint.sha256": "f" * 64}),
    )
    code, out, _ = _audit(registry.home, f"models:/{MODEL}-wrong/{version}", capsys)
    assert code == 1
    assert f"{ref.path}: recorded sha256 ffffffffffffffff… differs from the stored" in out


def test_a_registered_checkpoint_whose_folder_is_gone_fails(registry, tmp_path, capsys):
    home = tmp_path / "copy"
    shutil.copytree(registry.home, home, symlinks=True)
    store = ArtifactStore(home)
    ref = store.current("dpo_checkpoint", "1")
    (home / "mlflow.db").unlink()
    register_checkpoint(tracking_uri_for(home), MODEL, source=str(ref.path), run_id="", tags=_tags(ref))
    shutil.rmtree(ref.path)
    code, out, _ = _audit(home, f"models:/{MODEL}/1", capsys)
    assert code == 1
    assert f"{ref.path}: version folder is missing" in out


@pytest.mark.parametrize(
    ("what", "message"),
    [
        (f"models:/{MODEL}/9", "no such registered model version"),
        ("models:/no-such-model/1", "no such registered model version"),
    ],
)
def test_unknown_model_versions_are_clear_errors(registry, capsys, what, message):
    code, _, err = _audit(registry.home, what, capsys)
    assert code == 2
    assert what in err and message in err


def test_a_version_from_another_store_is_refused(registry, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(registry.home, other, symlinks=True)  # its registry points into registry.home
    code, _, err = _audit(other, f"models:/{MODEL}/2", capsys)
    assert code == 2
    assert "not in this store" in err and "--home" in err


def test_no_registry_at_all_is_a_clear_error(tmp_path, capsys):
    code, _, err = _audit(tmp_path, f"models:/{MODEL}/1", capsys)
    assert code == 2
    assert f"no MLflow tracking store at {tmp_path / 'mlflow.db'}" in err
    assert not (tmp_path / "mlflow.db").exists()  # not created by asking


def test_model_refs_parse():
    assert parse_model_ref("models:/prefscale-embedded/2") == ("prefscale-embedded", "2", None)
    assert parse_model_ref("prefscale-embedded/latest") == ("prefscale-embedded", "latest", None)
    assert parse_model_ref("models:/prefscale-embedded@champion") == ("prefscale-embedded", None, "champion")
    for bad in ("3", "a/b/c", "models:/x/two", "/abs/path"):
        assert parse_model_ref(bad) is None, bad
    with pytest.raises(ValueError, match="not an MLflow model version"):
        registered_checkpoint("sqlite:///nowhere.db", "a/b/c")
