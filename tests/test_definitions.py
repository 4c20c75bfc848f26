"""Snapshot of the Dagster definitions: asset keys, groups, partitions, pools and jobs (a cheap lineage guard)."""

import dagster as dg

import definitions

PARTITIONED = {
    "prompts",
    "candidates",
    "lf_votes",
    "quality_labels",
    "reward_scores",
    "preference_pairs",
    "dpo_checkpoint",
    "eval_results",
    "best_of_n",
}
UNPARTITIONED = {
    "base_policy",
    "eval_prompts",
    "eval_baseline",
    "stg_eval_runs",
    "eval_leaderboard",
    "eval_adherence",
}
GPU = {"base_policy", "candidates", "dpo_checkpoint", "eval_baseline", "eval_results", "best_of_n"}


def _graph():
    return definitions.defs.resolve_asset_graph()


def test_definitions_load():
    dg.Definitions.validate_loadable(definitions.defs)


def test_asset_keys_and_partitions():
    graph = _graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys >= PARTITIONED | UNPARTITIONED
    for key in PARTITIONED:
        pd = graph.get(dg.AssetKey(key)).partitions_def
        assert pd is not None and pd.get_partition_keys() == ["1", "2", "3"], key
    for key in UNPARTITIONED:
        assert graph.get(dg.AssetKey(key)).partitions_def is None, key


def test_lineage_edges():
    graph = _graph()

    def parents(key: str) -> set[str]:
        return {k.to_user_string() for k in graph.get(dg.AssetKey(key)).parent_keys}

    assert parents("candidates") == {"prompts", "base_policy"}
    assert parents("lf_votes") == {"candidates"}
    assert parents("quality_labels") == {"lf_votes"}
    assert parents("reward_scores") == {"candidates", "quality_labels"}
    assert parents("preference_pairs") == {"candidates", "reward_scores"}
    assert parents("dpo_checkpoint") == {"preference_pairs", "base_policy"}
    assert parents("eval_results") == {"dpo_checkpoint", "eval_baseline", "eval_prompts"}
    assert parents("best_of_n") == {"dpo_checkpoint", "eval_baseline", "eval_prompts", "eval_results"}
    assert "best_of_n" in parents("alpaca_eval_results")  # the embedded recipe enables best-of-N
    assert parents("stg_eval_runs") == {"eval_baseline", "eval_results", "best_of_n"}
    assert parents("eval_leaderboard") == {"stg_eval_runs"}


def test_gpu_pool_groups_and_code_versions():
    graph = _graph()
    for key in PARTITIONED | {"base_policy", "eval_prompts", "eval_baseline"}:
        node = graph.get(dg.AssetKey(key))
        assert node.code_version, key
        assert node.group_name in {
            "policy",
            "data",
            "alignment",
            "labeling",
            "rewards",
            "training",
            "evaluation",
        }
        assert node.kinds, key
    for key in GPU:
        assert graph.get(dg.AssetKey(key)).pools == {"gpu"}, key
    for key in ("eval_leaderboard", "eval_adherence"):
        assert graph.get(dg.AssetKey(key)).group_name == "warehouse"


def test_jobs():
    names = {j.name for j in definitions.defs.jobs}
    assert {"bootstrap_job", "alignment_iteration_job", "warehouse_job"} <= names
