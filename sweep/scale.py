"""Where a value sits in its dimension, measured in the scale the searcher samples it in.

A learning rate of 1e-3 in [1e-4, 1e-2] is in the middle (log scale), not near the low
edge; β2 = 0.999 in [0.9, 0.9999] is in the middle too (1-β on a log scale). Boundary
checks, refinement and plots all reason in these positions: 0 is the low edge, 1 the high
edge, and values outside [0, 1] lie beyond the range.
"""

from __future__ import annotations

import math

from sweep.space import Dimension


def to_scale(dim: Dimension, value: float) -> float:
    """The coordinate the searcher samples uniformly; increasing in ``value``."""
    if dim.type == "one_minus_log":
        return -math.log10(1.0 - float(value))
    if dim.scale == "log":
        return math.log10(float(value))
    return float(value)


def from_scale(dim: Dimension, coordinate: float) -> float:
    if dim.type == "one_minus_log":
        return 1.0 - 10.0 ** (-coordinate)
    if dim.scale == "log":
        return 10.0**coordinate
    return coordinate


def bounds(dim: Dimension) -> tuple[float, float]:
    assert dim.low is not None and dim.high is not None, "numeric dimensions have bounds"
    return to_scale(dim, dim.low), to_scale(dim, dim.high)


def position(dim: Dimension, value: float) -> float:
    """0 at ``dim.low``, 1 at ``dim.high``, linear in the sampling scale."""
    low, high = bounds(dim)
    return (to_scale(dim, value) - low) / (high - low)


def at_position(dim: Dimension, u: float) -> float:
    """Inverse of :func:`position`."""
    low, high = bounds(dim)
    return from_scale(dim, low + u * (high - low))
