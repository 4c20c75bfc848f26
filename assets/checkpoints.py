"""`dpo_checkpoint`: TRL DPO (+ LoRA, merged) on the iteration's pairs, trained out of process through Dagster Pipes.

The asset checks the inputs, then launches `prefscale train-dpo` (or `accelerate launch ... -m prefscale.cli
train-dpo` for several processes) with `dagster.PipesSubprocessClient`. The subprocess writes the merged model
(and the LoRA adapter, `adapter/`) into the version folder `ArtifactStore.publish_dir` is building, which is
renamed into place only once complete. Trainer checkpoints go to a work dir per partition and per fingerprint of
the inputs and settings (`<home>/work/dpo_checkpoint/<partition>/<fingerprint>/`): a run killed mid-training
resumes from the last one when the asset is materialized again; the work dir is removed after the publish.
Each materialization is one MLflow run (params, per-step metrics, the pairs as a dataset input) and one new
version of the registered model `prefscale-<recipe>`.
"""

import json
import os
import shutil
from pathlib import Path

import dagster as dg

from assets.pairs import PREFERENCE_PAIRS
from assets.partitions import ITERATIONS, iteration_of
from assets.policy import BASE_POLICY
from prefscale.storage import UNPARTITIONED, policy_for_iteration
from resources import ComputeResource, MLflowResource, RecipeResource, StorageResource

DPO_CHECKPOINT = dg.AssetKey("dpo_checkpoint")

# Kubernetes: what the pod running this step asks for when the step runs in its own pod (dagster-k8s
# `k8s_job_executor`, see docs/deployment.md and deploy/k8s/). The in-process executor of a local run ignores
# it. Set PREFSCALE_DPO_GPUS to the recipe's `dpo.num_processes` (one process per GPU).
DPO_GPUS = int(os.environ.get("PREFSCALE_DPO_GPUS", "1"))
K8S_CONFIG = {
    "container_config": {
        "resources": {
            "requests": {
                "cpu": str(8 * DPO_GPUS),
                "memory": f"{64 * DPO_GPUS}Gi",
                "nvidia.com/gpu": str(DPO_GPUS),
            },
            "limits": {"nvidia.com/gpu": str(DPO_GPUS)},
        }
    },
    "pod_spec_config": {
        "node_selector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
}


def _flat(prefix: str, d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(f"{prefix}{k}.", v))
        else:
            out[f"{prefix}{k}"] = v
    return out


REPO_ROOT = Path(__file__).resolve().parents[1]


def _accelerate_config(path: str) -> str:
    """The recipe's `dpo.accelerate_config` as an absolute path: as given, or under the repository root."""
    p = Path(path).expanduser()
    for candidate in (p, REPO_ROOT / p):
        if candidate.is_file():
            return str(candidate.resolve())
    raise ValueError(f"dpo.accelerate_config: no such file {path} (nor under {REPO_ROOT})")


def _remove_work_dir(work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
    for parent in (work.parent, work.parent.parent):  # <partition>/, then dpo_checkpoint/, when left empty
        try:
            parent.rmdir()
        except OSError:
            break


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
            "checkpoint_loads",
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
) -> dg.MaterializeResult:
    from prefscale.commands.train import launcher, train_dpo_args
    from prefscale.lineage.mlflow_runs import (
        log_training_run,
        pairs_dataset,
        register_checkpoint,
        registered_model_name,
        run_url,
    )
    from prefscale.training.checks import checkpoint_loads
    from prefscale.training.dpo import (
        ADAPTER_DIR,
        REPORT_FILE,
        DPOReport,
        check_pairs_for_policy,
        dpo_fingerprint,
        last_complete_checkpoint,
        work_dir_for,
    )

    r = recipe.load()
    s = r.dpo
    i = iteration_of(context, r.iterations)
    store = storage.store
    pairs_ref = store.current(PREFERENCE_PAIRS.path[-1], str(i))
    pairs = store.read_frame(PREFERENCE_PAIRS.path[-1], str(i))
    start = policy_for_iteration(store, i)
    reference = None
    if s.reference == "base":
        base = store.current(BASE_POLICY.path[-1], UNPARTITIONED)
        reference = base if base.path.resolve() != start.path.resolve() else None
    dev = compute.resolve()
    seed = r.seed + i

    # Everything that can be checked is checked here, before a process is launched or a model loaded.
    check_pairs_for_policy(start.path, pairs, s)
    accelerate_config = _accelerate_config(s.accelerate_config) if s.accelerate_config else None

    fingerprint = dpo_fingerprint(
        policy_sha256=start.digest or start.version,
        pairs_sha256=pairs_ref.digest or pairs_ref.version,
        reference_sha256=(reference.digest or reference.version) if reference is not None else "",
        settings=s,
        seed=seed,
        compute=dev,
        world_size=s.num_processes,
    )
    work = work_dir_for(store.home, str(i), fingerprint)
    report_path = work / REPORT_FILE
    resume_from = last_complete_checkpoint(work)
    if resume_from is not None:
        context.log.info(f"resuming DPO from the trainer checkpoint {resume_from}")
    outcome: dict = {}

    def build(d: Path) -> None:
        report_path.unlink(missing_ok=True)  # a stale report must not pass for this run's
        command = launcher(s.num_processes, accelerate_config) + train_dpo_args(
            policy=start.path,
            pairs=pairs_ref.file(),
            out=d,
            work_dir=work,
            settings=s,
            seed=seed,
            device=dev.device,
            reference=reference.path if reference is not None else None,
            threads=dev.threads,
            report=report_path,
        )
        context.log.info("launching: " + " ".join(a if len(a) < 200 else a[:60] + "…" for a in command))
        try:
            invocation = dg.PipesSubprocessClient().run(
                command=command,
                context=context,
                extras={"partition": str(i), "fingerprint": fingerprint},
            )
        except Exception as e:
            ckpt = last_complete_checkpoint(work)
            kept = (
                f" The trainer checkpoint {ckpt} is kept: materializing this partition again resumes from it."
                if ckpt is not None
                else ""
            )
            raise RuntimeError(
                f"prefscale train-dpo failed ({e}); its stderr is in the step's logs.{kept}"
            ) from e
        pipes_metadata: dict = {}
        for result in invocation.get_results():
            if isinstance(result, dg.MaterializeResult):
                pipes_metadata.update(result.metadata or {})
        outcome["pipes_metadata"] = pipes_metadata
        outcome["steps_reported"] = len(invocation.get_custom_messages())
        outcome["report"] = DPOReport.read(report_path)
        (d / "prefscale_checkpoint.json").write_text(
            json.dumps(
                {
                    "iteration": i,
                    "started_from": f"{start.asset}[{start.partition}]@{start.version}",
                    "reference": (
                        f"{reference.asset}[{reference.partition}]@{reference.version}"
                        if reference is not None
                        else f"{start.asset}[{start.partition}]@{start.version}"
                    ),
                    "pairs_sha256": pairs_ref.digest,
                    "dpo": s.model_dump(mode="json"),
                    "seed": seed,
                    "adapter": ADAPTER_DIR if (d / ADAPTER_DIR).is_dir() else None,
                },
                indent=2,
            )
        )

    params = {"dpo": s.model_dump(mode="json"), "seed": seed, "trainer": "trl.DPOTrainer"}
    inputs = [pairs_ref, start] + ([reference] if reference is not None else [])
    ref = store.publish_dir(DPO_CHECKPOINT.path[-1], str(i), build, inputs=inputs, params=params)
    _remove_work_dir(work)  # published: the trainer checkpoints are no longer needed
    loaded = checkpoint_loads(ref.path, dev.device, dev.dtype)
    if not loaded.ok:
        context.log.error(f"dpo_checkpoint[{i}]@{ref.version} does not load: {loaded.error}")
    rep: DPOReport = outcome["report"]

    uri = mlflow.uri(storage.root)
    started_from = f"{start.asset}[{start.partition}]@{start.version}"
    run_params = {
        "iteration": i,
        "recipe": r.name,
        "n_pairs": pairs.height,
        "seed": seed,
        "started_from": started_from,
        "reference": s.reference,
        "world_size": rep.world_size,
        "device": dev.describe(),
        **_flat("dpo.", s.model_dump(mode="json")),
    }
    upstream = {f"upstream.{a.asset}.{a.partition}": a.version for a in inputs}
    tags = {
        "dagster.run_id": context.run.run_id,
        "dagster.asset_key": DPO_CHECKPOINT.to_user_string(),
        "dagster.partition": str(i),
        "pairs.sha256": pairs_ref.digest,
        "pairs.version": pairs_ref.version,
        "checkpoint.sha256": ref.digest,
        "checkpoint.version": ref.version,
        "checkpoint.path": str(ref.path),
        **upstream,
    }
    dataset = pairs_dataset(
        pairs,
        name=f"preference_pairs[{i}]@{pairs_ref.version}",
        source=str(pairs_ref.file()),
        sha256=pairs_ref.digest,
    )
    run_id = log_training_run(
        uri,
        mlflow.experiment,
        storage.root / "mlruns",
        run_name=f"dpo_checkpoint-{i}",
        params=run_params,
        history=rep.history,
        final_metrics={
            **rep.final,
            "train_seconds": rep.seconds,
            "steps": rep.steps,
            "steps_run": rep.steps_run,
            "resumed_from_step": rep.resumed_from_step,
        },
        tags=tags,
        artifacts={
            "checkpoint.json": json.loads((ref.path / "prefscale_checkpoint.json").read_text()),
            "dpo_config.json": rep.trainer_args,
        },
        datasets=[dataset],
    )
    model_name = registered_model_name(r.name)
    model_version = (
        register_checkpoint(
            uri,
            model_name,
            source=str(ref.path),
            run_id=run_id,
            tags={**tags, "recipe": r.name, "mlflow.run_id": run_id},
            description=f"dpo_checkpoint[{i}]@{ref.version} from {started_from}",
        )
        if loaded.ok
        else "not registered (checkpoint_loads failed)"
    )
    pipes_metadata = outcome["pipes_metadata"]
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(ref.path)),
            "sha256": ref.digest,
            "started_from": started_from,
            "reference": s.reference,
            "pairs": pairs.height,
            "pairs_sha256": pairs_ref.digest,
            "steps": rep.steps,
            "steps_run": rep.steps_run,
            "resumed_from_step": rep.resumed_from_step,
            "world_size": rep.world_size,
            "train_seconds": round(rep.seconds, 1),
            **{f"final_{k.replace('/', '_')}": round(v, 4) for k, v in rep.final.items()},
            "adapter": (ref.path / ADAPTER_DIR).is_dir(),
            "device": dev.describe(),
            "pipes_steps_reported": outcome["steps_reported"],
            "pipes_reported": bool(pipes_metadata),
            "mlflow_run_id": run_id,
            "mlflow_run": dg.MetadataValue.url(run_url(uri, run_id)),
            "mlflow_tracking_uri": uri,
            "mlflow_registered_model": model_name,
            "mlflow_model_version": model_version,
        },
        data_version=dg.DataVersion(ref.version),
        check_results=[
            dg.AssetCheckResult(
                check_name="checkpoint_loads",
                passed=loaded.ok,
                metadata={"path": dg.MetadataValue.path(str(ref.path)), **loaded.metadata()},
            )
        ],
    )
