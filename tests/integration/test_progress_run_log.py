"""Progress of long steps in the Dagster run log: generation and LFs in process (managed `prefscale` loggers),
DPO training out of process (forwarded through Pipes); a line every tenth, not every batch or step."""

import re

import dagster as dg
import pytest

pytestmark = pytest.mark.integration

LINE = re.compile(
    r"^(?P<label>.+) (?P<done>\d+)/(?P<total>\d+) (?P<unit>\w+)( \((?P<pct>\d+)%\) (?P<rest>.*))?$"
)


def _step_messages(pipeline, asset: str, partition: str) -> list[str]:
    """The user log messages of the latest run that materialized `asset[partition]`, from its step."""
    records = pipeline.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    assert records, f"{asset}[{partition}] was never materialized"
    run_id = records[0].event_log_entry.run_id
    return [
        e.user_message
        for e in pipeline.instance.all_logs(run_id)
        if e.dagster_event is None and e.step_key == asset and e.user_message
    ]


def _progress(messages: list[str], label: str) -> list[re.Match]:
    return [m for msg in messages if (m := LINE.match(msg)) and m["label"] == label]


def test_generation_and_training_progress_reach_the_run_log(pipeline):
    messages = _step_messages(pipeline, "candidates", "1")
    gen = _progress(messages, "generation (transformers)")
    assert gen, messages
    total = 12 * 3  # SMALL: 12 prompts per iteration, 3 candidates each
    assert gen[0]["done"] == "0" and int(gen[0]["total"]) == total and gen[0]["unit"] == "responses"
    assert gen[-1]["done"] == gen[-1]["total"] and gen[-1]["pct"] == "100"
    assert re.search(r"/(s|min), done in \d", gen[-1]["rest"])
    assert 2 <= len(gen) <= 11

    messages = _step_messages(pipeline, "dpo_checkpoint", "1")
    dpo = _progress(messages, "DPO training")
    assert dpo, messages
    assert dpo[0]["done"] == "0" and dpo[0]["unit"] == "steps"
    assert dpo[-1]["done"] == dpo[-1]["total"] and "loss=" in dpo[-1]["rest"]
    assert len(dpo) <= 11  # the per-step metrics go to custom messages, not the log
