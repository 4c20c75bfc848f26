"""Reading the DuckDB warehouse that dbt builds under `PREFSCALE_HOME`.

DuckDB lets one process hold the file while any process writes it, so a reader that arrives during `dbt build`
gets "Could not set lock on file". Readers wait for the build (a short back-off) instead of failing; dbt in turn
waits for short readers (`retries.connect_attempts` in dbt/profiles.yml).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

READ_WAIT_S = 120.0  # longer than a warehouse build of the embedded recipe (about 20 s on 2 cores)


class WarehouseBusy(RuntimeError):
    """The warehouse stayed locked by a writer for longer than the reader would wait."""


def connect_read_only(path: str | Path, wait_s: float = READ_WAIT_S) -> Any:
    """A read-only DuckDB connection to `path`, waiting up to `wait_s` while another process writes it."""
    import duckdb

    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(path), read_only=True)
        except duckdb.IOException as e:
            if "lock" not in str(e).lower():
                raise
            if time.monotonic() >= deadline:
                raise WarehouseBusy(
                    f"warehouse {path} is locked by another process (a dbt build?) after waiting {wait_s:.0f} s"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
