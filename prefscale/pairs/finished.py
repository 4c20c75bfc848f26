"""`best_vs_worst_finished`: best vs the worst *finished* candidate, so a pair contrasts what a reply says.

With a weak policy most samples are cut at `max_new_tokens`, and `unfinished_is_worst` ranks them last: plain
best-vs-worst then pairs a finished reply with a cut-off one almost every time, and DPO learns mostly to stop
early (the SmolLM2 ablation in BENCHMARKS.md). This strategy takes the rejected reply from the finished ones
whenever two finished candidates differ by at least `min_margin`, so the pair differs in the labeling functions'
judgement of the content; otherwise (fewer than two finished, or finished ones tied) it falls back to
best-vs-worst, which still teaches the policy to finish.
"""

from __future__ import annotations

from prefscale.pairs.strategies import Draw, Row, eligible, extremes, strategy

FINISHED = "stop"


@strategy()
def best_vs_worst_finished(ranked: list[Row], draw: Draw) -> tuple[Row, Row] | str:
    """Best finished vs worst finished when they differ by `min_margin`; else best vs worst."""
    finished = [r for r in ranked if r.get("finish_reason") == FINISHED]
    if len(finished) >= 2 and eligible(finished[0], finished[-1], draw.min_margin):
        return finished[0], finished[-1]
    return extremes(ranked)
