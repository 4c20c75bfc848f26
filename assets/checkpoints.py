"""`dpo_checkpoint`: the iteration's policy, trained out of process through Dagster Pipes: TRL DPO on the pairs, or
GRPO / RLOO against the recipe's reward online (`training.method`), + LoRA, merged.

`prefscale train-dpo` / `train-online` (`prefscale.training.launch`) write the model into the version folder being
published; trainer checkpoints in a work dir per partition and input fingerprint let a killed run resume. Each
materialization is one MLflow run and one registered model version (`prefscale.lineage.checkpoint_runs`).
"""

import os
from pathlib import Path

import dagster as dg

from assets.labels import QUALITY_LABELS
from assets.pairs import PREFERENCE_PAIRS
from assets.partitions import ITERATIONS, iteration_of
from assets.policy import BASE_POLICY
from prefscale.artifacts import CHECKPOINT_LOADS, COMPLETIONS_HEALTHY
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
    code_version="3",
    partitions_def=ITERATIONS,
    pool="gpu",
    op_tags={"dagster-k8s/config": K8S_CONFIG},
    deps=[PREFERENCE_PAIRS, QUALITY_LABELS, BASE_POLICY],
    description="The policy after this iteration's training (TRL + PEFT LoRA, merged; the adapter beside it): DPO "
    "on the iteration's pairs (`prefscale train-dpo`), or GRPO / RLOO against the LFs + label model online "
    "(`prefscale train-online`), through Dagster Pipes, resumable from trainer checkpoints, and saved as a "
    "model folder the next iteration samples from.",
    check_specs=[
        dg.AssetCheckSpec(
            CHECKPOINT_LOADS,
            asset=DPO_CHECKPOINT,
            blocking=True,
            description="The published folder loads with transformers' AutoTokenizer + AutoModelForCausalLM "
            "and one forward pass gives finite logits. A failure also skips the MLflow model registration.",
        ),
        dg.AssetCheckSpec(
            COMPLETIONS_HEALTHY,
            asset=DPO_CHECKPOINT,
            blocking=True,
            description="What training moved the policy toward did not collapse: over the last 5 steps of "
            "GRPO/RLOO (DPO: the chosen replies), at most half are empty, repeat a line or hit the token limit.",
        ),
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
    from prefscale.training.checks import checkpoint_loads, completions_healthy, pairs_health

    r = recipe.load()
    method = r.training.method
    s = r.dpo if method == "dpo" else r.online
    i = iteration_of(context, r.iterations)
    store = storage.store
    data = launch.training_data(store, i, method, r.reward.names)  # pairs (dpo) or quality_labels (online)
    frame = store.read_frame(data.data.asset, str(i))
    start = policy_for_iteration(store, i)
    reference = launch.dpo_reference(store, start, r.dpo.reference) if method == "dpo" else None
    dev = compute.resolve(r.policy.dtype)
    seed = r.seed + i

    accelerate = None  # everything that can be checked is checked before a process is launched
    if method == "dpo":
        dpo.check_pairs_for_policy(start.path, frame, r.dpo)
        accelerate = launch.accelerate_config_path(r.dpo.accelerate_config, REPO_ROOT)
    fingerprint = launch.training_fingerprint(data, r, start, reference, seed, dev)
    work = dpo.work_dir_for(store.home, str(i), fingerprint)
    report_path = work / dpo.REPORT_FILE
    if (resume_from := dpo.last_complete_checkpoint(work)) is not None:
        context.log.info(f"resuming {method.upper()} from the trainer checkpoint {resume_from}")
    outcome: dict = {}

    def build(d: Path) -> None:
        report_path.unlink(missing_ok=True)  # a stale report must not pass for this run's
        command = launch.training_command(
            data,
            r,
            policy=start.path,
            reference=reference.path if reference is not None else None,
            accelerate=accelerate,
            recipe_ref=(recipe.name, recipe.overrides_json),
            out=d,
            work_dir=work,
            seed=seed,
            device=dev.device,
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
            raise RuntimeError(launch.failure_message(e, work, launch.COMMANDS[method])) from e
        outcome["pipes_reported"] = any(isinstance(x, dg.MaterializeResult) for x in invocation.get_results())
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
            pairs=data.data,
            settings=s,
            seed=seed,
            mlflow_experiment=mlflow.experiment,
            method=method,
        )

    params = {method: s.model_dump(mode="json"), "seed": seed, "trainer": launch.TRAINERS[method]}
    inputs = [*data.refs, start] + ([reference] if reference is not None else [])
    ref = store.publish_dir(DPO_CHECKPOINT.path[-1], str(i), build, inputs=inputs, params=params)
    launch.remove_work_dir(work)  # published: the trainer checkpoints are no longer needed
    loaded = checkpoint_loads(ref.path, dev.device, dev.dtype)
    if not loaded.ok:
        context.log.error(f"dpo_checkpoint[{i}]@{ref.version} does not load: {loaded.error}")
    rep: dpo.DPOReport = outcome["report"]
    health = completions_healthy(rep.history if method != "dpo" else pairs_health(frame))
    uri = mlflow.uri(storage.root)
    lineage = record_checkpoint(
        uri,
        mlflow.experiment,
        storage.root / "mlruns",
        recipe=r.name,
        iteration=i,
        checkpoint=ref,
        start=start,
        pairs_ref=data.data,
        pairs=frame,
        inputs=inputs,
        settings=s,
        seed=seed,
        device=dev.describe(),
        report=rep,
        run_tags=mlflow.run_tags(context, DPO_CHECKPOINT),
        register=loaded.ok and health.ok,
        method=method,
    )
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(ref.path)),
            "sha256": ref.digest,
            "method": method,
            "started_from": launch.artifact_label(start),
            "reference": r.dpo.reference if method == "dpo" else "previous",
            "trained_from": launch.artifact_label(data.data),
            **({"pairs": frame.height, "pairs_sha256": data.data.digest} if method == "dpo" else {}),
            **{k: getattr(rep, k) for k in ("steps", "steps_run", "resumed_from_step", "world_size")},
            "train_seconds": round(rep.seconds, 1),
            **{f"final_{k.replace('/', '_')}": round(v, 4) for k, v in rep.final.items()},
            "adapter": (ref.path / dpo.ADAPTER_DIR).is_dir(),
            "device": dev.describe(),
            "pipes_steps_reported": outcome["steps_reported"],
            "pipes_reported": outcome["pipes_reported"],
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
            ),
            dg.AssetCheckResult(check_name=COMPLETIONS_HEALTHY, passed=health.ok, metadata=health.metadata()),
        ],
    )
