"""What a finished sweep teaches, beyond its best trial: boundary warnings, what each
refinement round achieved, the scientific comparison, the notices, and the plots.

Everything here is plain data and strings (``Review.lines()`` for the summary,
``Review.as_dict()`` for ``checks.json``), so the summary can lay it out as it likes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweep.config.settings import Settings
from sweep.folder import CHECKS_FILE, PLOTS_DIR
from sweep.practice import advice, boundary
from sweep.practice import scientific as roles
from sweep.practice.boundary import BoundaryWarning
from sweep.report import front, plots
from sweep.report.results import TrialRow
from sweep.text import format_value, short_key, table
from sweep.track import tags

if TYPE_CHECKING:  # mlflow: imported by the driver where the store opens
    from sweep.track.tracker import Tracker


@dataclass
class Round:
    """A refinement round, as the round table and checks.json show it."""

    stage: str
    group: str
    round: int
    trials: int
    best: float
    space: dict[str, tuple[float | None, float | None]]


@dataclass
class Review:
    notices: list[str]
    warnings: list[BoundaryWarning]
    rounds: list[Round]
    comparison: roles.Comparison | None
    plots: list[Path]

    def lines(self, metric: str) -> list[str]:
        out: list[str] = []
        if self.rounds:
            out += ["", *round_table(self.rounds, metric)]
        if self.comparison is not None:
            out += ["", *self.comparison.lines()]
        if self.warnings:
            out += ["", "Search-space boundaries:"]
            out += [f"  warning: {w.message}" for w in self.warnings]
            overrides = [w.override for w in self.warnings if w.override]
            if overrides:
                out.append(f"  next sweep: sweep {' '.join(dict.fromkeys(overrides))}")
        if self.notices:
            out += ["", *self.notices]
        if self.plots:
            out += ["", "Plots: " + ", ".join(str(p) for p in self.plots)]
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "notices": self.notices,
            "boundary_warnings": [w.as_dict() for w in self.warnings],
            "rounds": [dataclasses.asdict(r) for r in self.rounds],
            "scientific": self.comparison.as_dict() if self.comparison else None,
            "plots": [p.name for p in self.plots],
        }

    def record(self, folder: Path, tracker: Tracker) -> None:
        """checks.json and the plots on the parent run; one tag per boundary warning, so
        the runs list can filter sweeps whose ranges were wrong."""
        checks = folder / CHECKS_FILE
        checks.write_text(json.dumps(self.as_dict(), indent=2, default=str))
        tracker.log_artifact(checks)
        for plot in self.plots:
            tracker.log_artifact(plot, artifact_path=PLOTS_DIR)
        warnings: dict[str, str] = {}
        for w in self.warnings:
            tag = f"{tags.BOUNDARY}.{w.key}.{w.edge} {w.group}".strip()
            warnings[re.sub(r"[^\w.\- /]", "_", tag)] = w.message
        if warnings:
            tracker.set_tags(warnings)


def review(
    rows: Sequence[TrialRow], settings: Settings, rounds: list[Round], folder: Path
) -> Review:
    """``rows``: every trial, ranked; ``rounds``: those of refinement chains, if any."""
    metric, plot_dir = settings.metric, folder / PLOTS_DIR
    notices, warnings = advice.before_sweep(settings), boundary_warnings(rows, settings)
    comparison = roles.compare(settings.dims, rows, metric, settings.mode)
    made = [
        plots.metric_vs_params(rows, settings.dims, metric, plot_dir / "metric_vs_params.png"),
        plots.learning_curves(rows, metric, plot_dir / "learning_curves.png"),
    ]
    if comparison is not None:
        made.append(plots.isolation(comparison, plot_dir / "isolation.png"))
    if settings.several_objectives:
        objectives = settings.objectives
        on_front = front.pareto(rows, objectives)
        made.append(plots.pareto_front(rows, on_front, objectives, plot_dir / "pareto_front.png"))
    return Review(notices, warnings, rounds, comparison, [p for p in made if p is not None])


def boundary_warnings(rows: Sequence[TrialRow], settings: Settings) -> list[BoundaryWarning]:
    """The check on the configured ranges, per scientific value (each has its own optimum:
    SGD's best learning rate is not Adam's)."""
    scientific = [d.key for d in settings.dims if d.role == "scientific"]
    nuisance = [d for d in settings.dims if d.role != "scientific"]
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        if math.isfinite(row.best):
            groups.setdefault(tuple(row.values.get(k) for k in scientific), []).append(row.values)
    warnings = []
    for combo, ranked in groups.items():
        label = ", ".join(f"{short_key(k)}={v}" for k, v in zip(scientific, combo, strict=True))
        warnings += boundary.check(nuisance, ranked, group=label)
    return warnings


def round_table(rounds: list[Round], metric: str) -> list[str]:
    header = ["stage", "trials", f"best {metric}", "space"]
    body = [
        [
            r.stage,
            str(r.trials),
            format_value(r.best) if math.isfinite(r.best) else "-",
            "  ".join(
                f"{short_key(k)} {format_value(lo)}..{format_value(hi)}"
                for k, (lo, hi) in r.space.items()
            ),
        ]
        for r in rounds
    ]
    return [
        "Coarse to fine (each round searches around the best of the rounds before):",
        *("  " + line for line in table([header, *body])),
    ]
