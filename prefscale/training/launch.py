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
from pathlib import Path
from typing import Any

from prefscale.config.training import DPOSettings
from prefscale.storage import UNPARTITIONED, ArtifactRef, ArtifactStore
from prefscale.training.dpo import last_complete_checkpoint

CHECKPOINT_RECORD = "prefscale_checkpoint.json"
BASE_POLICY_ASSET = "base_policy"


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
    if threads:
        args += ["--threads", str(threads)]
    if dtype:
        args += ["--dtype", dtype]
    if report is not None:
        args += ["--report", str(report)]
    return args


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
    settings: DPOSettings,
    seed: int,
    adapter: str | None,
) -> dict[str, Any]:
    """The `prefscale_checkpoint.json` of a checkpoint: its inputs by version and how it was trained."""
    return {
        "iteration": iteration,
        "started_from": artifact_label(start),
        "reference": artifact_label(reference if reference is not None else start),
        "pairs_sha256": pairs.digest,
        "dpo": settings.model_dump(mode="json"),
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


def failure_message(error: BaseException, work: Path) -> str:
    """Why `prefscale train-dpo` failed, and whether a trainer checkpoint in `work` lets a re-run resume."""
    ckpt = last_complete_checkpoint(work)
    kept = (
        f" The trainer checkpoint {ckpt} is kept: materializing this partition again resumes from it."
        if ckpt
        else ""
    )
    return f"prefscale train-dpo failed ({error}); its stderr is in the step's logs.{kept}"
