"""`build_base_policy`: the model iteration 1 samples from, for each `policy.source`, as one model folder.

The `base_policy` asset and the pair ablation both build it here, so the three sources behave the same in both:

- `embedded`: a byte-level BPE tokenizer and a tiny Llama trained on the demo corpus (seeded: identical runs give
  identical weights);
- `gguf`: the GGUF file dequantized into a float32 model folder (weights, tokenizer, chat template);
- `pretrained`: the model resolved by hub id or path through `from_pretrained`, saved as it loaded.

Each writes `prefscale_policy.json` (what defines the weights, not how long it took) beside the weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefscale.compute import Compute
from prefscale.config.policy import PolicyConfig, resolve_gguf
from prefscale.data import domain
from prefscale.policy.gguf import convert_gguf
from prefscale.policy.io import load_policy, save_policy
from prefscale.policy.tiny import pretrain_tiny_llama
from prefscale.storage import file_sha256

POLICY_FILE = "prefscale_policy.json"
GGUF_CONVERTER_VERSION = "1"  # bump when prefscale.policy.gguf.convert_gguf changes what it writes


@dataclass(frozen=True)
class BasePolicyPlan:
    """What a base policy is made from (`params`: recorded in the artifact's manifest; equal params give equal
    weights) and, for a GGUF source, the resolved file."""

    source: str
    params: dict[str, Any]
    gguf_path: Path | None = None


@dataclass
class BasePolicyReport:
    """What `build_base_policy` did: facts for a person (corpus size, losses, parameters, seconds)."""

    source: str
    facts: dict[str, Any] = field(default_factory=dict)


def plan_base_policy(policy: PolicyConfig, seed: int) -> BasePolicyPlan:
    """The base policy's defining parameters, resolving a GGUF file (and hashing it) before anything is built."""
    if policy.source == "embedded":
        params = {"source": "embedded", "seed": seed, "embedded": policy.embedded.model_dump(mode="json")}
        return BasePolicyPlan("embedded", params)
    if policy.source == "gguf":
        path = resolve_gguf(policy.gguf)
        params = {
            "source": "gguf",
            "converter": GGUF_CONVERTER_VERSION,
            "gguf": policy.gguf.model_dump(mode="json", exclude_none=True),
            "gguf_sha256": file_sha256(path),
        }
        return BasePolicyPlan("gguf", params, path)
    params = {"source": "pretrained", "model": policy.model or "", "revision": policy.revision}
    return BasePolicyPlan("pretrained", params)


def build_base_policy(
    policy: PolicyConfig, seed: int, out_dir: Path, compute: Compute, plan: BasePolicyPlan | None = None
) -> BasePolicyReport:
    """Write the base policy of `policy` (a recipe's `policy` section) into `out_dir`; see the module docs.

    `plan` (from `plan_base_policy`) avoids resolving and hashing a GGUF file twice.
    """
    plan = plan or plan_base_policy(policy, seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if plan.source == "embedded":
        cfg = policy.embedded
        pool = domain.make_prompt_pool(cfg.corpus_prompts, seed + 1001)
        corpus = domain.make_corpus(pool, cfg.responses_per_prompt, seed + 1002)
        rep = pretrain_tiny_llama(corpus, cfg, out_dir, compute, seed)
        facts = {k: v for k, v in rep.__dict__.items() if k != "seconds"}
        record = {"source": "embedded", **facts}
        sample = corpus.head(3).select("prompt", "response").rows()
        report = BasePolicyReport("embedded", {**rep.__dict__, "corpus_sample": sample})
    elif plan.source == "gguf":
        assert plan.gguf_path is not None
        conv = convert_gguf(plan.gguf_path, out_dir)
        facts = {k: v for k, v in conv.__dict__.items() if k != "seconds"}
        record = {"source": "gguf", **facts}
        report = BasePolicyReport("gguf", dict(conv.__dict__))
    else:
        model, tok = load_policy(policy.model or "", compute, revision=policy.revision)
        save_policy(model, tok, out_dir)
        commit = getattr(model.config, "_commit_hash", None)
        record = {"source": policy.model, "revision": policy.revision, "commit": commit}
        report = BasePolicyReport("pretrained", {"model": policy.model, "commit": commit})
    # the pretrained record keeps its historical key order (the folder's digest is its version)
    (out_dir / POLICY_FILE).write_text(json.dumps(record, sort_keys=plan.source != "pretrained"))
    return report
