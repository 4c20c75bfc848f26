"""`base_policy`: the model iteration 1 samples from, saved as a Hugging Face model folder."""

import json
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from prefscale.storage import MANIFEST, UNPARTITIONED, ArtifactRef, ArtifactStore, MissingArtifactError
from resources import ComputeResource, RecipeResource, StorageResource

if TYPE_CHECKING:
    from prefscale.policy.build import BasePolicyPlan

BASE_POLICY = dg.AssetKey("base_policy")


@dg.asset(
    key=BASE_POLICY,
    group_name="policy",
    kinds={"pytorch", "huggingface"},
    code_version="1",
    pool="gpu",
    description="Embedded recipe: a byte-level BPE tokenizer and a tiny Llama trained on the demo corpus. "
    "Pretrained: the model resolved by hub id or path, with its revision and hash recorded. GGUF: the file "
    "dequantized once into a float32 model folder (weights, tokenizer, chat template), keyed by its sha256.",
)
def base_policy(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    recipe: RecipeResource,
    compute: ComputeResource,
) -> dg.MaterializeResult:
    from prefscale.policy.build import build_base_policy, plan_base_policy

    r = recipe.load()
    dev = compute.resolve(r.policy.dtype)
    plan = plan_base_policy(r.policy, r.seed)
    meta: dict[str, object] = {"recipe": r.name, "source": r.policy.source, "device": dev.describe()}
    # A GGUF file converts once: the same file (sha256) and converter give the same weights.
    current = _current_if_same(storage.store, plan.params) if plan.source == "gguf" else None
    report = None
    if current is not None:
        ref = current
        context.log.info(f"base policy: {plan.gguf_path} already converted ({ref.version}); reusing it")
    else:
        box = {}

        def build(d: Path) -> None:
            box["report"] = build_base_policy(r.policy, r.seed, d, dev, plan)

        ref = storage.store.publish_dir(BASE_POLICY.path[-1], UNPARTITIONED, build, params=plan.params)
        report = box["report"].facts
    meta.update(_metadata(plan, report))
    meta.update({"path": dg.MetadataValue.path(str(ref.path)), "sha256": ref.digest})
    context.log.info(f"base policy published at {ref.path}")
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(ref.version))


def _metadata(plan: "BasePolicyPlan", report: dict | None) -> dict[str, object]:
    """What a person reads about the build: corpus and losses, the converted file, or the resolved model."""
    if plan.source == "embedded":
        return {
            "corpus_examples": report["n_examples"],
            "parameters": report["n_parameters"],
            "train_steps": report["steps"],
            "loss_first": round(report["first_loss"], 4),
            "loss_final": round(report["final_loss"], 4),
            "train_seconds": round(report["seconds"], 1),
            "corpus_sample": dg.MetadataValue.md(
                "\n\n".join(f"**{p}**\n\n```\n{x}\n```" for p, x in report["corpus_sample"])
            ),
        }
    if plan.source == "gguf":
        meta: dict[str, object] = {
            "gguf_file": str(plan.gguf_path),
            "gguf_sha256": plan.params["gguf_sha256"],
            "reused": report is None,
        }
        if report is not None:
            meta.update(
                {
                    "model_type": report["model_type"],
                    "parameters": report["n_parameters"],
                    "vocab_size": report["vocab_size"],
                    "chat_template": report["has_chat_template"],
                    "convert_seconds": round(report["seconds"], 1),
                }
            )
        return meta
    return {"model": plan.params["model"], "revision": plan.params["revision"] or "default"}


def _current_if_same(store: ArtifactStore, params: dict) -> ArtifactRef | None:
    """The current base policy when it was made with exactly `params` (and is intact), else None."""
    try:
        ref = store.current(BASE_POLICY.path[-1], UNPARTITIONED)
        manifest = json.loads((ref.path / MANIFEST).read_text())
    except (MissingArtifactError, FileNotFoundError, json.JSONDecodeError):
        return None
    if manifest.get("params") != json.loads(json.dumps(params)):
        return None
    return ref if (ref.path / "config.json").is_file() else None
