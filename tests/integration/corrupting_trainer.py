"""`prefscale train-dpo` for real, then truncate the weights it saved: a checkpoint folder that cannot load.

tests/integration/test_blocking_checks.py launches this script in place of `python -m prefscale.cli`, so the
dpo_checkpoint asset publishes a corrupt `model.safetensors` through its normal path.
"""

import sys
from pathlib import Path

from prefscale.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    code = main(argv)
    out = Path(argv[argv.index("--out") + 1])
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    sys.exit(code)
