"""`dpo_checkpoint`: TRL DPO (+ LoRA, merged) on the iteration's pairs, trained out of process through Dagster Pipes.

`prefscale train-dpo` (`prefscale.training.launch`) writes the model into the version folder being published
(renamed into place only once complete); trainer checkpoints in a work dir per partition and input fingerprint let
a killed run resume when materialized again. Each materialization is one MLflow run and one registered model
version (`prefscale.lineage.checkpoint_runs`).
"""

import os
from pathlib import Path

import dagster as dg

from assets.pairs import PREFERENCE_PAIRS
from assets.partitions import ITERATIONS, iteration_of
from assets.policy import BASE_POLICY
from prefscale.artifacts import CHECKPOINT_LOADS
from prefscale.storage import policy_for_iteration
from resources import ComputeResource, MLflowResource, RecipeResource, StorageResource
from resources.k8s import gpu_pod_config

DPO_CHECKPOINT = dg.AssetKey("dpo_checkpoint")

K8S_CONFIG = gpu_pod_config(int(os.environ.get("PREFSCALE_DPO_GPUS", "1")))  # see resources/k8s.py
REPO_ROOT = Path(__file__).resolve().parents[1]


@dg.asset(
    key=DPO_CHECKPOINT,
    group_name="training",
    kinds={"pytorch", "huggingface", "mlflow"},
    code_version="2",
    partitions_def=ITERATIONS,
    pool="gpu",
    op_tags={"dagster-k8s/config": K8S_CONFIG},
    deps=[PREFERENCE_PAIRS, BASE_POLICY],
    description="The policy after DPO on this iteration's pairs (TRL DPOTrainer + PEFT LoRA, merged; the adapter "
    "beside it), trained by `prefscale train-dpo` through Dagster Pipes, resumable from trainer checkpoints, "
    "and saved as a model folder the next iteration samples from.",
    check_specs=[
        dg.AssetCheckSpec(
            CHECKPOINT_LOADS,
            asset=DPO_CHECKPOINT,
            blocking=True,
            description="The published folder loads with transformers' AutoTokenizer + AutoModelForCausalLM "
            "and one forward pass gives finite logits. A failure also skips the MLflow model registration.",
        )
    ],
)
def dpo_checkpoint(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    recipe: RecipeResource,
    compute: ComputeResource,
    mlflow: MLflowResource,
    pipes_subprocess_client: dg.PipesSubprocessClient,
) -> dg.MaterializeResult:
    from prefscale.lineage.checkpoint_runs import record_checkpoint
    from prefscale.lineage.mlflow_runs import run_url
    from prefscale.lineage.model_card import write_provenance
    from prefscale.training import dpo, launch
    from prefscale.training.checks import checkpoint_loads

    r = recipe.load()
    s = r.dpo
    i = iteration_of(context, r.iterations)
    store = storage.store
    pairs_ref = store.current(PREFERENCE_PAIRS.path[-1], str(i))
    pairs = store.read_frame(PREFERENCE_PAIRS.path[-1], str(i))
    start = policy_for_iteration(store, i)
    reference = launch.dpo_reference(store, start, s.reference)
    dev = compute.resolve(r.policy.dtype)
    seed = r.seed + i

    # Everything that can be checked is checked here, before a process is launched or a model loaded.
    dpo.check_pairs_for_policy(start.path, pairs, s)
    accelerate = launch.accelerate_config_path(s.accelerate_config, REPO_ROOT)
    fingerprint = dpo.dpo_fingerprint(
        policy_sha256=start.digest or start.version,
        pairs_sha256=pairs_ref.digest or pairs_ref.version,
        reference_sha256=(reference.digest or reference.version) if reference is not None else "",
        settings=s,
        seed=seed,
        compute=dev,
        world_size=s.num_processes,
    )
    work = dpo.work_dir_for(store.home, str(i), fingerprint)
    report_path = work / dpo.REPORT_FILE
    if (resume_from := dpo.last_complete_checkpoint(work)) is not None:
        context.log.info(f"resuming DPO from the trainer checkpoint {resume_from}")
    outcome: dict = {}

    def build(d: Path) -> None:
        report_path.unlink(missing_ok=True)  # a stale report must not pass for this run's
        command = launch.launcher(s.num_processes, accelerate) + launch.train_dpo_args(
            policy=start.path,
            pairs=pairs_ref.file(),
            out=d,
            work_dir=work,
            settings=s,
            seed=seed,
            device=dev.device,
            reference=reference.path if reference is not None else None,
            threads=dev.threads,
            dtype=str(dev.dtype).removeprefix("torch."),
            report=report_path,
        )
        context.log.info("launching: " + " ".join(a if len(a) < 200 else a[:60] + "…" for a in command))
        try:
            invocation = pipes_subprocess_client.run(
                command=command, context=context, extras={"partition": str(i), "fingerprint": fingerprint}
            )
        except Exception as e:
            raise RuntimeError(launch.failure_message(e, work)) from e
        outcome["pipes_metadata"] = {
            k: v
            for result in invocation.get_results()
            if isinstance(result, dg.MaterializeResult)
            for k, v in (result.metadata or {}).items()
        }
        outcome["steps_reported"] = len(invocation.get_custom_messages())
        outcome["report"] = dpo.DPOReport.read(report_path)
        write_provenance(
            d,
            store,
            recipe=r.name,
            policy=r.policy,
            iteration=i,
            start=start,
            reference=reference,
            pairs=pairs_ref,
            settings=s,
            seed=seed,
            mlflow_experiment=mlflow.experiment,
        )

    params = {"dpo": s.model_dump(mode="json"), "seed": seed, "trainer": "trl.DPOTrainer"}
    inputs = [pairs_ref, start] + ([reference] if reference is not None else [])
    ref = store.publish_dir(DPO_CHECKPOINT.path[-1], str(i), build, inputs=inputs, params=params)
    launch.remove_work_dir(work)  # published: the trainer checkpoints are no longer needed
    loaded = checkpoint_loads(ref.path, dev.device, dev.dtype)
    if not loaded.ok:
        context.log.error(f"dpo_checkpoint[{i}]@{ref.version} does not load: {loaded.error}")
    rep: dpo.DPOReport = outcome["report"]
    uri = mlflow.uri(storage.root)
    lineage = record_checkpoint(
        uri,
        mlflow.experiment,
        storage.root / "mlruns",
        recipe=r.name,
        iteration=i,
        checkpoint=ref,
        start=start,
        pairs_ref=pairs_ref,
        pairs=pairs,
        inputs=inputs,
        settings=s,
        seed=seed,
        device=dev.describe(),
        report=rep,
        run_tags=mlflow.run_tags(context, DPO_CHECKPOINT),
        register=loaded.ok,
    )
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(ref.path)),
            "sha256": ref.digest,
            "started_from": launch.artifact_label(start),
            "reference": s.reference,
            "pairs": pairs.height,
            "pairs_sha256": pairs_ref.digest,
            "steps": rep.steps,
            "steps_run": rep.steps_run,
            "resumed_from_step": rep.resumed_from_step,
            "world_size": rep.world_size,
            "train_seconds": round(rep.seconds, 1),
            **{f"final_{k.replace('/', '_')}": round(v, 4) for k, v in rep.final.items()},
            "adapter": (ref.path / dpo.ADAPTER_DIR).is_dir(),
            "device": dev.describe(),
            "pipes_steps_reported": outcome["steps_reported"],
            "pipes_reported": bool(outcome["pipes_metadata"]),
            "mlflow_run_id": lineage.run_id,
            "mlflow_run": dg.MetadataValue.url(run_url(uri, lineage.run_id)),
            "mlflow_tracking_uri": uri,
            "mlflow_registered_model": lineage.model_name,
            "mlflow_model_version": lineage.model_version,
        },
        data_version=dg.DataVersion(ref.version),
        check_results=[
            dg.AssetCheckResult(
                check_name=CHECKPOINT_LOADS,
                passed=loaded.ok,
                metadata={"path": dg.MetadataValue.path(str(ref.path)), **loaded.metadata()},
            )
        ],
    )
