"""`reward_model`: the weak-supervision reward model, trained once on iteration 1's labels and reused.

Its inputs are iteration 1's `candidates` and `quality_labels` and the `base_policy` (tokenizer and initial
weights), plus `reward.reward_model` and the seed (see `prefscale.reward_model`). Materializing it again, or
scoring a later iteration with it, reuses the current version while those are unchanged. `reward_scores` calls
the same `ensure_reward_model`, so a recipe whose reward sources include `reward_model` also runs when this asset
is not in the selection (e.g. `make run`, which materializes the iteration assets only).
"""

import dagster as dg

from assets.candidates import CANDIDATES
from assets.labels import QUALITY_LABELS
from assets.policy import BASE_POLICY
from prefscale.rewards.reward_model import REWARD_MODEL_ASSET, TRAIN_ITERATION
from resources import ComputeResource, RecipeResource, StorageResource

REWARD_MODEL = dg.AssetKey(REWARD_MODEL_ASSET)
_FIRST = dg.SpecificPartitionsPartitionMapping([str(TRAIN_ITERATION)])  # iteration 1's partition only


@dg.asset(
    key=REWARD_MODEL,
    group_name="rewards",
    kinds={"pytorch", "huggingface"},
    code_version="1",
    pool="gpu",
    deps=[
        dg.AssetDep(CANDIDATES, partition_mapping=_FIRST),
        dg.AssetDep(QUALITY_LABELS, partition_mapping=_FIRST),
        BASE_POLICY,
    ],
    description="Weak-supervision reward model: LlamaForSequenceClassification trained on iteration 1's "
    "candidates against the label model's soft P(high); reused by every iteration until its inputs change.",
)
def reward_model(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    recipe: RecipeResource,
    compute: ComputeResource,
) -> dg.MaterializeResult:
    from prefscale.rewards.reward_model import ensure_reward_model, stored_report

    r = recipe.load()
    dev = compute.resolve(r.policy.dtype)
    ref, report = ensure_reward_model(storage.store, r.reward.reward_model, r.seed, dev)
    facts = stored_report(ref)
    context.log.info(f"reward model {'trained' if report else 'reused'}: {ref.path}")
    meta = {
        "trained": report is not None,
        "trained_on": f"candidates[{TRAIN_ITERATION}] + quality_labels[{TRAIN_ITERATION}]",
        "init": r.reward.reward_model.init,
        **{
            k: round(v, 4) if isinstance(v, float) else v
            for k, v in facts.items()
            if isinstance(v, int | float) and k != "max_length"
        },
        "device": dev.describe(),
        "path": dg.MetadataValue.path(str(ref.path)),
        "sha256": ref.digest,
        "version": ref.version,
    }
    if report is not None:
        meta["train_seconds"] = round(report.seconds, 1)
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(ref.version))
