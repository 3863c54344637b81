"""What a user reads about a sweep: the summary printed when it ends, and the same facts
as Markdown for the MLflow parent run's description (``mlflow.note.content``).

Rendering only: the facts come from :func:`sweep.report.results.finish`, which wrote the files.
"""

from __future__ import annotations

import math
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from sweep.config.redact import REDACTED, is_secret_key
from sweep.config.settings import BOHB_HYPERBAND, Settings
from sweep.config.space import Dimension
from sweep.folder import CONFIG_FILE, FRONT_DIR, TUNE_DIR
from sweep.report import front
from sweep.report.results import SweepResult, TrialRow
from sweep.text import describe_point, duration, format_param, format_value, short_keys, table

TOP = 5  # trials in the summary's table; results.csv has them all
UI_PORT = 5000


def render(result: SweepResult, settings: Settings, elapsed_s: float | None = None) -> str:
    rows, metric = result.rows, settings.metric
    took = f" in {duration(elapsed_s)}" if elapsed_s is not None else ""
    lines = [f"\nSweep {settings.name}: {len(rows)} trials{took}  ({counts(rows)})", ""]
    if result.best is None:
        lines.append(f"No trial reported {metric}: nothing to rank.")
    else:
        lines += ["  " + line for line in table(top_cells(rows, settings))]
        more = f"top {TOP} of {len(rows)}; " if len(rows) > TOP else ""
        every = result.results_file.name
        lines += [f"  ({more}best {metric} over each trial's epochs; every trial: {every})", ""]
        best = result.best
        lines += [
            f"Best{f' {metric}' if settings.several_objectives else ''}: trial {best.number}"
            f"{f' ({best.stage})' if best.stage else ''}  "
            f"{metric}={format_value(best.best)}",
            f"  re-train it  {retrain_command(result)}",
            f"  config       {result.best_file}",
            f"  checkpoint   {best.checkpoint}",
            *([f"  model        {result.model}"] if result.model else []),
        ]
    if settings.several_objectives:
        lines += front.lines(result.front, settings, len(rows), result.front_files)
    lines += result.review_lines
    if result.warnings:
        lines += ["", "Warnings:", *(f"  ! {w}" for w in result.warnings)]
    saved = [result.best_file.name] if result.best_file is not None else []
    saved += [f"{FRONT_DIR}/"] if result.front_files else []
    outputs = ", ".join([result.results_file.name, *saved, CONFIG_FILE, f"{TUNE_DIR}/"])
    lines += ["", f"Outputs  {result.folder}  ({outputs})", *mlflow_ui(result)]
    return "\n".join(lines)


def counts(rows: Sequence[TrialRow]) -> str:
    """``2 completed, 4 stopped early``."""
    reasons = [row.end_reason for row in rows]
    return ", ".join(f"{reasons.count(r)} {r.replace('_', ' ')}" for r in dict.fromkeys(reasons))


def top_cells(rows: Sequence[TrialRow], settings: Settings) -> list[list[str]]:
    """Header + one row per top trial; hyperparameters in the scale they were sampled in."""
    dims = {dim.key: dim for dim in settings.dims}
    keys = list(dict.fromkeys(key for row in rows for key in row.values))  # conditional too
    staged = any(row.stage for row in rows)  # refinement rounds / scientific values
    others = settings.metrics[1:]  # several objectives: each at the trial's best epoch
    header = ["trial", *(["stage"] if staged else []), *settings.metrics, "epochs", "end"]
    header += short_keys(keys).values()
    body = [
        [
            str(row.number),
            *([row.stage] if staged else []),
            _value(row.best),
            *(_value(row.objectives.get(m, math.nan)) for m in others),
            str(row.epochs),
            row.end_reason.replace("_", " "),
            *[format_param(row.values[k], dims.get(k)) if k in row.values else "-" for k in keys],
        ]
        for row in rows[:TOP]
    ]
    return [header, *body]


def _value(value: float) -> str:
    return format_value(value) if math.isfinite(value) else "-"


def retrain_command(result: SweepResult) -> str:
    return f"sweep --config-dir {result.folder} --config-name best single_trial=true"


def mlflow_ui(result: SweepResult) -> list[str]:
    """How to see this sweep's parent run: the command that serves the UI (none for a
    tracking server, which already does), then the run's address in it."""
    # workflowType: open in the "Model training" view (MLflow 3 defaults to its GenAI view).
    page = (
        f"#/experiments/{result.experiment_id}/runs/{result.parent_run_id}"
        "?workflowType=machine_learning"
    )
    uri = result.tracking_uri
    if uri.startswith(("http://", "https://")):
        return [f"MLflow   open {uri.rstrip('/')}/{page}"]
    command = f"mlflow ui --backend-store-uri {_hide_password(uri)} --port {UI_PORT}"
    return [f"MLflow   {command}", f"         then open http://127.0.0.1:{UI_PORT}/{page}"]


def _hide_password(uri: str) -> str:
    parts = urlsplit(uri)
    if not parts.password:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def _redact_override(arg: str) -> str:
    """``+service.api_token=abc`` → ``+service.api_token=***``: the command is logged too."""
    key, sep, _ = arg.partition("=")
    return f"{key}={REDACTED}" if sep and is_secret_key(key.rsplit(".", 1)[-1]) else arg


# ---- the MLflow parent run's description (Markdown) -------------------------------------
def command_line(command: Sequence[str] | None = None) -> str:
    """The user's ``sweep ...`` command (``command``: its arguments; default this
    process's), quoted for a shell, secrets redacted: MLflow shows it on every run."""
    args = sys.argv[1:] if command is None else command
    return shlex.join(["sweep", *map(_redact_override, args)])


def describe(settings: Settings, folder: Path, command: Sequence[str] | None = None) -> str:
    """What the sweep is, written when it starts: budget, search, what is tuned and how."""
    scheduler = settings.scheduler
    keeps = f"keeps 1/{format_value(scheduler.reduction_factor)} at each rung"
    copies = (
        f"every {scheduler.perturbation_interval} epochs the bottom "
        f"{format_value(scheduler.quantile_fraction)} copy the top"
    )
    stopping = {
        "asha": f"ASHA early stopping (grace {scheduler.grace_period} epochs, {keeps})",
        BOHB_HYPERBAND: f"BOHB's HyperBand early stopping ({keeps})",
        "pbt": f"Population Based Training ({copies})",
        "pb2": f"Population Based Bandits ({copies})",
    }.get(scheduler.name, "no early stopping")
    goals = " and ".join(f"`{m}` ({mode})" for m, mode in settings.objectives) or (
        f"`{settings.metric}` ({settings.mode})"
    )
    if settings.several_objectives:
        goals += " (a Pareto front; early stopping by the first)"
    lines = [
        f"**{settings.num_samples} trials × up to {settings.max_epochs} epochs**, "
        f"{settings.searcher.name.replace('_', '-')} search, {stopping}; "
        f"optimising {goals}.",
        "",
    ]
    if settings.dims:
        lines += ["| tuned | sampled | range |", "|---|---|---|"]
        lines += [f"| `{d.key}` | {d.type} | {_range(d)} |" for d in settings.dims]
    else:
        lines.append("Nothing tuned: every trial trains the same config.")
    lines += ["", f"Command: `{command_line(command)}`  ", f"Output folder: `{folder}`"]
    return "\n".join(lines)


def _range(dim: Dimension) -> str:
    when = "".join(f" (when {k} in {list(v)})" for k, v in dim.when)
    if dim.values:
        return ", ".join(format_param(v, dim) for v in dim.values) + when
    return f"{format_param(dim.low, dim)} … {format_param(dim.high, dim)}{when}"


def note(result: SweepResult, settings: Settings, description: str) -> str:
    """The description at the end: the outcome first, then what the sweep was."""
    metric, rows = settings.metric, result.rows
    if result.best is None:
        head = [f"**No trial reported `{metric}`.** {len(rows)} trials: {counts(rows)}."]
    else:
        best = result.best
        cells = top_cells(rows, settings)
        point = describe_point(best.values, settings.dims)
        head = [
            f"**Best: trial {best.number}, {metric} = {format_value(best.best)}** ({point}). "
            f"{len(rows)} trials: {counts(rows)}.",
            "",
            "| " + " | ".join(cells[0]) + " |",
            "|" + "---|" * len(cells[0]),
            *("| " + " | ".join(line) + " |" for line in cells[1:]),
            "",
            f"Re-train the best: `{retrain_command(result)}`",
        ]
        if settings.several_objectives:
            head += ["", *front.markdown(result.front, settings, len(rows))]
    if result.warnings:
        head += ["", "**Warnings**", "", *(f"- {w}" for w in result.warnings)]
    return "\n".join([*head, "", "---", "", description])
