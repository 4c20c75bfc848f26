"""The model card (`README.md`, Hugging Face's format) inside every published checkpoint folder.

A checkpoint copied anywhere still says where it came from: the recipe, the model it started from, every artifact
it was made from (asset, partition, version, sha256: prompts, candidates, the labeling functions by name and
version, the label model, rewards, pairs), the DPO settings and where its MLflow run and evaluations are. The card
holds only what is fixed by the inputs (no run ids, no timings), so the same inputs still give the same version.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefscale.config.policy import PolicyConfig
from prefscale.config.training import DPOSettings, OnlineSettings
from prefscale.lineage.audit import audit_chain, node_summary
from prefscale.lineage.mlflow_runs import registered_model_name
from prefscale.storage import ArtifactRef, ArtifactStore
from prefscale.training.dpo import ADAPTER_DIR
from prefscale.training.launch import CHECKPOINT_RECORD, artifact_label, checkpoint_record

CARD_FILE = "README.md"


def _lf_versions(nodes: list[Any], iteration: int) -> list[tuple[str, str]]:
    """The labeling functions that voted on this iteration's candidates (its `lf_votes`), by name and version."""
    out: dict[str, str] = {}
    for node in nodes:
        if node.ref.asset == "lf_votes" and node.ref.partition == str(iteration):
            for f in node.params.get("functions", []):
                out.setdefault(str(f.get("lf_name")), str(f.get("version")))
    return sorted(out.items())


def _unique(nodes: list[Any]) -> list[Any]:
    seen, out = set(), []
    for node in nodes:
        key = (node.ref.asset, node.ref.partition, node.ref.version)
        if key not in seen:
            seen.add(key)
            out.append(node)
    return out


def checkpoint_card(
    store: ArtifactStore,
    *,
    recipe: str,
    base_model: str | None,
    iteration: int,
    start: ArtifactRef,
    reference: ArtifactRef | None,
    pairs: ArtifactRef,
    settings: DPOSettings | OnlineSettings,
    seed: int,
    mlflow_experiment: str,
    method: str = "dpo",
) -> str:
    """The card's text: YAML metadata (base model, library, tags) and a body naming the whole lineage."""
    from huggingface_hub import ModelCard, ModelCardData  # imports requests & co: only when a card is made

    # the pairs' chain holds the starting policy's (it sampled the candidates); the start's own, in case not
    chain = _unique(
        audit_chain(store, pairs, verify=False).nodes + audit_chain(store, start, verify=False).nodes
    )
    data = ModelCardData(
        base_model=base_model,
        library_name="transformers",
        tags=["prefscale", method, "trl", "weak-supervision", f"iteration-{iteration}"],
    )
    dpo: Mapping[str, Any] = settings.model_dump(mode="json")
    lora = dpo.get("lora") or {}
    if method == "dpo":
        how = (
            f"on the preference pairs `{artifact_label(pairs)}` (sha256 `{pairs.digest}`), whose chosen and "
            "rejected replies were ranked by a reward built from the SMEs' labeling functions below."
        )
        knobs = f"loss `{dpo.get('loss_type')}`, beta {dpo.get('beta')}, epochs {dpo.get('num_train_epochs')}"
    else:
        how = (
            f"by {method.upper()} against the SMEs' labeling functions below, scored online through the label "
            f"model of `{artifact_label(pairs)}` (sha256 `{pairs.digest}`)."
        )
        knobs = f"KL beta {dpo.get('beta')}, group size {dpo.get('num_generations')}, steps {dpo.get('max_steps')}"
    lines = [
        f"# prefscale `{recipe}`: {method.upper()} checkpoint of iteration {iteration}",
        "",
        f"Trained by prefscale from `{artifact_label(start)}` {how}",
        "",
        f"- recipe: `{recipe}`; base model: `{base_model or 'built by the recipe (see base_policy below)'}`",
        f"- reference model: `{artifact_label(reference if reference is not None else start)}`",
        f"- {method.upper()}: {knobs}, learning rate {dpo.get('learning_rate')}, "
        f"LoRA r {lora.get('r', 'full fine-tuning')}, seed {seed}",
        f"- MLflow: experiment `{mlflow_experiment}`, run `dpo_checkpoint-{iteration}`, registered model "
        f"`{registered_model_name(recipe)}`",
        f"- evaluations: `eval_results[{iteration}]`; `prefscale audit {iteration}` lists them and verifies every "
        "hash below",
        "",
        "## Labeling functions",
        "",
        "| function | version |",
        "|---|---|",
        *(f"| `{name}` | `{version}` |" for name, version in _lf_versions(chain, iteration)),
        "",
        "## Lineage",
        "",
        "| artifact | sha256 | settings |",
        "|---|---|---|",
        *(
            f"| `{artifact_label(n.ref)}` | `{n.ref.digest}` | {node_summary(n).replace('|', '/')} |"
            for n in chain
        ),
        "",
        f"## {method.upper()} settings",
        "",
        "```json",
        *json.dumps(dpo, indent=2, sort_keys=True).splitlines(),
        "```",
    ]
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"))


def write_provenance(
    folder: Path,
    store: ArtifactStore,
    *,
    recipe: str,
    policy: PolicyConfig,
    iteration: int,
    start: ArtifactRef,
    reference: ArtifactRef | None,
    pairs: ArtifactRef,
    settings: DPOSettings | OnlineSettings,
    seed: int,
    mlflow_experiment: str,
    method: str = "dpo",
) -> None:
    """Write a trained checkpoint folder's `prefscale_checkpoint.json` (its inputs by version, how it was trained)
    and its model card (`base_model`: the recipe's hub model when the policy is a pretrained one)."""
    adapter = ADAPTER_DIR if (folder / ADAPTER_DIR).is_dir() else None
    base_model = policy.model if policy.source == "pretrained" else None
    record = checkpoint_record(
        iteration=iteration,
        start=start,
        reference=reference,
        pairs=pairs,
        settings=settings,
        seed=seed,
        adapter=adapter,
        method=method,
    )
    (folder / CHECKPOINT_RECORD).write_text(json.dumps(record, indent=2))
    card = checkpoint_card(
        store,
        recipe=recipe,
        base_model=base_model,
        iteration=iteration,
        start=start,
        reference=reference,
        pairs=pairs,
        settings=settings,
        seed=seed,
        mlflow_experiment=mlflow_experiment,
        method=method,
    )
    (folder / CARD_FILE).write_text(card)
