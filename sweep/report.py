"""After the sweep: the results table, the best config as a re-runnable YAML, and the
summary a user reads at the end."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from sweep.display import format_value, short_key
from sweep.outcome import end_reason, trial_number
from sweep.redact import redact
from sweep.settings import Settings
from sweep.space import apply_values, config_values

RESULTS_FILE = "results.csv"
BEST_FILE = "best.yaml"
CONFIG_FILE = "config.yaml"
# Hydra settings a standalone best.yaml needs to behave like conf/config.yaml.
_HYDRA_DEFAULTS = [
    "_self_",
    {"override hydra/job_logging": "none"},
    {"override hydra/hydra_logging": "none"},
]


@dataclass
class TrialRow:
    trial_id: str
    status: str
    end_reason: str
    epochs: int
    best: float  # best value of the metric over the trial's epochs (NaN if none)
    final: float  # value at its last epoch
    values: dict[str, Any]
    checkpoint: str | None
    history: pd.DataFrame | None = field(default=None, repr=False)
    experiment_tag: str = ""
    stage: str = ""  # the round / scientific value it ran in, when a sweep has several

    @property
    def number(self) -> int:
        return trial_number(self.trial_id, self.experiment_tag)


def collect(results: Any, settings: Settings) -> list[TrialRow]:
    """One row per trial from Tune's ResultGrid, best first."""
    rows = []
    for result in results:
        last = result.metrics or {}
        status = "ERROR" if result.error else "TERMINATED"
        history = result.metrics_dataframe
        series = (
            history[settings.metric]
            if history is not None and settings.metric in history
            else pd.Series(dtype=float)
        )
        series = series[series.map(lambda v: isinstance(v, (int, float)) and math.isfinite(v))]
        best = (
            (series.max() if settings.mode == "max" else series.min()) if len(series) else math.nan
        )
        checkpoint = None
        if len(series):
            ckpt = result.get_best_checkpoint(settings.metric, settings.mode)
            checkpoint = ckpt.path if ckpt is not None else None
        rows.append(
            TrialRow(
                trial_id=str(last.get("trial_id") or _trial_id_from_path(result.path)),
                status=status,
                end_reason=end_reason(status, last, settings.max_epochs),
                epochs=int(last.get("epoch", 0)),
                best=float(best),
                final=float(last.get(settings.metric, math.nan)),
                values=config_values(list(settings.dims), result.config or {}),
                checkpoint=checkpoint,
                history=history,
                experiment_tag=str(last.get("experiment_tag", "")),
            )
        )
    return rank(rows, settings.mode)


def _trial_id_from_path(path: str) -> str:
    match = re.search(r"_([0-9a-f]{5}_\d{5})", Path(path).name)
    return match.group(1) if match else Path(path).name


def rank(rows: list[TrialRow], mode: str) -> list[TrialRow]:
    sign = -1.0 if mode == "max" else 1.0

    def key(row: TrialRow) -> tuple[bool, float, int]:
        return (
            math.isnan(row.best),
            sign * row.best if not math.isnan(row.best) else 0.0,
            row.number,
        )

    return sorted(rows, key=key)


def table(rows: list[TrialRow], metric: str) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "trial": row.number,
                **({"stage": row.stage} if row.stage else {}),
                "trial_id": row.trial_id,
                "end_reason": row.end_reason,
                "epochs": row.epochs,
                f"best_{metric}": row.best,
                f"final_{metric}": row.final,
                **row.values,
                "checkpoint": row.checkpoint,
            }
            for row in rows
        ]
    )


def best_config(base: dict[str, Any], row: TrialRow) -> dict[str, Any]:
    """The composed config with the best trial's values, as a standalone primary config:
    ``sweep --config-dir DIR --config-name best single_trial=true`` re-trains it."""
    cfg = apply_values(base, row.values)
    cfg["search_space"] = {}
    cfg["num_samples"] = 1
    cfg["resume"] = False
    return {"defaults": _HYDRA_DEFAULTS, **redact(cfg), "hydra": _hydra_section()}


def _hydra_section() -> dict[str, Any]:
    return {"run": {"dir": "."}, "output_subdir": None, "job": {"chdir": False}}


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


def top_table(rows: list[TrialRow], metric: str, limit: int = 5) -> str:
    """The top trials as an aligned text table, hyperparameters in natural format."""
    keys = list(rows[0].values) if rows else []
    staged = any(row.stage for row in rows)
    header = ["trial", *(["stage"] if staged else []), metric, "epochs", "end"]
    header += [short_key(k) for k in keys]
    body = [
        [
            str(row.number),
            *([row.stage] if staged else []),
            format_value(row.best) if not math.isnan(row.best) else "-",
            str(row.epochs),
            row.end_reason,
            *[format_value(row.values.get(k)) for k in keys],
        ]
        for row in rows[:limit]
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True))
        for line in [header, *body]
    )


def finish(
    rows: list[TrialRow],
    settings: Settings,
    base: dict[str, Any],
    folder: Any,
    tracker: Any,
    stages: Sequence[Any] = (),
) -> str:
    """Write results.csv, best.yaml, checks.json and the plots, attach them to the parent
    run, close it, and return the summary to print. ``stages``: rounds.StageResult list."""
    from sweep import review

    metric = settings.metric
    results_file = folder.path / RESULTS_FILE
    table(rows, metric).to_csv(results_file, index=False)
    tracker.log_artifact(results_file)
    findings = review.review(rows, settings, stages, folder.path)
    record_review(findings, folder.path, tracker)
    best = next((row for row in rows if not math.isnan(row.best)), None)
    lines = [f"\nSweep {settings.name}: {len(rows)} trials  ({_counts(rows)})", ""]
    if best is None:
        lines.append(f"No trial reported {metric}.")
        tracker.end_parent("FAILED")
    else:
        best_file = write_yaml(folder.path / BEST_FILE, best_config(base, best))
        tracker.log_artifact(best_file)
        tracker.log_metrics({f"best_{metric}": best.best})
        tracker.set_tags({"sweep.best_trial": best.trial_id})
        tracker.end_parent("FINISHED")
        lines += [
            top_table(rows, metric),
            "",
            f"Best: trial {best.number}{f' ({best.stage})' if best.stage else ''}  "
            f"{metric}={format_value(best.best)}",
            f"  checkpoint  {best.checkpoint}",
            f"  config      {best_file}",
            f"  re-train it: sweep --config-dir {folder.path} --config-name best single_trial=true",
        ]
    lines += findings.lines(metric)
    lines += [
        "",
        f"Outputs in {folder.path}",
        f"MLflow: {mlflow_ui_command(tracker.uri)}  then open "
        f"http://127.0.0.1:5000/#/experiments/{tracker.experiment_id}/runs/{tracker.parent_run_id}",
    ]
    return "\n".join(lines)


def record_review(findings: Any, folder: Path, tracker: Any) -> None:
    """checks.json and the plots on the parent run; one tag per boundary warning, so the
    runs list can filter sweeps whose ranges were wrong."""
    from sweep.review import CHECKS_FILE, PLOTS_DIR

    checks = folder / CHECKS_FILE
    checks.write_text(json.dumps(findings.as_dict(), indent=2, default=str))
    tracker.log_artifact(checks)
    for plot in findings.plots:
        tracker.log_artifact(plot, artifact_path=PLOTS_DIR)
    tags = {
        re.sub(r"[^\w.\- /]", "_", f"sweep.boundary.{w.key}.{w.edge} {w.group}".strip()): w.message
        for w in findings.warnings
    }
    if tags:
        tracker.set_tags(tags)


def _counts(rows: list[TrialRow]) -> str:
    reasons = [row.end_reason for row in rows]
    return ", ".join(f"{reasons.count(r)} {r.replace('_', ' ')}" for r in dict.fromkeys(reasons))


def mlflow_ui_command(uri: str) -> str:
    if uri.startswith("sqlite:"):
        return f"mlflow ui --backend-store-uri {uri}"
    return f"(tracking server) {uri}"
