"""`annotation_tasks` and `sme_eval_tasks`: what SMEs should see in Label Studio, pushed idempotently.

- `annotation_tasks[i]`: the prompts of iteration i whose candidates the weak supervision is least sure about
  (label-model uncertainty + LF conflict), plus a random share for unbiased accuracy estimates, as ranking tasks.
- `sme_eval_tasks[i]`: held-out prompts with the base's and checkpoint i's reply in random order, for a blind
  "which is better / tie" vote: the `sme` judge.

Each task carries a key (iteration, prompt, the candidates' version or both replies' digests); a push skips the
keys the project already has, so re-materializing never duplicates a task. Both need LABEL_STUDIO_API_KEY.
"""

import dagster as dg
import polars as pl

from assets.candidates import CANDIDATES
from assets.evaluation import EVAL_BASELINE, EVAL_RESULTS
from assets.labels import LF_VOTES, QUALITY_LABELS
from assets.partitions import ITERATIONS, iteration_of
from prefscale.annotation.label_studio import KEY_FIELD, LabelStudioError
from prefscale.annotation.pairwise import pairwise_config, pairwise_tasks
from prefscale.annotation.ranking import ranking_config, ranking_tasks, select_prompts
from prefscale.evaluation.comparisons import heldout_comparisons
from prefscale.report import markdown_table
from resources import RecipeResource, StorageResource
from resources.label_studio import LabelStudioResource

ANNOTATION_TASKS = dg.AssetKey("annotation_tasks")
SME_EVAL_TASKS = dg.AssetKey("sme_eval_tasks")
PUSHED_SCHEMA = {"task_key": pl.String, "prompt_id": pl.String, "new": pl.Boolean}


class AnnotationTasksConfig(dg.Config):
    """How many prompts SMEs get per iteration, and the share drawn at random (not by uncertainty)."""

    tasks: int = 20
    random_share: float = 0.2


class SMEEvalTasksConfig(dg.Config):
    """How many held-out pairs (one per prompt) SMEs judge per iteration."""

    pairs: int = 20


def _push(label_studio: LabelStudioResource, title: str, config_xml: str, tasks: list[dict]) -> pl.DataFrame:
    try:
        client = label_studio.client()
        project = client.ensure_project(
            title, config_xml, "Tasks pushed by prefscale; do not edit their data."
        )
        new = set(client.push_new(project, tasks))
    except LabelStudioError as e:
        raise dg.Failure(description=f"could not push to Label Studio: {e}") from None
    keys = [t["data"][KEY_FIELD] for t in tasks]
    return pl.DataFrame(
        {
            "task_key": keys,
            "prompt_id": [t["data"]["prompt_id"] for t in tasks],
            "new": [k in new for k in keys],
        },
        schema=PUSHED_SCHEMA,
    )


def _result(pushed: pl.DataFrame, ref, project: str, extra: dict) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": pushed.height,
            "new_tasks": int(pushed["new"].sum()),
            "already_there": int((~pushed["new"]).sum()),
            "project": project,
            **extra,
            "version": ref.version,
        },
        data_version=dg.DataVersion(ref.version),
    )


@dg.asset(
    key=ANNOTATION_TASKS,
    group_name="labeling",
    kinds={"labelstudio", "parquet"},
    code_version="1",
    partitions_def=ITERATIONS,
    deps=[CANDIDATES, LF_VOTES, QUALITY_LABELS],
    description="Ranking tasks for SMEs in Label Studio: the iteration's most uncertain prompts (label model + "
    "LF conflict) plus a random share; pushed idempotently (a task per prompt and candidates version).",
)
def annotation_tasks(
    context: dg.AssetExecutionContext,
    config: AnnotationTasksConfig,
    storage: StorageResource,
    recipe: RecipeResource,
    label_studio: LabelStudioResource,
) -> dg.MaterializeResult:
    r = recipe.load()
    i = str(iteration_of(context, r.iterations))
    store = storage.store
    cands_ref = store.current(CANDIDATES.path[-1], i)
    cands = pl.read_parquet(cands_ref.file())
    labels_ref, votes_ref = store.current(QUALITY_LABELS.path[-1], i), store.current(LF_VOTES.path[-1], i)
    selection = select_prompts(
        cands,
        pl.read_parquet(labels_ref.file()),
        pl.read_parquet(votes_ref.file()),
        n=config.tasks,
        random_share=config.random_share,
        seed=r.seed,
    )
    tasks = ranking_tasks(cands, selection, iteration=i, candidates_version=cands_ref.version, seed=r.seed)
    n_items = int(cands.group_by("prompt_id").len()["len"].max() or 2)
    pushed = _push(label_studio, label_studio.ranking_project, ranking_config(n_items), tasks)
    table = pushed.join(selection, on="prompt_id", how="left")
    ref = store.write_tables(
        ANNOTATION_TASKS.path[-1],
        i,
        {"data": table},
        inputs=[cands_ref, labels_ref, votes_ref],
        params={
            "tasks": config.tasks,
            "random_share": config.random_share,
            "project": label_studio.ranking_project,
        },
    )
    shown = table.select("prompt_id", "reason", "uncertainty", "conflict", "new")
    return _result(
        pushed,
        ref,
        label_studio.ranking_project,
        {"selection": dg.MetadataValue.md(markdown_table(shown.head(20)))},
    )


@dg.asset(
    key=SME_EVAL_TASKS,
    group_name="evaluation",
    kinds={"labelstudio", "parquet"},
    code_version="1",
    partitions_def=ITERATIONS,
    deps=[EVAL_RESULTS, EVAL_BASELINE],
    description="Blind pairwise tasks for SMEs in Label Studio: a held-out prompt, the base's and the "
    "checkpoint's reply in random order; the votes become the `sme` judge. Pushed idempotently.",
)
def sme_eval_tasks(
    context: dg.AssetExecutionContext,
    config: SMEEvalTasksConfig,
    storage: StorageResource,
    recipe: RecipeResource,
    label_studio: LabelStudioResource,
) -> dg.MaterializeResult:
    r = recipe.load()
    i = iteration_of(context, r.iterations)
    compared = heldout_comparisons(storage.store, i)
    pairs = next(c.pairs for c in compared.comparisons if c.variant == "checkpoint")
    tasks = pairwise_tasks(pairs, iteration=str(i), n=config.pairs, seed=r.seed)
    pushed = _push(label_studio, label_studio.evaluation_project, pairwise_config(), tasks)
    ref = storage.store.write_tables(
        SME_EVAL_TASKS.path[-1],
        str(i),
        {"data": pushed},
        inputs=compared.inputs,
        params={"pairs": config.pairs, "project": label_studio.evaluation_project},
    )
    return _result(pushed, ref, label_studio.evaluation_project, {})
