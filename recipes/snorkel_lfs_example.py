"""Snorkel labeling functions for the embedded Lumora domain, written as a team writes them for Snorkel.

Nothing here knows prefscale: each is a `snorkel.labeling.LabelingFunction` that `PandasLFApplier` could apply
to the candidates as they are. A recipe runs them with `kind: snorkel`, e.g.

    labeling:
      functions:
        - name: mentions_refund_policy
          kind: snorkel
          object: recipes.snorkel_lfs_example:mentions_refund_policy

Each row `x` is a pandas Series of a candidate's columns (`x.prompt`, `x.response`, `x.task_type`,
`x.finish_reason`, ...). Labels follow Snorkel's convention for two classes: HIGH (1), LOW (0), ABSTAIN (-1).
"""

from __future__ import annotations

import re
from typing import Any

from snorkel.labeling import labeling_function
from snorkel.preprocess import preprocessor

ABSTAIN, LOW, HIGH = -1, 0, 1

_SIGNATURE = re.compile(r"^-\s*\w+ support$", re.IGNORECASE)


@preprocessor()
def reply_lines(x: Any) -> Any:
    """The response's non-empty lines, the sign-off (`- Lumora Support`) left out, as `x.reply_lines`."""
    lines = [ln.strip() for ln in x.response.splitlines()]
    x.reply_lines = [ln for ln in lines if ln and not _SIGNATURE.match(ln)]
    return x


@labeling_function(
    resources={"tasks": frozenset({"billing", "complaint"}), "words": ("refund", "credit", "dispute")}
)
def mentions_refund_policy(x: Any, tasks: frozenset[str], words: tuple[str, ...]) -> int:
    """Billing and complaint replies that say how the money comes back (refund, credit, dispute) are better."""
    if x.task_type not in tasks:
        return ABSTAIN
    text = x.response.lower()
    return HIGH if any(w in text for w in words) else ABSTAIN


@labeling_function(pre=[reply_lines])
def only_asks_back(x: Any) -> int:
    """A reply that is nothing but questions back to the customer does not help."""
    if x.reply_lines and all(ln.endswith("?") for ln in x.reply_lines):
        return LOW
    return ABSTAIN


@labeling_function(name="names_the_device")
def echoes_device(x: Any) -> int:
    """Troubleshooting replies that name the customer's device (from the prompt) read as attentive; replies
    cut at the token limit abstain."""
    if x.task_type != "troubleshooting" or x.finish_reason != "stop":
        return ABSTAIN
    devices = ("router", "modem", "phone", "tv box", "wifi extender", "sim card", "smart hub", "laptop")
    device = next((d for d in devices if d in x.prompt.lower()), None)
    return HIGH if device is not None and device in x.response.lower() else ABSTAIN


LFS = [mentions_refund_policy, only_asks_back, echoes_device]
"""Every function here, in the order a recipe lists them."""
