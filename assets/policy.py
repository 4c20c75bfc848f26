"""`base_policy`: the model iteration 1 samples from, saved as a Hugging Face model folder."""

import json
from pathlib import Path

import dagster as dg

from prefscale.storage import UNPARTITIONED
from resources import ComputeResource, RecipeResource, StorageResource

BASE_POLICY = dg.AssetKey("base_policy")


@dg.asset(
    key=BASE_POLICY,
    group_name="policy",
    kinds={"pytorch", "huggingface"},
    code_version="1",
    pool="gpu",
    description="Embedded recipe: a byte-level BPE tokenizer and a tiny Llama trained on the demo corpus. "
    "Other recipes: the pretrained model resolved by hub id or path, with its revision and hash recorded.",
)
def base_policy(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    recipe: RecipeResource,
    compute: ComputeResource,
) -> dg.MaterializeResult:
    from prefscale import domain
    from prefscale.policy import load_policy, pretrain_tiny_llama, save_policy

    r = recipe.load()
    dev = compute.resolve()
    meta: dict[str, object] = {"recipe": r.name, "source": r.policy.source, "device": dev.describe()}

    if r.policy.source == "embedded":
        cfg = r.policy.embedded
        pool = domain.make_prompt_pool(cfg.corpus_prompts, r.seed + 1001)
        corpus = domain.make_corpus(pool, cfg.responses_per_prompt, r.seed + 1002)
        report = {}

        def build(d: Path) -> None:
            rep = pretrain_tiny_llama(corpus, cfg, d, dev, r.seed)
            report.update(rep.__dict__)
            # What defines the weights, not how long it took: identical runs publish identical versions.
            facts = {k: v for k, v in rep.__dict__.items() if k != "seconds"}
            (d / "prefscale_policy.json").write_text(
                json.dumps({"source": "embedded", **facts}, sort_keys=True)
            )

        params = {"source": "embedded", "seed": r.seed, "embedded": cfg.model_dump(mode="json")}
        ref = storage.store.publish_dir(BASE_POLICY.path[-1], UNPARTITIONED, build, params=params)
        meta.update(
            {
                "corpus_examples": report["n_examples"],
                "parameters": report["n_parameters"],
                "train_steps": report["steps"],
                "loss_first": round(report["first_loss"], 4),
                "loss_final": round(report["final_loss"], 4),
                "train_seconds": round(report["seconds"], 1),
                "corpus_sample": dg.MetadataValue.md(
                    "\n\n".join(
                        f"**{p}**\n\n```\n{x}\n```"
                        for p, x in corpus.head(3).select("prompt", "response").iter_rows()
                    )
                ),
            }
        )
    else:
        model_ref = r.policy.model or ""

        def build(d: Path) -> None:
            model, tok = load_policy(model_ref, dev, revision=r.policy.revision)
            save_policy(model, tok, d)
            (d / "prefscale_policy.json").write_text(
                json.dumps(
                    {
                        "source": model_ref,
                        "revision": r.policy.revision,
                        "commit": getattr(model.config, "_commit_hash", None),
                    }
                )
            )

        params = {"source": "pretrained", "model": model_ref, "revision": r.policy.revision}
        ref = storage.store.publish_dir(BASE_POLICY.path[-1], UNPARTITIONED, build, params=params)
        meta.update({"model": model_ref, "revision": r.policy.revision or "default"})
    meta.update({"path": dg.MetadataValue.path(str(ref.path)), "sha256": ref.digest})
    context.log.info(f"base policy published at {ref.path}")
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(ref.version))
