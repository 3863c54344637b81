"""Plots people look at instead of reading tables, written as PNGs (matplotlib, Agg).

* ``metric_vs_params.png``: each trial's best metric against each tuned hyperparameter,
  on the axis scale it was sampled in (log for a learning rate, 1-β on a log axis for a
  momentum), the configured range's edges dashed, the top trials highlighted and the best
  starred. An edge with the top trials piled on it is the boundary check's warning, seen.
* ``learning_curves.png``: every trial's train and validation curves per epoch, the best
  trial bold, early stops (×) and divergences (▼) marked where the trial ended. Train
  better than validation and diverging: over-fitting; both poor: under-fitting.
* ``isolation.png``: with a scientific dimension, every trial per scientific value, the
  best per value joined by a line, the top trials' spread as a bar.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in trial workers
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from sweep.config.space import Dimension
from sweep.practice.boundary import top_count
from sweep.practice.scientific import Comparison
from sweep.report.results import TrialRow
from sweep.run.outcome import DIVERGED, ERROR, STOPPED_EARLY
from sweep.text import short_key

TOP_COLOUR, BEST_COLOUR, OTHER_COLOUR = "tab:orange", "tab:red", "tab:blue"
END_MARKERS = {STOPPED_EARLY: "x", DIVERGED: "v", ERROR: "X"}
BEST_LINE: dict[str, Any] = {"color": BEST_COLOUR, "linewidth": 2.2, "alpha": 1.0, "zorder": 3}
OTHER_LINE: dict[str, Any] = {"color": OTHER_COLOUR, "linewidth": 0.9, "alpha": 0.45, "zorder": 2}


def metric_vs_params(
    rows: Sequence[TrialRow], dims: Sequence[Dimension], metric: str, path: Path
) -> Path | None:
    """``rows``: TrialRows ranked best first; ``dims``: the configured search space."""
    scored = [row for row in rows if math.isfinite(row.best)]
    if not scored or not dims:
        return None
    top = {id(row) for row in scored[: top_count(len(scored))]}
    cols = min(3, len(dims))
    lines = math.ceil(len(dims) / cols)
    fig, axes = plt.subplots(lines, cols, figsize=(4.2 * cols, 3.4 * lines), squeeze=False)
    for ax, dim in zip(axes.flat, dims, strict=False):
        had = [row for row in scored if dim.key in row.values]  # conditional: where sampled
        if not had:
            ax.axis("off")
            continue
        xs = [_x(dim, row.values[dim.key]) for row in had]
        ys = [row.best for row in had]
        colours = [TOP_COLOUR if id(row) in top else OTHER_COLOUR for row in had]
        if dim.is_numeric:
            ax.scatter(xs, ys, c=colours, s=22, alpha=0.8)
            for edge in (dim.low, dim.high):
                ax.axvline(_x(dim, edge), color="grey", linestyle="--", linewidth=1)
            if dim.scale == "log":
                ax.set_xscale("log")
        else:
            jitter = np.random.default_rng(0).uniform(-0.12, 0.12, len(xs))
            ax.scatter(np.array(xs) + jitter, ys, c=colours, s=22, alpha=0.8)
            ax.set_xticks(range(len(dim.values)), [str(v) for v in dim.values])
        ax.scatter([xs[0]], [ys[0]], marker="*", s=180, color=BEST_COLOUR, zorder=3)
        name = short_key(dim.key)
        ax.set_xlabel(f"1 - {name} (log)" if dim.type == "one_minus_log" else name)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(dims) :]:
        ax.axis("off")
    fig.suptitle(f"{metric} per trial (best of its epochs); top trials orange, best starred")
    return _save(fig, path)


def _x(dim: Dimension, value: Any) -> float:
    if dim.type == "one_minus_log":
        return 1.0 - float(value)
    if dim.is_numeric:
        return float(value)
    return float(list(dim.values).index(value)) if value in dim.values else math.nan


def learning_curves(rows: Sequence[TrialRow], metric: str, path: Path) -> Path | None:
    histories = [(r, h) for r in rows if (h := r.history) is not None and "epoch" in h and len(h)]
    if not histories:
        return None
    columns = set().union(*(set(h.columns) for _, h in histories))
    pairs = [_pair(metric, columns)]
    if "loss" not in metric and {"train_loss", "val_loss"} & columns:
        pairs.append(("train_loss", "val_loss"))
    fig, axes = plt.subplots(
        len(pairs), 2, figsize=(10, 3.6 * len(pairs)), squeeze=False, sharex=True
    )
    best_row = rows[0] if rows and math.isfinite(rows[0].best) else None
    for line, (train, val) in enumerate(pairs):
        for col, key in enumerate((train, val)):
            ax = axes[line][col]
            if key is None:
                ax.axis("off")
                continue
            for row, history in histories:
                if key not in history:
                    continue
                data = history[["epoch", key]].dropna()
                ax.plot(data["epoch"], data[key], **(BEST_LINE if row is best_row else OTHER_LINE))
                marker = END_MARKERS.get(row.end_reason)
                if marker and len(data):
                    ax.scatter(
                        data["epoch"].iloc[-1:], data[key].iloc[-1:], marker=marker, color="black"
                    )
            ax.set_title(key)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
    fig.suptitle("Learning curves: best trial bold red; × stopped early, ▼ diverged")
    return _save(fig, path)


def _pair(metric: str, columns: set[str]) -> tuple[str | None, str | None]:
    """(train, validation) columns for ``metric``: val_acc → (train_acc, val_acc)."""
    for prefix in ("val_", "valid_", "validation_"):
        if metric.startswith(prefix):
            train = "train_" + metric[len(prefix) :]
            return (train if train in columns else None), metric
    return None, metric


def isolation(comparison: Comparison, path: Path) -> Path | None:
    values = [v for v in comparison.values if math.isfinite(v.best)]
    if not values:
        return None
    fig, ax = plt.subplots(figsize=(max(4.5, 1.6 * len(values) + 2), 4))
    rng = np.random.default_rng(0)
    for i, value in enumerate(values):
        metrics = [m for m in value.metrics if math.isfinite(m)]
        ax.scatter(i + rng.uniform(-0.1, 0.1, len(metrics)), metrics, color="grey", s=14)
        ax.scatter([i] * len(value.top), value.top, color=TOP_COLOUR, s=26)
        ax.vlines(i, min(value.top), max(value.top), color=TOP_COLOUR, linewidth=3)
    ax.plot(range(len(values)), [v.best for v in values], "-D", color=BEST_COLOUR, zorder=3)
    ax.set_xticks(range(len(values)), [v.label for v in values])
    ax.set_ylabel(f"best {comparison.metric}")
    ax.grid(alpha=0.3)
    ax.set_title("Isolation plot: best per value (nuisance tuned per value), top trials' spread")
    return _save(fig, path)


def pareto_front(
    rows: Sequence[TrialRow],
    front: Sequence[TrialRow],
    objectives: Sequence[tuple[str, str]],
    path: Path,
) -> Path | None:
    """The first objective against the second, every trial grey and the front joined up
    (a third objective and more are in the summary's table, not drawn)."""
    (y_name, _), (x_name, x_mode) = objectives[0], objectives[1]
    points = [
        r
        for r in rows
        if all(math.isfinite(r.objectives.get(m, math.nan)) for m in (x_name, y_name))
    ]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    ax.scatter(
        [r.objectives[x_name] for r in points],
        [r.objectives[y_name] for r in points],
        color=OTHER_COLOUR,
        s=22,
        alpha=0.7,
        label="trial",
    )
    on_front = sorted(front, key=lambda r: r.objectives[x_name], reverse=x_mode == "max")
    xs, ys = [r.objectives[x_name] for r in on_front], [r.objectives[y_name] for r in on_front]
    ax.plot(xs, ys, "-o", color=BEST_COLOUR, drawstyle="steps-post", zorder=3, label="Pareto front")
    for row, x, y in zip(on_front, xs, ys, strict=True):
        ax.annotate(str(row.number), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    low, high = min(r.objectives[x_name] for r in points), max(r.objectives[x_name] for r in points)
    if low > 0 and high / low > 20:  # sizes, latencies: orders of magnitude apart
        ax.set_xscale("log")
    ax.set_xlabel(f"{x_name} ({x_mode})")
    ax.set_ylabel(f"{y_name} ({objectives[0][1]})")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(f"Pareto front: {y_name} against {x_name} (trial numbers on the front)")
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
