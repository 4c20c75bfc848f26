"""`dpo_checkpoint`: TRL DPO (+ LoRA, merged) on the iteration's pairs, one MLflow run per checkpoint."""

import json
import shutil
import tempfile
from pathlib import Path

import dagster as dg

from assets.pairs import PREFERENCE_PAIRS
from assets.partitions import ITERATIONS, iteration_of
from assets.policy import BASE_POLICY
from prefscale.storage import policy_for_iteration
from resources import ComputeResource, MLflowResource, RecipeResource, StorageResource

DPO_CHECKPOINT = dg.AssetKey("dpo_checkpoint")


@dg.asset(
    key=DPO_CHECKPOINT,
    group_name="training",
    kinds={"pytorch", "huggingface", "mlflow"},
    code_version="1",
    partitions_def=ITERATIONS,
    pool="gpu",
    deps=[PREFERENCE_PAIRS, BASE_POLICY],
    description="The policy after DPO on this iteration's pairs (TRL DPOTrainer + PEFT LoRA, merged), saved as a "
    "model folder the next iteration samples from.",
)
def dpo_checkpoint(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    recipe: RecipeResource,
    compute: ComputeResource,
    mlflow: MLflowResource,
) -> dg.MaterializeResult:
    from prefscale.dpo import train_dpo
    from prefscale.lineage import log_training_run, run_url

    r = recipe.load()
    i = iteration_of(context, r.iterations)
    store = storage.store
    pairs_ref = store.current(PREFERENCE_PAIRS.path[-1], str(i))
    pairs = store.read_frame(PREFERENCE_PAIRS.path[-1], str(i))
    start = policy_for_iteration(store, i)
    dev = compute.resolve()
    report = {}

    def build(d: Path) -> None:
        work = Path(tempfile.mkdtemp(prefix=f"dpo-{i}-", dir=store.home))
        try:
            rep = train_dpo(start.path, pairs, r.dpo, d, work, dev, r.seed + i)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        report["rep"] = rep
        (d / "prefscale_checkpoint.json").write_text(
            json.dumps(
                {
                    "iteration": i,
                    "started_from": f"{start.asset}[{start.partition}]@{start.version}",
                    "pairs_sha256": pairs_ref.digest,
                    "dpo": r.dpo.model_dump(mode="json"),
                    "seed": r.seed + i,
                },
                indent=2,
            )
        )

    params = {"dpo": r.dpo.model_dump(mode="json"), "seed": r.seed + i, "trainer": "trl.DPOTrainer"}
    ref = store.publish_dir(DPO_CHECKPOINT.path[-1], str(i), build, inputs=[pairs_ref, start], params=params)
    rep = report["rep"]
    uri = mlflow.uri(storage.root)
    params = {
        "iteration": i,
        "recipe": r.name,
        "n_pairs": pairs.height,
        "started_from": f"{start.asset}[{start.partition}]@{start.version}",
        **{f"dpo.{k}": v for k, v in r.dpo.model_dump(mode="json").items()},
    }
    tags = {
        "dagster.run_id": context.run.run_id,
        "dagster.asset_key": DPO_CHECKPOINT.to_user_string(),
        "dagster.partition": str(i),
        "pairs.sha256": pairs_ref.digest,
        "pairs.version": pairs_ref.version,
        "checkpoint.sha256": ref.digest,
        "checkpoint.path": str(ref.path),
    }
    run_id = log_training_run(
        uri,
        mlflow.experiment,
        storage.root / "mlruns",
        run_name=f"dpo_checkpoint-{i}",
        params=params,
        history=rep.history,
        final_metrics={**rep.final, "train_seconds": rep.seconds, "steps": rep.steps},
        tags=tags,
        artifacts={"checkpoint.json": json.loads((ref.path / "prefscale_checkpoint.json").read_text())},
    )
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(ref.path)),
            "sha256": ref.digest,
            "started_from": params["started_from"],
            "pairs": pairs.height,
            "pairs_sha256": pairs_ref.digest,
            "steps": rep.steps,
            "train_seconds": round(rep.seconds, 1),
            **{f"final_{k.replace('/', '_')}": round(v, 4) for k, v in rep.final.items()},
            "device": dev.describe(),
            "mlflow_run_id": run_id,
            "mlflow_run": dg.MetadataValue.url(run_url(uri, run_id)),
            "mlflow_tracking_uri": uri,
        },
        data_version=dg.DataVersion(ref.version),
    )
