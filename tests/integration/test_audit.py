"""`prefscale audit` over a real run: the whole chain verifies, and a tampered pairs file is named."""

import shutil

import polars as pl
import pytest

from prefscale.cli import main
from prefscale.storage import ArtifactStore

pytestmark = pytest.mark.integration


def test_audit_prints_the_chain_and_passes(pipeline, capsys):
    code = main(["audit", "3", "--home", str(pipeline.home)])
    out = capsys.readouterr().out
    assert code == 0, out
    store = ArtifactStore(pipeline.home)
    for asset, part in [
        ("dpo_checkpoint", "3"),
        ("preference_pairs", "3"),
        ("reward_scores", "3"),
        ("quality_labels", "3"),
        ("lf_votes", "3"),
        ("candidates", "3"),
        ("prompts", "3"),
        ("dpo_checkpoint", "2"),
        ("dpo_checkpoint", "1"),
        ("prompts", "1"),
        ("base_policy", "all"),
    ]:
        assert f"{asset}[{part}]@{store.current(asset, part).version}" in out, (asset, part)
    assert "mentions_company@" in out and "thanks_customer@" in out  # LF names with their versions
    assert "strategy=best_vs_worst" in out
    assert "run " in out and "dagster run " in out  # the MLflow training run
    assert f"eval_results[3]@{store.current('eval_results', '3').version}" in out
    assert "all hashes match" in out


def test_audit_names_a_tampered_pairs_file(pipeline, tmp_path, capsys):
    home = tmp_path / "copy"
    shutil.copytree(pipeline.home, home, symlinks=True)
    pairs = ArtifactStore(home).current("preference_pairs", "2")
    target = pairs.path / "data.parquet"
    target.chmod(0o644)
    pl.read_parquet(target).head(1).write_parquet(target)
    code = main(["audit", "3", "--home", str(home)])
    out = capsys.readouterr().out
    assert code == 1
    assert f"{target}: content changed" in out


def test_audit_of_unknown_checkpoint_is_a_clear_error(pipeline, capsys):
    assert main(["audit", "7", "--home", str(pipeline.home)]) == 2
    assert "dpo_checkpoint" in capsys.readouterr().err
