"""After the sweep: the results table, the best config as a re-runnable YAML, and the facts
the summary is rendered from (the rendering itself is sweep/report/summary.py)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow.fs
import yaml

from sweep.config.redact import redact
from sweep.config.settings import Settings
from sweep.config.space import apply_values, config_values
from sweep.folder import BEST_FILE, FRONT_DIR, RESULTS_FILE
from sweep.report.front import pareto
from sweep.run.outcome import DIVERGED, ERROR, end_reason, trial_number
from sweep.track import tags

if TYPE_CHECKING:  # mlflow: imported by the driver where the store opens
    from sweep.track.tracker import Tracker

# The report key under which Ray Train hands a worker's checkpoint to Tune (its
# TuneReportCallback): multi-worker trials have no Tune checkpoints of their own.
TRAIN_CHECKPOINT = "checkpoint_path"
# Hydra settings a standalone best.yaml needs to behave like conf/config.yaml.
_HYDRA_DEFAULTS = [
    "_self_",
    {"override hydra/job_logging": "none"},
    {"override hydra/hydra_logging": "none"},
]
_HYDRA_SECTION = {"run": {"dir": "."}, "output_subdir": None, "job": {"chdir": False}}


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
    error: str | None = None  # the last line of the exception, for trials that raised
    history: pd.DataFrame | None = field(default=None, repr=False)
    experiment_tag: str = ""
    stage: str = ""  # the round / scientific value / part it ran in, when a sweep has several
    first_number: int = 0  # an extension's trials are numbered after the earlier parts'
    # Several objectives: each one's value at the epoch where the first was best (the
    # checkpoint kept), so a trial is one point of the Pareto front (sweep/report/front.py).
    objectives: dict[str, float] = field(default_factory=dict)

    @property
    def number(self) -> int:
        return self.first_number + trial_number(self.trial_id, self.experiment_tag)

    def reports(self, metric: str) -> tuple[tuple[int, float], ...]:
        """(epoch, metric) for each epoch it reported, in order."""
        if self.history is None or metric not in self.history:
            return ()
        epochs = self.history.get("training_iteration", range(1, len(self.history) + 1))
        return tuple((int(e), float(v)) for e, v in zip(epochs, self.history[metric], strict=True))


def collect(results: Any, settings: Settings) -> list[TrialRow]:
    """One row per trial from Tune's ResultGrid, best first."""
    rows, metric, mode = [], settings.metric, settings.mode
    for result in results:
        last = result.metrics or {}
        history = result.metrics_dataframe
        if _copied(last, history):  # pbt: a copy's last result is its donor's; its log is its own
            last = {k: v for k, v in history.iloc[-1].to_dict().items() if not _missing(v)}
        if not result.error and "epoch" not in last:
            continue  # it never trained: the sweep's time budget was spent when it began
        status = "ERROR" if result.error else "TERMINATED"
        scores = history[metric] if history is not None and metric in history else []
        scores = [v for v in scores if isinstance(v, (int, float)) and math.isfinite(v)]
        ckpt = None
        if scores and result.best_checkpoints:  # none yet: a trial cut short early
            ckpt = result.get_best_checkpoint(metric, mode).path
        elif scores and history is not None and TRAIN_CHECKPOINT in history:
            ckpt = _worker_checkpoint(history, metric, mode)
        rows.append(
            TrialRow(
                trial_id=str(last.get("trial_id") or _trial_id_from_path(result.path)),
                status=status,
                end_reason=end_reason(status, last, settings.max_epochs),
                epochs=int(last.get("epoch", 0)),
                best=float((max if mode == "max" else min)(scores, default=math.nan)),
                final=float(last.get(metric, math.nan)),
                values=config_values(list(settings.dims), result.config or {}),
                checkpoint=ckpt,
                error=_last_line(result.error),
                history=history,
                experiment_tag=str(last.get("experiment_tag", "")),
                first_number=settings.trial_offset,
                objectives=at_best(history, settings) if settings.several_objectives else {},
            )
        )
    return rank(rows, mode)


def at_best(history: pd.DataFrame | None, settings: Settings) -> dict[str, float]:
    """Every objective's value at the epoch where the first objective was best: the
    epoch whose checkpoint the trial keeps. NaN where the trial never reported it."""
    nan = dict.fromkeys(settings.metrics, math.nan)
    if history is None or settings.metric not in history:
        return nan
    first = pd.to_numeric(history[settings.metric], errors="coerce")
    first = first[first.map(math.isfinite)]
    if first.empty:
        return nan
    epoch = first.idxmax() if settings.mode == "max" else first.idxmin()
    return {m: float(history.at[epoch, m]) if m in history else math.nan for m in nan}


def _worker_checkpoint(history: pd.DataFrame, metric: str, mode: str) -> str | None:
    """A multi-worker trial's checkpoints are its Ray Train run's: each report names the
    one written with it, and Ray Train keeps the best and the latest (sweep/run/trial.py,
    train_workers). The best of those still there: after a lost node, Ray Train resumes
    from the latest and may drop ones reported since, as Tune keeps only what it keeps."""
    scored = history[pd.to_numeric(history[metric], errors="coerce").map(math.isfinite)]
    kept = [
        (float(row[metric]), str(row[TRAIN_CHECKPOINT]))
        for _, row in scored.iterrows()
        if isinstance(row[TRAIN_CHECKPOINT], str) and _exists(row[TRAIN_CHECKPOINT])
    ]
    if not kept:
        return None
    return (max if mode == "max" else min)(kept, key=lambda pair: pair[0])[1]


def _exists(uri: str) -> bool:
    fs, path = pyarrow.fs.FileSystem.from_uri(uri if "://" in uri else f"file://{uri}")
    return fs.get_file_info(path).type == pyarrow.fs.FileType.Directory


def _last_line(error: BaseException | None) -> str | None:
    if error is None:
        return None
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _copied(last: dict[str, Any], history: pd.DataFrame | None) -> bool:
    if history is None or history.empty or "trial_id" not in history:
        return False
    return str(history["trial_id"].iloc[-1]) != str(last.get("trial_id", ""))


def _missing(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _trial_id_from_path(path: str) -> str:
    match = re.search(r"_([0-9a-f]{5}_\d{5})", Path(path).name)
    return match.group(1) if match else Path(path).name


def rank(rows: list[TrialRow], mode: str) -> list[TrialRow]:
    sign = -1.0 if mode == "max" else 1.0

    def key(row: TrialRow) -> tuple[bool, float, int]:
        missing = math.isnan(row.best)
        return missing, 0.0 if missing else sign * row.best, row.number

    return sorted(rows, key=key)


def best_row(ranked: list[TrialRow]) -> TrialRow | None:
    """The best trial of rows in :func:`rank`'s order: the first that reported the metric."""
    return next((row for row in ranked if not math.isnan(row.best)), None)


def table(rows: list[TrialRow], metric: str, front: list[TrialRow] | None = None) -> pd.DataFrame:
    """results.csv; with several objectives (``front`` given) each one's value at the
    trial's best epoch, and whether the trial is on the Pareto front."""
    on_front = {id(row) for row in front or []}
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
                **{m: v for m, v in row.objectives.items() if m != metric},  # at the best epoch
                **({"pareto_front": id(row) in on_front} if front is not None else {}),
                **row.values,
                "checkpoint": row.checkpoint,
            }
            for row in rows
        ]
    )


def best_config(base: dict[str, Any], row: TrialRow) -> dict[str, Any]:
    """The composed config with the best trial's values, as a standalone primary config:
    ``sweep --config-dir DIR --config-name best single_trial=true`` re-trains it."""
    cfg = {**apply_values(base, row.values), "search_space": {}, "num_samples": 1, "resume": False}
    return {"defaults": _HYDRA_DEFAULTS, **redact(cfg), "hydra": _HYDRA_SECTION}


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


@dataclass
class SweepResult:
    """What a finished sweep left behind: the facts the summary and the MLflow
    description are rendered from (sweep/report/summary.py)."""

    rows: list[TrialRow]
    best: TrialRow | None
    folder: Path
    results_file: Path
    best_file: Path | None
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    # One line each, shown under "Warnings" and in the parent run's description.
    warnings: list[str] = field(default_factory=list)
    # The post-sweep review (sweep/report/review.py), already rendered as lines.
    review_lines: list[str] = field(default_factory=list)
    model: str = ""  # the best model in MLflow (sweep/report/model.py), when logged
    # Several objectives: the Pareto front (ranked rows) and its configs (front/trial-NNN.yaml).
    front: list[TrialRow] = field(default_factory=list)
    front_files: list[Path] = field(default_factory=list)

    @property
    def status(self) -> str:
        """The parent run's final MLflow status."""
        return "FINISHED" if self.best is not None else "FAILED"


def finish(
    rows: list[TrialRow],
    settings: Settings,
    base: dict[str, Any],
    folder: Path,
    tracker: Tracker,
    review_lines: list[str],
) -> SweepResult:
    """Write results.csv and best.yaml, attach them and the best metric to the parent run,
    and collect the warnings; the caller renders the summary and closes the parent run."""
    metric = settings.metric
    front = pareto(rows, settings.objectives) if settings.several_objectives else None
    results_file = folder / RESULTS_FILE
    table(rows, metric, front).to_csv(results_file, index=False)
    tracker.log_artifact(results_file)
    best = best_row(rows)
    best_file = None
    if best is not None:
        best_file = write_yaml(folder / BEST_FILE, best_config(base, best))
        tracker.log_artifact(best_file)
        tracker.log_metrics({f"best_{metric}": best.best})
        tracker.set_tags({tags.BEST_TRIAL: best.trial_id})
    run = (tracker.uri, tracker.experiment_id, tracker.parent_run_id)
    warnings = _warnings(rows, metric, tracker.writer.errors)
    result = SweepResult(rows, best, folder, results_file, best_file, *run, warnings, review_lines)
    if front is not None:
        result.front, result.front_files = front, write_front(rows, front, base, folder, tracker)
    return result


def write_front(
    rows: list[TrialRow],
    front: list[TrialRow],
    base: dict[str, Any],
    folder: Path,
    tracker: Tracker,
) -> list[Path]:
    """One re-runnable config per front trial in ``front/`` (what an extension's earlier
    front left there goes first: its trials may no longer be on it), and each trial's
    ``sweep.pareto_front`` tag, true or false, so the runs list filters the front."""
    directory = folder / FRONT_DIR
    directory.mkdir(exist_ok=True)
    for stale in directory.glob("trial-*.yaml"):
        stale.unlink()
    files = [
        write_yaml(directory / f"trial-{row.number:03d}.yaml", best_config(base, row))
        for row in front
    ]
    for file in files:
        tracker.log_artifact(file, artifact_path=FRONT_DIR)
    on_front = {id(row) for row in front}
    tracker.tag_trials(
        {row.trial_id: {tags.PARETO_FRONT: str(id(row) in on_front).lower()} for row in rows}
    )
    tracker.set_tags({tags.FRONT_TRIALS: ", ".join(str(row.number) for row in front)})
    return files


def _warnings(rows: list[TrialRow], metric: str, write_errors: list[str]) -> list[str]:
    failed = [row for row in rows if row.end_reason == ERROR]
    diverged = [row for row in rows if row.end_reason == DIVERGED]
    silent = [r for r in rows if math.isnan(r.best) and r.end_reason not in (ERROR, DIVERGED)]
    warnings = []
    if failed:
        first = failed[0]
        warnings.append(
            f"{len(failed)} trial(s) failed; trial {first.number}: {first.error or 'unknown error'}"
            " (full traceback: error.txt on its MLflow run)"
        )
    if diverged:
        warnings.append(
            f"{len(diverged)} trial(s) diverged (NaN/inf loss): lower the top of the "
            "learning-rate range, or set trainer.gradient_clip_val"
        )
    if silent:
        warnings.append(
            f"{len(silent)} trial(s) never reported {metric}: does the model log it with "
            f"self.log('{metric}', ..., on_epoch=True)?"
        )
    if write_errors:
        warnings.append(
            f"{len(write_errors)} MLflow write(s) failed, so the UI misses some data; "
            f"first: {write_errors[0]}"
        )
    return warnings
