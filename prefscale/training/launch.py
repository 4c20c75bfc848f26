"""Launching `prefscale train-dpo` out of process, and what the `dpo_checkpoint` asset keeps beside its output.

`launcher` + `train_dpo_args` make the command (this interpreter, or `accelerate launch` for several ranks);
`accelerate_config_path` resolves the recipe's accelerate file; `checkpoint_record` is the
`prefscale_checkpoint.json` written into every published checkpoint (where it started, the reference, the pairs'
digest, the DPO settings and seed); `remove_work_dir` drops a partition's trainer checkpoints once published.
"""

from __future__ import annotations

import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefscale.config.training import DPOSettings
from prefscale.storage import UNPARTITIONED, ArtifactRef, ArtifactStore
from prefscale.training.dpo import dpo_fingerprint, last_complete_checkpoint

CHECKPOINT_RECORD = "prefscale_checkpoint.json"
BASE_POLICY_ASSET = "base_policy"
PAIRS_ASSET = "preference_pairs"
LABELS_ASSET = "quality_labels"
PROMPTS_ASSET = "prompts"
REWARD_MODEL_ASSET = "reward_model"
LABEL_MODEL_TABLE = "label_model"  # quality_labels' table of the fitted label model's parameters


def launcher(
    num_processes: int = 1, accelerate_config: str | None = None, main_process_port: int | None = None
) -> list[str]:
    """The command prefix that runs `prefscale.cli`: this interpreter, or `accelerate launch` for several ranks.

    Without a config file, several processes run as DDP through torchrun (`--multi_gpu`): NCCL on GPUs, gloo
    on CPU. With one (DeepSpeed ZeRO, FSDP: see deploy/accelerate/), the file decides.
    """
    if num_processes == 1 and not accelerate_config:
        return [sys.executable, "-m", "prefscale.cli"]
    exe = Path(sys.executable).with_name("accelerate")
    cmd = [str(exe), "launch"] if exe.exists() else [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config:
        cmd += ["--config_file", accelerate_config]
    else:
        cmd += ["--multi_gpu", "--num_machines", "1", "--dynamo_backend", "no"]
    cmd += ["--num_processes", str(num_processes)]
    cmd += ["--main_process_port", str(main_process_port or free_port())]
    return [*cmd, "-m", "prefscale.cli"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def train_dpo_args(
    *,
    policy: Path,
    pairs: Path,
    out: Path,
    work_dir: Path,
    settings: DPOSettings,
    seed: int,
    device: str,
    reference: Path | None = None,
    threads: int | None = None,
    report: Path | None = None,
    dtype: str | None = None,
) -> list[str]:
    """The `train-dpo ...` arguments (after the launcher) for one run."""
    args = [
        "train-dpo",
        "--policy",
        str(policy),
        "--pairs",
        str(pairs),
        "--out",
        str(out),
        "--work-dir",
        str(work_dir),
        "--settings-json",
        settings.model_dump_json(),
        "--seed",
        str(seed),
        "--device",
        device,
    ]
    if reference is not None:
        args += ["--reference", str(reference)]
    return args + _optional_args(threads, dtype, report)


def _optional_args(threads: int | None, dtype: str | None, report: Path | None) -> list[str]:
    """`--threads`, `--dtype` and `--report`, each only when given: the training commands share them."""
    return [
        *(["--threads", str(threads)] if threads else []),
        *(["--dtype", dtype] if dtype else []),
        *(["--report", str(report)] if report is not None else []),
    ]


def accelerate_config_path(path: str | None, root: Path) -> str | None:
    """The recipe's `dpo.accelerate_config` as an absolute path: as given, or under `root` (the repository);
    None when the recipe names none."""
    if not path:
        return None
    p = Path(path).expanduser()
    for candidate in (p, root / p):
        if candidate.is_file():
            return str(candidate.resolve())
    raise ValueError(f"dpo.accelerate_config: no such file {path} (nor under {root})")


def remove_work_dir(work: Path) -> None:
    """Remove a partition's trainer work dir, then its `<partition>/` and asset folders when left empty."""
    shutil.rmtree(work, ignore_errors=True)
    for parent in (work.parent, work.parent.parent):
        try:
            parent.rmdir()
        except OSError:
            break


def artifact_label(ref: ArtifactRef) -> str:
    """`asset[partition]@version`, the way manifests, MLflow and the audit name an artifact version."""
    return f"{ref.asset}[{ref.partition}]@{ref.version}"


def checkpoint_record(
    *,
    iteration: int,
    start: ArtifactRef,
    reference: ArtifactRef | None,
    pairs: ArtifactRef,
    settings: Any,
    seed: int,
    adapter: str | None,
    method: str = "dpo",
) -> dict[str, Any]:
    """The `prefscale_checkpoint.json` of a checkpoint: its inputs by version and how it was trained. `pairs` is
    what it trained from: the preference pairs (dpo) or the quality labels whose label model was the reward."""
    trained_from = (
        {"pairs_sha256": pairs.digest, "dpo": settings.model_dump(mode="json")}
        if method == "dpo"
        else {
            "reward_labels": artifact_label(pairs),
            "reward_labels_sha256": pairs.digest,
            "online": settings.model_dump(mode="json"),
        }
    )
    return {
        "iteration": iteration,
        "method": method,
        "started_from": artifact_label(start),
        "reference": artifact_label(reference if reference is not None else start),
        **trained_from,
        "seed": seed,
        "adapter": adapter,
    }


def dpo_reference(store: ArtifactStore, start: ArtifactRef, mode: str) -> ArtifactRef | None:
    """DPO's reference model when it differs from the policy it starts from: the base policy for `dpo.reference:
    base` after iteration 1; None means the starting policy itself (`start`, or the adapter disabled)."""
    if mode != "base":
        return None
    base = store.current(BASE_POLICY_ASSET, UNPARTITIONED)
    return base if base.path.resolve() != start.path.resolve() else None


def failure_message(error: BaseException, work: Path, command: str = "train-dpo") -> str:
    """Why `prefscale <command>` failed, and whether a trainer checkpoint in `work` lets a re-run resume."""
    ckpt = last_complete_checkpoint(work)
    kept = (
        f" The trainer checkpoint {ckpt} is kept: materializing this partition again resumes from it."
        if ckpt
        else ""
    )
    return f"prefscale {command} failed ({error}); its stderr is in the step's logs.{kept}"


@dataclass(frozen=True)
class TrainingData:
    """What an iteration's training reads besides the starting policy, by version.

    DPO: `data` is the iteration's `preference_pairs`. GRPO/RLOO: `data` is the iteration's `quality_labels`
    (its `label_model` table turns the LF votes on each online completion into P(high)), with the iteration's
    `prompts`, the base policy the model-backed LFs run on and, when the recipe's reward uses it, the
    `reward_model`. All of them are the checkpoint's manifest inputs, so its audit reaches the LF versions.
    """

    method: str
    data: ArtifactRef
    prompts: ArtifactRef | None = None
    base: ArtifactRef | None = None
    reward_model: ArtifactRef | None = None

    @property
    def refs(self) -> list[ArtifactRef]:
        return [r for r in (self.data, self.prompts, self.base, self.reward_model) if r is not None]


def training_data(
    store: ArtifactStore, iteration: int, method: str, reward_sources: tuple[str, ...]
) -> TrainingData:
    """The versions an iteration's `method` trains from; an online method fails naming a missing input."""
    part = str(iteration)
    if method == "dpo":
        return TrainingData(method, store.current(PAIRS_ASSET, part))
    labels = store.current(LABELS_ASSET, part)
    if not labels.file(f"{LABEL_MODEL_TABLE}.parquet").is_file():
        raise ValueError(
            f"{artifact_label(labels)} has no {LABEL_MODEL_TABLE} table (made before online training existed): "
            "materialize quality_labels again"
        )
    reward_model = (
        store.current(REWARD_MODEL_ASSET, UNPARTITIONED) if "reward_model" in reward_sources else None
    )
    return TrainingData(
        method,
        labels,
        prompts=store.current(PROMPTS_ASSET, part),
        base=store.current(BASE_POLICY_ASSET, UNPARTITIONED),
        reward_model=reward_model,
    )


TRAINERS = {"dpo": "trl.DPOTrainer", "grpo": "trl.GRPOTrainer", "rloo": "trl.RLOOTrainer"}
COMMANDS = {"dpo": "train-dpo", "grpo": "train-online", "rloo": "train-online"}  # the `prefscale` command


def online_fingerprint_extra(recipe: Any) -> dict[str, Any]:
    """What decides an online run's weights besides its settings and inputs: the method, the reward sources and
    the labeling functions that score each completion."""
    return {
        "method": recipe.training.method,
        "reward": recipe.reward.model_dump(mode="json"),
        "labeling": [lf.model_dump(mode="json") for lf in recipe.labeling.all_functions],
        "system_prompt": recipe.policy.system_prompt,
    }


def training_fingerprint(
    data: TrainingData,
    recipe: Any,
    start: ArtifactRef,
    reference: ArtifactRef | None,
    seed: int,
    compute: Any,
) -> str:
    """`dpo_fingerprint` of one iteration's training: its inputs' digests, the method's settings and, online, what
    scores the completions. DPO's is what it was before online methods existed."""
    online = data.method != "dpo"
    return dpo_fingerprint(
        policy_sha256=start.digest or start.version,
        pairs_sha256=":".join(ref.digest or ref.version for ref in data.refs),
        reference_sha256=(reference.digest or reference.version) if reference is not None else "",
        settings=recipe.online if online else recipe.dpo,
        seed=seed,
        compute=compute,
        world_size=1 if online else recipe.dpo.num_processes,
        extra=online_fingerprint_extra(recipe) if online else None,
    )


def training_command(
    data: TrainingData,
    recipe: Any,
    *,
    policy: Path,
    reference: Path | None,
    accelerate: str | None,
    recipe_ref: tuple[str, str],
    out: Path,
    work_dir: Path,
    seed: int,
    device: str,
    threads: int | None = None,
    dtype: str | None = None,
    report: Path | None = None,
) -> list[str]:
    """The whole command line of one iteration's training: `train-dpo` (through `accelerate launch` for several
    processes) or `train-online`. `recipe_ref` is (recipe name or path, overrides JSON), which the online
    command reloads."""
    common: dict[str, Any] = dict(
        out=out, work_dir=work_dir, seed=seed, device=device, threads=threads, dtype=dtype, report=report
    )
    if data.method == "dpo":
        return launcher(recipe.dpo.num_processes, accelerate) + train_dpo_args(
            policy=policy, pairs=data.data.file(), settings=recipe.dpo, reference=reference, **common
        )
    name, overrides = recipe_ref
    return launcher() + train_online_args(
        data, policy=policy, recipe=name, overrides_json=overrides, **common
    )


def train_online_args(
    data: TrainingData,
    *,
    policy: Path,
    out: Path,
    work_dir: Path,
    recipe: str,
    overrides_json: str,
    seed: int,
    device: str,
    threads: int | None = None,
    report: Path | None = None,
    dtype: str | None = None,
) -> list[str]:
    """The `train-online ...` arguments (after the launcher) for one GRPO/RLOO run on `data`."""
    if data.prompts is None or data.base is None:
        raise ValueError(f"{data.method} needs the iteration's prompts and the base policy")
    args = [
        "train-online",
        "--method",
        data.method,
        "--policy",
        str(policy),
        "--prompts",
        str(data.prompts.file()),
        "--label-model",
        str(data.data.file(f"{LABEL_MODEL_TABLE}.parquet")),
        "--base-policy",
        str(data.base.path),
        "--out",
        str(out),
        "--work-dir",
        str(work_dir),
        "--recipe",
        recipe,
        "--seed",
        str(seed),
        "--device",
        device,
    ]
    if overrides_json:
        args += ["--overrides-json", overrides_json]
    if data.reward_model is not None:
        args += ["--reward-model", str(data.reward_model.path)]
    return args + _optional_args(threads, dtype, report)
