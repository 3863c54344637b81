"""Runs a sweep, top to bottom: settings → preflight → folder → Ray and MLflow → the
plan's stages → report.

Nothing is started or written until every check has passed; the MLflow parent run and
the output folder exist before the first trial, so an interrupted sweep can resume. A
stop signal, from start-up to exit, is handled here and only here (:func:`interrupt`).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from sweep import preflight, stages
from sweep.config.redact import flatten, redact
from sweep.config.settings import BOHB_HYPERBAND, Settings, load_settings
from sweep.config.space import apply_values, portable_config
from sweep.errors import ConfigError
from sweep.folder import (
    CONFIG_FILE,
    FINISHED,
    INTERRUPTED,
    RUNNING,
    SweepFolder,
    folder_to_resume,
    new_folder,
)
from sweep.practice import advice
from sweep.quiet import silence
from sweep.report import model, results, review, summary
from sweep.run import tuner
from sweep.run.cluster import start_ray, stop_ray
from sweep.run.outcome import KILLED, TIME_BUDGET, mlflow_status
from sweep.run.signals import StopSignals
from sweep.text import duration, format_value
from sweep.track import tags

if TYPE_CHECKING:
    from sweep.track.tracker import Tracker

# No trial reported the metric (all failed or diverged): the sweep ran, but produced nothing.
EXIT_NO_RESULT = 1


def run(cfg: DictConfig) -> int:
    """Entry point from the CLI; returns the process exit code."""
    with StopSignals() as signals:
        try:
            return prepare_and_run(cfg, signals)
        except KeyboardInterrupt:  # before the sweep began (checks, single trial, probe)
            if signals.received is None:
                raise
            print("\nInterrupted; nothing to resume.", file=sys.stderr)
            return signals.exit_code


def prepare_and_run(cfg: DictConfig, signals: StopSignals) -> int:
    settings = load_settings(cfg)
    base = portable_config(cfg)
    silence(settings.verbose)
    settings = preflight.check(settings, base)
    signals.check()
    if settings.single_trial:
        return run_single_trial(base, settings)
    if settings.probe == "batch_size":
        from sweep.practice.batch_size import run_probe  # Lightning, in this process

        start_up_over()
        return run_probe(base, settings)
    added = None
    if settings.resume:
        folder = folder_to_resume(settings.output_dir, settings.name, settings.resume)
        added = stages.extension(settings, folder)  # num_samples above the sweep's trials
        if added is None and folder.read_state().get("status") == FINISHED:
            print(
                f"Sweep {folder.path} already finished; nothing to resume. To add trials, "
                "raise num_samples (the sweep's total)."
            )
            return 0
    else:
        folder = new_folder(settings.output_dir, settings.name)
    return run_sweep(settings, base, folder, signals, added)


def start_up_over() -> None:
    """Garbage collection back on (sweep/cli.py turns it off at the start). What the
    start-up built lives until exit: frozen, later collections never walk it again."""
    gc.freeze()
    gc.enable()


def run_single_trial(base: dict[str, Any], settings: Settings) -> int:
    from sweep.run.trial import run_single  # Lightning, in this process: not for sweeps

    start_up_over()
    print(f"Training one trial of {settings.name} in this process (no Ray, no MLflow)...")
    history = run_single(apply_values(base, {}), verbose=settings.verbose)
    values = [epoch.get(settings.metric, math.nan) for epoch in history]
    scored = [(v, i + 1) for i, v in enumerate(values) if math.isfinite(v)]
    if not scored:
        print(f"No epoch reported {settings.metric}.")
        return EXIT_NO_RESULT
    pick = max if settings.mode == "max" else min
    best, epoch = pick(scored, key=lambda pair: pair[0])  # the first epoch of a tie
    metric = settings.metric
    print(f"best {metric}: {format_value(best)} (epoch {epoch}); final {format_value(values[-1])}")
    return 0


def run_sweep(
    settings: Settings,
    base: dict[str, Any],
    folder: SweepFolder,
    signals: StopSignals,
    added: stages.Part | None = None,
) -> int:
    """The sweep, and the one place that turns a stop signal, whenever it came, into a
    clean stop: runs KILLED, state saved, the resume command, exit 128 + signal."""
    signals.defer()  # from here a stop acts at phase boundaries, never inside a library
    budget = settings.time_budget
    deadline = time.time() + budget if budget is not None else None
    quiet_tune(settings.verbose)
    print(header(settings, folder), flush=True)
    tracker: Tracker | None = None
    logger: model.WarmLogger | None = None
    reaper = None
    code = 0
    try:
        # Opening the MLflow store (migrations on a new SQLite file: ~2 s) overlaps Ray's
        # start (~5 s) on a local cluster. Joining a remote cluster can fail on bad input,
        # and then nothing may have been written, so there the store opens after it.
        local = settings.cluster.is_local
        preparing = in_background(open_store, settings) if local else None
        with signals.around_ray_start():
            reaper = start_ray(settings)
        tracker = preparing.result() if preparing else open_store(settings)
        open_parent(tracker, settings, base, folder, added)
        start_up_over()
        signals.check()
        logger = model.WarmLogger(base, tracker.uri) if settings.best_model else None
        sweep = stages.Sweep(settings, base, folder, tracker, signals, deadline, logger)
        code = sweep_stages(sweep)
    except BaseException:
        if signals.received is None:
            raise
    finally:
        if logger is not None:
            logger.close()
        with contextlib.suppress(KeyboardInterrupt):  # a signal while Ray stops: noted
            stop_ray()
        if reaper is not None:
            reaper.close()
    if signals.received is not None:
        return interrupt(folder, tracker, signals)
    return code


def sweep_stages(sweep: stages.Sweep) -> int:
    settings, folder, tracker, signals = sweep.settings, sweep.folder, sweep.tracker, sweep.signals
    for notice in advice.before_sweep(settings):
        print(notice, flush=True)
    started = time.monotonic()
    outcome = stages.run(sweep)
    if outcome.interrupted:
        return 0  # the caller sees the signal
    if outcome.bad_input is not None:
        discard(settings, folder, tracker, *outcome.bad_input)
    rows = outcome.rows(settings.mode)
    # A driver killed between a trial's end and its MLflow update left the run RUNNING.
    tracker.close_stale_children(
        {row.trial_id: (row.end_reason, mlflow_status(row.end_reason)) for row in rows}
    )
    signals.check()
    best = results.best_row(rows)
    logging_model = None
    if best is not None and best.checkpoint and settings.best_model:
        # In the Ray actor warmed since the start, while this process writes the report.
        cfg, name = apply_values(sweep.base, best.values), settings.register_model
        run = (tracker.uri, tracker.parent_run_id)
        logging_model = model.publish(cfg, best.checkpoint, *run, name, sweep.model_logger)
    findings = review.review(rows, settings, outcome.rounds(settings.mode), folder.path)
    signals.check()
    findings.record(folder.path, tracker)
    review_lines = [
        *outcome.part_lines(),
        *budget_lines(settings, outcome, rows, folder),
        *findings.lines(settings.metric),
    ]
    result = results.finish(rows, settings, sweep.base, folder.path, tracker, review_lines)
    if logging_model is not None:
        result.model, warning = logging_model()
        result.warnings += [warning] if warning else []
    description = summary.describe(settings, folder.path)
    tracker.set_tags({tags.NOTE: summary.note(result, settings, description)})
    signals.check()  # the last moment a stop leaves the sweep to resume
    tracker.end_run(result.status)
    folder.write_state(status=FINISHED)
    print(summary.render(result, settings, time.monotonic() - started), flush=True)
    return 0 if result.best is not None else EXIT_NO_RESULT


def budget_lines(
    settings: Settings, outcome: stages.Outcome, rows: list[results.TrialRow], folder: SweepFolder
) -> list[str]:
    """What the time budget cut short, and the command that runs the rest."""
    if settings.time_budget is None:
        return []
    stopped = sum(row.end_reason == TIME_BUDGET for row in rows)
    planned = tuner.total_trials(settings) * len(list(stages.plan(settings)))  # every stage
    if not stopped and len(rows) >= planned and not outcome.out_of_time:
        return []
    lines = [
        "",
        f"Time budget ({duration(settings.time_budget)}) spent: {len(rows)} of {planned} trials "
        f"ran, {stopped} stopped by it at the end of an epoch.",
    ]
    if len(rows) < planned:
        if settings.staged:
            lines.append("  The stages after it did not run; a staged sweep is not extended.")
        else:
            lines.append(f"  Run the other {planned - len(rows)}:  {resume_command(folder)}")
    return lines


def quiet_tune(verbose: int) -> None:
    # Our stopper names the metrics a model does report; Tune's check would only raise.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    if verbose < 1:
        # A failed trial's traceback goes to its MLflow run (error.txt) and the trial
        # folder; the terminal gets one line per failure (sweep/run/callbacks.py).
        os.environ["TUNE_PRINT_ALL_TRIAL_ERRORS"] = "0"
        logging.getLogger("ray.tune.tune").setLevel(logging.CRITICAL)  # "did not complete"
        # A stop that lands while Tune copies its first state logs a traceback of the
        # half-written copy; the resume starts such a stage again (run/tuner.resumable).
        logging.getLogger("ray.tune.execution.experiment_state").setLevel(logging.CRITICAL)


def in_background(call: Any, *args: Any) -> Future:
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sweep-prepare")
    try:
        return pool.submit(call, *args)
    finally:
        pool.shutdown(wait=False)


def open_store(settings: Settings) -> Tracker:
    # Imported here, in the thread that overlaps Ray's start: mlflow takes ~2 s to import
    # (at the level sweep/quiet.py set in MLFLOW_LOGGING_LEVEL).
    from sweep.track.tracker import Tracker

    return Tracker(settings.tracking_uri, settings.name)


def open_parent(
    tracker: Tracker,
    settings: Settings,
    base: dict[str, Any],
    folder: SweepFolder,
    added: stages.Part | None = None,
) -> None:
    """The sweep's MLflow parent run: a new one, or the resumed sweep's own (with the
    trials an extension ``added``)."""
    folder.path.mkdir(parents=True, exist_ok=True)
    state = folder.read_state()
    data = redact(base.get("data", {}))
    tracker.record_provenance(summary.command_line(), git_commit(), data)
    if state.get("parent_run_id"):
        tracker.resume_parent(state["parent_run_id"])
        if added is None:
            print(f"Resuming sweep {folder.path}")
        else:
            had = stages.parts(settings, folder)
            total = sum(part.trials for part in had)
            folder.write_state(**{stages.PARTS: [p.record() for p in (*had, added)]})
            print(f"Extending sweep {folder.path}: {total} → {total + added.trials} trials")
    else:
        config_file = results.write_yaml(folder.path / CONFIG_FILE, redact(base))
        run_tags = {
            tags.SEARCHER: settings.searcher.name,
            tags.SCHEDULER: settings.scheduler.name,
            tags.SEED: str(settings.seed),
            tags.NOTE: summary.describe(settings, folder.path),
        }
        name = f"sweep {folder.path.name}"
        run_id = tracker.start_parent(name, folder.path, run_tags, flatten(redact(base)))
        first = stages.Part(settings.num_samples, settings.dims)
        folder.write_state(
            parent_run_id=run_id,
            experiment_id=tracker.experiment_id,
            **{stages.PARTS: [first.record()]},
        )
        tracker.log_artifact(config_file)
    folder.write_state(status=RUNNING)


def interrupt(folder: SweepFolder, tracker: Tracker | None, signals: StopSignals) -> int:
    """Close every open run as KILLED, save the state, and say how to resume."""
    if tracker is None or not tracker.parent_run_id:
        if not folder.read_state():  # a new sweep that had not begun: leave no trace
            shutil.rmtree(folder.path, ignore_errors=True)
        print("\nInterrupted before the sweep started; nothing to resume.", file=sys.stderr)
        return signals.exit_code
    tracker.writer.flush()
    if folder.read_state().get("status") == FINISHED:
        print("\nInterrupted after the sweep finished; nothing is lost.", file=sys.stderr)
        return signals.exit_code
    tracker.kill_open_runs(KILLED)
    folder.write_state(parent_run_id=tracker.parent_run_id, status=INTERRUPTED)
    print(f"\nInterrupted. Resume with:\n  {resume_command(folder)}", file=sys.stderr)
    return signals.exit_code


def discard(
    settings: Settings, folder: SweepFolder, tracker: Tracker, key: str, message: str
) -> None:
    """A trial showed a mistake in the config: undo the sweep's runs and folder (it produced
    nothing usable) and fail like any other bad input."""
    tracker.discard(keep_parent=bool(settings.resume))
    if not settings.resume:
        shutil.rmtree(folder.path, ignore_errors=True)
    raise ConfigError(key, message)


def header(settings: Settings, folder: SweepFolder) -> str:
    """The first line a user sees: what runs, and where its outputs go."""
    stopping = {"asha": "ASHA", BOHB_HYPERBAND: "HyperBand", "pbt": "PBT", "pb2": "PB2"}.get(
        settings.scheduler.name, "no early stopping"
    )
    tuned = " ".join(d.key.rsplit(".", 1)[-1] for d in settings.dims) or "nothing"
    return (
        f"Sweep {settings.name}: {settings.num_samples} trials × ≤{settings.max_epochs} epochs, "
        f"{settings.searcher.name} search, {stopping}, tuning {tuned} → {folder.path}"
    )


def git_commit() -> str | None:
    git = ["git", "rev-parse", "HEAD"]
    try:
        return subprocess.check_output(git, text=True, timeout=5, stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.SubprocessError):  # not a repository, or no git
        return None


def resume_command(folder: SweepFolder) -> str:
    """The user's own command line (quoted for a shell) with ``resume=<this folder>``."""
    args = [a for a in sys.argv[1:] if not a.startswith("resume=")]
    return shlex.join(["sweep", *args, f"resume={folder.path}"])
