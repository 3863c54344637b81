"""The Pareto front of a sweep with several objectives (``metric=[val_acc,param_count]
mode=[max,min]``): the trials no other trial dominates (is as good as on every objective
and better on one). There is no single best trial, so the summary shows the front,
``front/`` holds one re-runnable config per front trial, and MLflow tags them.

A trial is one point: each objective's value at the epoch where the first objective was
best (the epoch whose checkpoint it keeps; sweep/report/results.py :func:`at_best`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sweep.config.settings import Settings
from sweep.text import format_param, format_value, short_keys, table


class FrontRow(Protocol):
    """What the front reads of a trial (sweep/report/results.py's TrialRow has it)."""

    @property
    def number(self) -> int: ...
    @property
    def epochs(self) -> int: ...
    @property
    def values(self) -> dict[str, Any]: ...
    @property
    def objectives(self) -> dict[str, float]: ...


Row = TypeVar("Row", bound=FrontRow)

Objectives = Sequence[tuple[str, str]]  # (metric, mode), the first one first


def dominates(a: Mapping[str, float], b: Mapping[str, float], objectives: Objectives) -> bool:
    """``a`` is as good as ``b`` on every objective and better on at least one."""
    signs = [(a[m] - b[m]) * (1.0 if mode == "max" else -1.0) for m, mode in objectives]
    return all(s >= 0 for s in signs) and any(s > 0 for s in signs)


def pareto(rows: Sequence[Row], objectives: Objectives) -> list[Row]:
    """The rows on the front, in the order given (the ranked order: best first objective
    first). A row missing an objective is no point at all; equal points are all kept."""
    points = [
        row
        for row in rows
        if all(math.isfinite(row.objectives.get(m, math.nan)) for m, _ in objectives)
    ]
    return [
        row
        for row in points
        if not any(dominates(other.objectives, row.objectives, objectives) for other in points)
    ]


def heading(settings: Settings, on_front: int, trials: int) -> str:
    goals = ", ".join(f"{m} {mode}" for m, mode in settings.objectives)
    return (
        f"Pareto front ({goals}): {on_front} of {trials} trials, each at its best "
        f"{settings.metric} epoch"
    )


def cells(rows: Sequence[FrontRow], settings: Settings) -> list[list[str]]:
    """Header + one row per front trial: the objectives, then the tuned values."""
    dims = {dim.key: dim for dim in settings.dims}
    keys = list(dict.fromkeys(key for row in rows for key in row.values))
    header = ["trial", *settings.metrics, "epochs", *short_keys(keys).values()]
    body = [
        [
            str(row.number),
            *(format_value(row.objectives[m]) for m in settings.metrics),
            str(row.epochs),
            *[format_param(row.values[k], dims.get(k)) if k in row.values else "-" for k in keys],
        ]
        for row in rows
    ]
    return [header, *body]


def lines(
    front: Sequence[FrontRow], settings: Settings, trials: int, files: Sequence[Path]
) -> list[str]:
    """The summary's block: heading, table, where the configs are and how to re-train one."""
    if not front:
        return ["", f"No trial reported every objective ({', '.join(settings.metrics)})."]
    out = ["", heading(settings, len(front), trials)]
    out += ["  " + line for line in table(cells(front, settings))]
    if files:
        folder, name = files[0].parent, files[0].stem
        out += [
            f"  configs      {folder}/  (one per front trial)",
            f"  re-train one sweep --config-dir {folder} --config-name {name} single_trial=true",
        ]
    return out


def markdown(front: Sequence[FrontRow], settings: Settings, trials: int) -> list[str]:
    """The same block for the parent run's description."""
    if not front:
        return []
    grid = cells(front, settings)
    return [
        f"**{heading(settings, len(front), trials)}**",
        "",
        "| " + " | ".join(grid[0]) + " |",
        "|" + "---|" * len(grid[0]),
        *("| " + " | ".join(line) + " |" for line in grid[1:]),
    ]
