"""How hyperparameters and metrics are written for people: 3.2e-03, 0.9722, 128."""

from __future__ import annotations

from typing import Any


def format_value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4):
        return f"{value:.1e}"
    return f"{value:.4g}"


def short_key(key: str) -> str:
    """``model.lr`` → ``lr``: enough to tell dimensions apart in a run name or table."""
    return key.rsplit(".", 1)[-1]


def describe_point(values: dict[str, Any]) -> str:
    return " ".join(f"{short_key(k)}={format_value(v)}" for k, v in values.items())
