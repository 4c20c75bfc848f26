"""Progress of long steps: at most 11 lines a step, done / total, rate and ETA, on the tiny model's real paths."""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace

import polars as pl
import pytest

from prefscale.data import domain
from prefscale.generation.base import Sampling
from prefscale.generation.transformers_backend import generate_transformers
from prefscale.labeling.apply import apply_all_lfs
from prefscale.labeling.context import LFContext
from prefscale.labeling.model_kinds import PerplexityLF
from prefscale.policy.io import load_policy
from prefscale.progress import (
    LOGGER_NAME,
    Progress,
    duration,
    forward_progress,
    log_to_stderr,
    rate_text,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def lines(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    return lambda: [r.getMessage() for r in caplog.records if r.name == LOGGER_NAME]


def test_a_thousand_advances_log_at_most_eleven_lines(lines):
    p = Progress("work", 1000, "rows")
    for _ in range(1000):
        p.advance()
    got = lines()
    assert len(got) == 11  # the start, then every tenth
    assert got[0] == "work 0/1000 rows"
    assert [g.split()[1] for g in got[1:]] == [f"{k}/1000" for k in range(100, 1001, 100)]
    assert "(100%)" in got[-1] and ", done in " in got[-1]


def test_a_line_says_done_total_percent_rate_and_eta(lines):
    clock = Clock()
    p = Progress("candidates: generation", 480, "responses", clock=clock)
    clock.now = 38.7
    p.advance(120)
    clock.now = 60.0
    p.advance(5)  # no tenth crossed: no line
    clock.now = 154.8
    p.update(480, "loss=0.25")
    assert lines() == [
        "candidates: generation 0/480 responses",
        "candidates: generation 120/480 responses (25%) 3.1/s, ETA 1m56s",
        "candidates: generation 480/480 responses (100%) 3.1/s, done in 2m35s, loss=0.25",
    ]


def test_big_jumps_log_once_and_slow_rates_read_per_minute(lines):
    clock = Clock()
    p = Progress("judge", 10, "pairs", clock=clock)
    clock.now = 600.0
    p.advance(3)  # 0 -> 30 %: one line, not three
    p.advance(100)  # clipped at the total
    assert lines()[1:] == [
        "judge 3/10 pairs (30%) 0.3/min, ETA 23m20s",
        "judge 10/10 pairs (100%) 1/min, done in 10m00s",
    ]
    assert (duration(0.4), duration(59.6), duration(3725)) == ("0s", "1m00s", "1h02m")
    assert (rate_text(7731.2), rate_text(12.34), rate_text(0.05)) == ("7731/s", "12.3/s", "3/min")


def test_nothing_to_count_logs_nothing(lines):
    empty = Progress("nothing", 0)
    empty.advance(3)
    empty.update(0)
    silent = Progress(None, 100)
    silent.advance(100)
    assert lines() == []
    assert empty.done == 0 and silent.done == 0


def test_a_resumed_count_starts_where_it_was(lines):
    clock = Clock()
    p = Progress("DPO training", 40, "steps", start=20, clock=clock)
    clock.now = 10.0
    p.update(24)
    assert lines() == ["DPO training 20/40 steps", "DPO training 24/40 steps (60%) 0.4/s, ETA 40s"]


def test_threads_advancing_together_still_log_each_tenth_once(lines):
    p = Progress("endpoint", 800, "responses")

    def work() -> None:
        for _ in range(100):
            p.advance()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert p.done == 800
    assert len(lines()) == 11 and "800/800" in lines()[-1]


def test_log_to_stderr_and_pipes_forwarding_leave_stdout_alone(capsys):
    root = logging.getLogger()
    earlier = [h for h in root.handlers if type(h).__name__ == "_Stderr"]  # an earlier CLI test's (`main`)
    for h in earlier:
        root.removeHandler(h)
    handler = log_to_stderr()  # writes to whatever sys.stderr is at the time: here pytest's capture
    forwarded: list[str] = []
    forward = forward_progress(forwarded.append)
    try:
        assert handler is not None and log_to_stderr() is None  # once per process
        Progress("cli", 2, "items").advance(2)
        logging.getLogger("some.library").warning("careful")
    finally:
        root.removeHandler(handler)
        logging.getLogger(LOGGER_NAME).removeHandler(forward)
        for h in earlier:
            root.addHandler(h)
    out, err = capsys.readouterr()
    assert out == ""
    assert "cli 0/2 items\n" in err and "cli 2/2 items (100%) " in err
    assert " WARNING some.library: careful\n" in err
    assert forwarded[0] == "cli 0/2 items" and forwarded[1].startswith("cli 2/2 items (100%)")


# --- the real paths, on the tiny model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded(tiny_policy, cpu):
    return load_policy(tiny_policy[0], cpu)


def test_generation_logs_progress_per_batch(loaded, lines):
    model, tok = loaded
    prompts = domain.make_prompt_pool(5, seed=3)
    generate_transformers(model, tok, prompts, 4, Sampling(max_new_tokens=4), batch_size=2, seed=1)
    got = [g for g in lines() if g.startswith("generation (transformers) ")]
    assert got[0] == "generation (transformers) 0/20 responses"
    assert len(got) == 11 and "20/20 responses (100%)" in got[-1]  # 10 batches of 2: one line each


def test_model_backed_lf_logs_progress_under_its_name(tiny_policy, cpu, lines):
    rows = pl.DataFrame(
        {
            "candidate_id": [f"c{i}" for i in range(6)],
            "prompt": ["How do I reset my router?"] * 6,
            "response": ["Restart it and wait two minutes."] * 6,
            "task_type": ["support"] * 6,
        }
    )
    lf = PerplexityLF(name="ppl", model=str(tiny_policy[0]), high_below=2.0, batch_size=4)
    apply_all_lfs(rows, [lf], LFContext(compute=cpu))
    got = [g for g in lines() if g.startswith("LF ppl (perplexity)")]
    assert got[0] == "LF ppl (perplexity) 0/6 responses"
    assert "4/6 responses (66%)" in got[1] and "6/6 responses (100%)" in got[-1]


def test_training_callback_reports_steps_with_the_loss(lines):
    from prefscale.training.dpo import progress_callback

    cb = progress_callback()
    state = SimpleNamespace(is_world_process_zero=True, max_steps=20, global_step=0)
    cb.on_train_begin(None, state, None)
    for step in range(1, 21):
        state.global_step = step
        cb.on_log(None, state, None, logs={"loss": 0.7 - step / 100, "rewards/margins": step / 50})
    cb.on_train_end(None, state, None)
    got = lines()
    assert got[0] == "DPO training 0/20 steps" and len(got) == 11
    assert got[1].startswith("DPO training 2/20 steps (10%) ") and got[1].endswith("loss=0.68, margin=0.04")
    assert "20/20 steps (100%)" in got[-1] and "done in" in got[-1]
    other_rank = progress_callback()
    other_rank.on_train_begin(None, SimpleNamespace(is_world_process_zero=False, max_steps=20), None)
    assert other_rank.progress is None
