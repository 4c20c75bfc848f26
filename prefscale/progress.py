"""Progress of long steps (generation, model-backed LFs, scoring, training, evaluation) as log lines.

A `Progress` logs to the `prefscale.progress` logger when it starts and each time the work crosses another tenth
of its total, so a step logs at most 11 lines however often it advances:

    generation (transformers) 120/480 responses (25%) 3.1/s, ETA 1m56s

Where the lines go is the application's choice: Dagster captures the `prefscale` loggers into the run log
(`python_logs.managed_python_loggers` in dagster.yaml), `log_to_stderr` shows them on the command line, and
`prefscale train-dpo` forwards them through Dagster Pipes. Nothing is printed to stdout.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TextIO

LOGGER_NAME = "prefscale.progress"
log = logging.getLogger(LOGGER_NAME)
if logging.getLogger("prefscale").level == logging.NOTSET:  # INFO unless the application chose a level: what
    logging.getLogger("prefscale").setLevel(logging.INFO)  # Dagster's managed `prefscale` logger passes on
STEPS = 10  # a line each time `done` crosses another 1/STEPS of the total


def duration(seconds: float) -> str:
    """`42s`, `1m56s`, `2h05m`: a duration to the second (to the minute past an hour)."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def rate_text(per_second: float) -> str:
    """`3.1/s`, `7730/s`, or `4.2/min` below one every ten seconds."""
    if per_second >= 100:
        return f"{per_second:.0f}/s"
    if per_second >= 0.1:
        return f"{per_second:.3g}/s"
    return f"{per_second * 60:.2g}/min"


_quiet = threading.local()


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """No `Progress` made inside (in this thread) logs anything: a step repeated many times, such as the
    labeling functions scoring each online-training step's completions, would flood the run log."""
    depth = getattr(_quiet, "depth", 0)
    _quiet.depth = depth + 1
    try:
        yield
    finally:
        _quiet.depth = depth


class Progress:
    """Done / total of one long step, logged at the start and at every tenth (and so at the end).

    `advance(k)` adds `k` units, `update(done)` sets the count; both take an optional `detail` appended to the
    line they log (a training loss). `start` units were done before (a resumed run): the rate and ETA count
    from there. Safe to advance from several threads. A total of 0, or no label, or one made under `quiet()`, logs nothing.
    """

    def __init__(
        self,
        label: str | None,
        total: int,
        unit: str = "items",
        *,
        start: int = 0,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        quiet_here = getattr(_quiet, "depth", 0) > 0
        self.label, self.unit = label or "", unit
        self.total = max(0, int(total)) if label and not quiet_here else 0
        self.done = self._first = min(max(0, int(start)), self.total)
        self._log = logger or log
        self._clock = clock
        self._start = clock()
        self._tenths = self.done * STEPS // self.total if self.total else 0  # the last tenth logged
        self._lock = threading.Lock()
        if self.total:
            self._log.info("%s %d/%d %s", self.label, self.done, self.total, self.unit)

    def advance(self, n: int = 1, detail: str = "") -> None:
        """`n` more units done."""
        with self._lock:
            self._set(self.done + n, detail)

    def update(self, done: int, detail: str = "") -> None:
        """`done` units done in all (a trainer's global step)."""
        with self._lock:
            self._set(done, detail)

    def _set(self, done: int, detail: str) -> None:
        self.done = min(max(0, int(done)), self.total)
        if not self.total:
            return
        tenths = self.done * STEPS // self.total
        if tenths > self._tenths:
            self._tenths = tenths
            self._log.info("%s", self.line(detail))

    def line(self, detail: str = "") -> str:
        """What a progress line says now: done/total, percent, rate and ETA (elapsed time once done)."""
        elapsed = max(self._clock() - self._start, 1e-9)
        pct = 100 * self.done // self.total if self.total else 100
        text = f"{self.label} {self.done}/{self.total} {self.unit} ({pct}%)"
        rate = (self.done - self._first) / elapsed
        if rate > 0:
            text += f" {rate_text(rate)}"
            text += (
                f", done in {duration(elapsed)}"
                if self.done >= self.total
                else f", ETA {duration((self.total - self.done) / rate)}"
            )
        return f"{text}, {detail}" if detail else text


class _Stderr(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a line is logged (or to a fixed stream): `prefscale` INFO lines
    as they are, anything else with its level and logger name."""

    def __init__(self, stream: TextIO | None) -> None:
        logging.Handler.__init__(self)  # as logging's own last-resort handler: no stream attribute to set
        self._fixed = stream
        self.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        self._other = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return self._fixed or sys.stderr

    def format(self, record: logging.LogRecord) -> str:
        ours = record.name.startswith("prefscale") and record.levelno == logging.INFO
        return super().format(record) if ours else self._other.format(record)


def log_to_stderr(stream: TextIO | None = None, level: int = logging.INFO) -> logging.Handler | None:
    """Show the `prefscale` loggers' INFO lines (progress included) on stderr, for command-line entry points
    (stdout stays the command's output); once per process: the handler added, None when one already was.

    The handler sits on the root logger, so a library's warning through the root logger no longer installs a
    second handler (`logging.warning` calls `basicConfig`) that would print every progress line twice; other
    loggers keep their levels (warnings and errors, as Python shows them without any handler).
    """
    root = logging.getLogger()
    if any(isinstance(h, _Stderr) for h in root.handlers):
        return None
    handler = _Stderr(stream)
    root.addHandler(handler)
    ours = logging.getLogger("prefscale")
    if ours.level == logging.NOTSET or ours.level > level:
        ours.setLevel(level)
    return handler


def forward_progress(emit: Callable[[str], None]) -> logging.Handler:
    """Send every progress line to `emit` (Dagster Pipes' `pipes.log.info` in `prefscale train-dpo`); remove
    the returned handler from `logging.getLogger(LOGGER_NAME)` when done."""

    class _Forward(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            emit(record.getMessage())

    handler = _Forward(logging.INFO)
    log.addHandler(handler)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    return handler
