"""`base_policy`: the model iteration 1 samples from, saved as a Hugging Face model folder."""

import json
from pathlib import Path

import dagster as dg

from prefscale.storage import MANIFEST, UNPARTITIONED, ArtifactRef, ArtifactStore, MissingArtifactError
from resources import ComputeResource, RecipeResource, StorageResource

BASE_POLICY = dg.AssetKey("base_policy")
GGUF_CONVERTER_VERSION = "1"  # bump when prefscale.policy.convert_gguf changes what it writes


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
    from prefscale.data import domain
    from prefscale.policy.io import load_policy, save_policy
    from prefscale.policy.tiny import pretrain_tiny_llama

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
    elif r.policy.source == "gguf":
        from prefscale.config.policy import resolve_gguf
        from prefscale.policy.gguf import convert_gguf
        from prefscale.storage import file_sha256

        gguf_path = resolve_gguf(r.policy.gguf)
        gguf_sha = file_sha256(gguf_path)
        params = {
            "source": "gguf",
            "converter": GGUF_CONVERTER_VERSION,
            "gguf": r.policy.gguf.model_dump(mode="json", exclude_none=True),
            "gguf_sha256": gguf_sha,
        }
        current = _current_if_same(storage.store, params)
        if current is not None:  # converted once: the same file gives the same weights
            ref, conv = current, None
            context.log.info(f"base policy: {gguf_path.name} already converted ({ref.version}); reusing it")
        else:
            conv_box = {}

            def build(d: Path) -> None:
                conv = convert_gguf(gguf_path, d)
                conv_box["c"] = conv
                facts = {k: v for k, v in conv.__dict__.items() if k != "seconds"}
                (d / "prefscale_policy.json").write_text(
                    json.dumps({"source": "gguf", **facts}, sort_keys=True)
                )

            ref = storage.store.publish_dir(BASE_POLICY.path[-1], UNPARTITIONED, build, params=params)
            conv = conv_box["c"]
        meta.update({"gguf_file": str(gguf_path), "gguf_sha256": gguf_sha, "reused": conv is None})
        if conv is not None:
            meta.update(
                {
                    "model_type": conv.model_type,
                    "parameters": conv.n_parameters,
                    "vocab_size": conv.vocab_size,
                    "chat_template": conv.has_chat_template,
                    "convert_seconds": round(conv.seconds, 1),
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
