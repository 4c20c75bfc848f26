"""`python tests/reliability/run_small.py HOME SELECTION [PARTITION]`: materialize assets of the small test
configuration (tests/integration/conftest.py's SMALL, deep-merged with $RELIABILITY_OVERRIDES) in this process.

The reliability suite starts it in a session of its own and SIGKILLs the whole group in the middle of a step.
SELECTION is comma-separated asset keys, or `warehouse` for the dbt models. Exit code 0 on success, 1 on failure.
With $RELIABILITY_PERSISTENT_INSTANCE set, the run is recorded in the instance at $DAGSTER_HOME (as `make run`'s
runs are, pools included); otherwise in an ephemeral one.
"""

import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.chdir(REPO)

import dagster as dg  # noqa: E402

from prefscale.config.recipe import deep_merge  # noqa: E402
from tests.integration.conftest import SMALL  # noqa: E402


def main(argv: list[str]) -> int:
    home, selection = argv[0], argv[1]
    partition = argv[2] if len(argv) > 2 else None
    import definitions
    from resources import default_resources

    overrides = deep_merge(SMALL, json.loads(os.environ.get("RELIABILITY_OVERRIDES") or "{}"))
    resources = default_resources(home=home, recipe="embedded", overrides_json=json.dumps(overrides))
    sel = (
        dg.AssetSelection.groups("warehouse")
        if selection == "warehouse"
        else dg.AssetSelection.assets(*selection.split(","))
    )
    persistent = bool(os.environ.get("RELIABILITY_PERSISTENT_INSTANCE"))
    with dg.DagsterInstance.get() if persistent else dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            list(definitions.defs.assets),
            selection=sel,
            partition_key=partition,
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
