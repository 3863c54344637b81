"""Coarse to fine: shrink each numeric dimension to the neighbourhood of the top trials.

After a round, each numeric dimension's next range is the span of the top trials (the same
"top quarter, at least 3" as the boundary check) plus a margin on each side, measured in
its sampling scale and relative to the ORIGINAL range, so a learning rate shrinks in
decades, not in absolute steps. The next range never leaves the original one, except at an
edge the boundary check flagged: there it extends to the check's suggested edge, so a
range that was wrong is corrected instead of narrowed onto its wrong edge.

Categorical dimensions keep all their values: a handful of trials is too little evidence to
drop a choice for good.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from sweep.config.space import INTEGER_TYPES, Dimension, at_position, position
from sweep.practice.boundary import BoundaryWarning, top_count

MARGIN = 0.1  # of the current range's width, added on each side of the top trials' span
MIN_WIDTH = 0.05  # of the original range's width: never narrower than this


def refine_space(
    dims: Sequence[Dimension],
    originals: Mapping[str, Dimension],
    ranked: Sequence[Mapping[str, Any]],
    warnings: Sequence[BoundaryWarning] = (),
) -> list[Dimension]:
    """The next round's dimensions. ``dims``: this round's; ``originals``: the configured
    ones by key; ``ranked``: sampled values of finished trials so far, best first."""
    top = ranked[: top_count(len(ranked))]
    by_edge = {(w.key, w.edge): w for w in warnings}
    refined = []
    for dim in dims:
        if not dim.is_numeric or dim.key not in originals:
            refined.append(dim)
            continue
        values = [float(v[dim.key]) for v in top if dim.key in v]
        low_edge, high_edge = by_edge.get((dim.key, "low")), by_edge.get((dim.key, "high"))
        refined.append(shrink(dim, originals[dim.key], values, low_edge, high_edge))
    return refined


def shrink(
    current: Dimension,
    original: Dimension,
    top_values: Sequence[float],
    extend_low: BoundaryWarning | None = None,
    extend_high: BoundaryWarning | None = None,
) -> Dimension:
    """``current`` narrowed around ``top_values`` (see the module docstring)."""
    if not top_values:
        return current
    assert current.low is not None and current.high is not None
    points = [position(original, v) for v in top_values]
    cur_lo, cur_hi = position(original, current.low), position(original, current.high)
    margin = MARGIN * (cur_hi - cur_lo)
    # The allowed span: the original range, or the current one if a round already widened it.
    allow_lo, allow_hi = min(0.0, cur_lo), max(1.0, cur_hi)
    lo = max(allow_lo, min(points) - margin)
    hi = min(allow_hi, max(points) + margin)
    # A flagged edge extends the allowed span to the suggested edge, and the range to it.
    if extend_low is not None and extend_low.suggested is not None:
        lo = allow_lo = min(allow_lo, position(original, extend_low.suggested))
    if extend_high is not None and extend_high.suggested is not None:
        hi = allow_hi = max(allow_hi, position(original, extend_high.suggested))
    if hi - lo < MIN_WIDTH:
        middle = min(max((lo + hi) / 2, allow_lo + MIN_WIDTH / 2), allow_hi - MIN_WIDTH / 2)
        lo, hi = middle - MIN_WIDTH / 2, middle + MIN_WIDTH / 2
    low, high = _snap(original, at_position(original, lo), at_position(original, hi))
    return dataclasses.replace(current, low=low, high=high)


def _snap(dim: Dimension, low: float, high: float) -> tuple[float, float]:
    """Integer and quantised bounds land on the grid, outward, and keep at least one step."""
    assert dim.low is not None and dim.high is not None
    step = dim.q if dim.q else (1.0 if dim.type in INTEGER_TYPES else 0.0)
    if step:
        low = math.floor(low / step + 1e-9) * step
        high = math.ceil(high / step - 1e-9) * step
        if high <= low:
            high = low + step
        if dim.scale == "log":
            low = max(low, step)
    if dim.type == "one_minus_log":
        high = min(high, 1.0 - 1e-12)
    return float(f"{low:.12g}"), float(f"{high:.12g}")
