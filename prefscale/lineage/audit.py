"""Lineage audit: walk a checkpoint's chain of artifacts back to its prompts and LFs, verifying every hash."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefscale.storage import ArtifactRef, ArtifactStore, MissingArtifactError


@dataclass
class AuditNode:
    ref: ArtifactRef
    depth: int
    params: dict[str, Any]
    problems: list[str]
    repeated: bool = False  # already shown higher up in the chain


@dataclass
class AuditReport:
    root: ArtifactRef
    nodes: list[AuditNode] = field(default_factory=list)
    evaluations: list[AuditNode] = field(default_factory=list)
    training_runs: list[dict[str, Any]] = field(default_factory=list)
    model_versions: list[Any] = field(
        default_factory=list
    )  # prefscale.lineage.mlflow_runs.RegisteredCheckpoint
    requested: str = ""  # how the checkpoint was named, when not by iteration or path (an MLflow version)

    @property
    def problems(self) -> list[str]:
        return [p for n in (*self.nodes, *self.evaluations) for p in n.problems]

    @property
    def ok(self) -> bool:
        return not self.problems


def resolve_checkpoint(store: ArtifactStore, what: str) -> ArtifactRef:
    """An iteration number (its current `dpo_checkpoint`) or the path of a stored version folder."""
    if what.isdigit():
        return store.current("dpo_checkpoint", what)
    return _resolve_path(store, what)


def resolve_registered(store: ArtifactStore, registered: Any) -> ArtifactRef:
    """The stored `dpo_checkpoint` version an MLflow registered model version holds.

    Found by its tags `dagster.partition` and `checkpoint.version` (as the dpo_checkpoint asset registers it),
    else by its source path; either must lie in this store.
    """
    tags = registered.tags
    partition, version = tags.get("dagster.partition"), tags.get("checkpoint.version")
    where = tags.get("checkpoint.path") or registered.source
    if partition and version:
        ref = store.resolve("dpo_checkpoint", partition, version)
        if where and Path(where).expanduser().resolve() != ref.path:
            raise ValueError(
                f"{registered.label} holds {where}, which is not in this store ({store.root}): "
                "pass the --home it was trained in"
            )
        return ref
    if not where:
        raise ValueError(f"{registered.label}: no checkpoint.version / dagster.partition tags and no source")
    return _resolve_path(store, where)


def _resolve_path(store: ArtifactStore, what: str) -> ArtifactRef:
    path = Path(what).expanduser().resolve()
    if path.is_symlink() or path.name == "current":
        path = path.resolve()
    try:
        rel = path.relative_to(store.root)
    except ValueError:
        raise ValueError(
            f"{what}: not an iteration number and not a version folder under {store.root}"
        ) from None
    parts = rel.parts
    if len(parts) != 3:
        raise ValueError(f"{what}: expected {store.root}/<asset>/<partition>/<version>")
    ref = store.resolve(*parts)
    if not ref.path.is_dir():
        raise MissingArtifactError(f"{what}: no such stored version")
    return ref


def audit_chain(
    store: ArtifactStore, root: ArtifactRef, expected_sha256: str | None = None, verify: bool = True
) -> AuditReport:
    """Every artifact `root` was made from, depth first, each verified against its manifest and digests.

    `expected_sha256`: the digest recorded for `root` elsewhere (an MLflow model version's tag); a different
    stored digest is a problem like any other mismatch. `verify=False` only walks the manifests (no file is
    hashed, evaluations are not searched): the lineage as recorded.
    """
    report = AuditReport(root=root)
    seen: set[tuple[str, str, str]] = set()

    def visit(ref: ArtifactRef, depth: int, expected_sha: str | None) -> None:
        key = (ref.asset, ref.partition, ref.version)
        if key in seen:
            report.nodes.append(AuditNode(ref, depth, {}, [], repeated=True))
            return
        seen.add(key)
        problems = store.verify(ref) if verify else []
        if expected_sha and ref.digest and expected_sha != ref.digest:
            problems.append(
                f"{ref.path}: recorded sha256 {expected_sha[:16]}… differs from the stored {ref.digest[:16]}…"
            )
        try:
            manifest = store.manifest(ref)
        except (MissingArtifactError, ValueError):  # verify() has already named the manifest problem
            report.nodes.append(AuditNode(ref, depth, {}, problems))
            return
        report.nodes.append(AuditNode(ref, depth, manifest.get("params", {}), problems))
        for inp in manifest.get("inputs", []):
            visit(store.resolve(inp["asset"], inp["partition"], inp["version"]), depth + 1, inp.get("sha256"))

    visit(root, 0, expected_sha256)
    if not verify:
        return report
    # Evaluations made from this checkpoint (downstream, found by their recorded inputs).
    eval_root = store.root / "eval_results"
    for slot in sorted(eval_root.iterdir()) if eval_root.is_dir() else []:
        for version in store.versions("eval_results", slot.name):
            ref = store.resolve("eval_results", slot.name, version)
            try:
                inputs = store.manifest(ref).get("inputs", [])
            except MissingArtifactError:
                continue
            if any(i["asset"] == root.asset and i["version"] == root.version for i in inputs):
                report.evaluations.append(
                    AuditNode(ref, 1, store.manifest(ref).get("params", {}), store.verify(ref))
                )
    return report


def node_summary(node: AuditNode) -> str:
    """The settings that shaped one artifact, in one line (its manifest's params)."""
    p, asset = node.params, node.ref.asset
    if asset == "prompts" or asset == "eval_prompts":
        data = p.get("data", {})
        src = data.get("path") or f"embedded pool of {data.get('pool_size')}"
        return f"source={data.get('source')} ({src}) seed={p.get('seed')}" + (
            f" file_sha256={p['file_sha256'][:16]}…" if p.get("file_sha256") else ""
        )
    if asset == "candidates":
        s = p.get("sampling", {})
        return f"n={s.get('n')} temperature={s.get('temperature')} top_p={s.get('top_p')} max_new_tokens={s.get('max_new_tokens')} seed={p.get('seed')}"
    if asset == "lf_votes":
        return "labeling functions: " + ", ".join(
            f"{f['lf_name']}@{f['version']}" for f in p.get("functions", [])
        )
    if asset == "quality_labels":
        return f"{p.get('label_model')} n_epochs={p.get('n_epochs')} l2={p.get('l2')} prec_init={p.get('prec_init')}"
    if asset == "reward_scores":
        return f"source={p.get('source')}"
    if asset == "preference_pairs":
        return f"strategy={p.get('strategy')} min_margin={p.get('min_margin')} sha256={node.ref.digest[:16]}…"
    if asset == "dpo_checkpoint" and (d := p.get("grpo") or p.get("rloo")):
        lora = d.get("lora") or {}
        return (
            f"{p.get('trainer')} online beta={d.get('beta')} group={d.get('num_generations')} "
            f"steps={d.get('max_steps')} lr={d.get('learning_rate')} lora_r={lora.get('r', 'full')} seed={p.get('seed')}"
        )
    if asset == "dpo_checkpoint":
        d = p.get("dpo", {})
        lora = d.get("lora") or {}
        return (
            f"{p.get('trainer')} loss={d.get('loss_type')} beta={d.get('beta')} lr={d.get('learning_rate')} "
            f"epochs={d.get('num_train_epochs')} lora_r={lora.get('r', 'full')} seed={p.get('seed')}"
        )
    if asset == "base_policy":
        return f"source={p.get('source')}" + (f" model={p['model']}" if p.get("model") else "")
    if asset == "eval_results":
        return f"judge={p.get('judge')} samples_per_prompt={p.get('samples_per_prompt')}"
    return ""


def render(report: AuditReport, store: ArtifactStore) -> str:
    """The chain as an indented text tree, then the training runs, evaluations and verdict."""
    root = report.root
    lines = [f"audit of {root.asset}[{root.partition}]@{root.version} (sha256 {root.digest or 'unknown'})"]
    if report.requested:
        lines.append(f"requested as {report.requested}")
    for mv in report.model_versions:
        run = f" (MLflow run {mv.run_id})" if mv.run_id else ""
        lines.append(f"registered as {mv.label}{run}")
    lines.append("")
    for n in report.nodes:
        indent = "  " * n.depth
        head = f"{indent}{n.ref.asset}[{n.ref.partition}]@{n.ref.version}"
        if n.repeated:
            lines.append(f"{head}  (shown above)")
            continue
        status = "ok" if not n.problems else "MISMATCH"
        lines.append(f"{head}  {status}  {node_summary(n)}".rstrip())
    if report.training_runs:
        lines.append("")
        lines.append("training runs (MLflow):")
        for run in report.training_runs:
            lines.append(
                f"  run {run['run_id']}  dagster run {run.get('dagster_run_id', '?')}  {run.get('metrics', '')}"
            )
    lines.append("")
    if report.evaluations:
        lines.append("evaluations of this checkpoint:")
        for n in report.evaluations:
            status = "ok" if not n.problems else "MISMATCH"
            lines.append(f"  {n.ref.asset}[{n.ref.partition}]@{n.ref.version}  {status}  {node_summary(n)}")
            res = n.ref.path / "results.parquet"
            if res.is_file() and not n.problems:
                import polars as pl

                row = pl.read_parquet(res).row(0, named=True)
                lines.append(
                    f"    win_rate={row['win_rate']:.3f} mean_adherence={row['mean_adherence']:.3f} "
                    f"avg_length={row['avg_length']:.1f} n_total={row['n_total']}"
                )
    else:
        lines.append("evaluations of this checkpoint: none stored")
    lines.append("")
    if report.ok:
        lines.append(
            f"verified {sum(not n.repeated for n in report.nodes) + len(report.evaluations)} artifacts: all hashes match"
        )
    else:
        lines.append(f"{len(report.problems)} problem(s):")
        lines.extend(f"  - {p}" for p in report.problems)
    return "\n".join(lines)
