"""Runs a sweep: validate → start Ray → MLflow parent run → Tuner.fit (or restore) → report.

Nothing is started or written until the config has been validated; the MLflow parent run
and the output folder exist before the first trial, so an interrupted sweep can resume.
"""

from __future__ import annotations

import importlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from omegaconf import DictConfig

from sweep import advice, report, signals, summary
from sweep.cluster import check_resources, start_ray
from sweep.errors import ConfigError
from sweep.folder import (
    FINISHED,
    INTERRUPTED,
    RUNNING,
    SweepFolder,
    check_writable,
    folder_to_resume,
    new_folder,
)
from sweep.noise import silence
from sweep.outcome import KILLED, mlflow_status, running_stopper
from sweep.redact import redact
from sweep.settings import Settings, load_settings, probe_tracking
from sweep.space import apply_values, portable_config


def run(cfg: DictConfig) -> int:
    """Entry point from the CLI; returns the process exit code."""
    settings = load_settings(cfg)
    base = portable_config(cfg)
    silence(settings.verbose)
    if not settings.single_trial:  # cheap checks first; check_data imports torch
        check_writable(settings.output_dir)
        probe_tracking(settings.tracking_uri)
        if settings.cluster.get("address", "local") == "local":
            check_resources(settings, [local_resources(settings)])  # before Ray starts
    check_data(base)
    if settings.single_trial:
        return run_single_trial(base, settings)
    if settings.probe == "batch_size":
        from sweep.probe import run_probe

        return run_probe(base, settings)
    if settings.resume:
        folder = folder_to_resume(settings.output_dir, settings.name, settings.resume)
        if folder.read_state().get("status") == FINISHED:
            print(f"Sweep {folder.path} already finished; nothing to resume.")
            return 0
    else:
        folder = new_folder(settings.output_dir, settings.name)
    return run_sweep(settings, base, folder)


def local_resources(settings: Settings) -> dict[str, float]:
    """What an embedded Ray will have, known without starting it."""
    cpus = settings.cluster.get("num_cpus") or os.cpu_count() or 1
    gpus = settings.cluster.get("num_gpus")
    if gpus is None and settings.gpus_per_trial > 0:
        import torch

        gpus = torch.cuda.device_count()
    return {"CPU": float(cpus), "GPU": float(gpus or 0)}


def check_data(base: dict[str, Any]) -> None:
    """Let a DataModule with a cheap ``check()`` (file and columns exist) fail fast."""
    # Resolved as a whole: `seed: ${seed}` points outside the data section.
    data = apply_values(base, {}).get("data") or {}
    target = data.get("_target_")
    if not target:
        raise ConfigError("data._target_", "missing; name your LightningDataModule class")
    try:
        module, _, name = target.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(
            "data._target_",
            f"cannot import {target!r} ({exc}); is its package installed or in this folder?",
        ) from None
    if hasattr(cls, "check"):
        from sweep.trial import build_datamodule

        try:
            build_datamodule(data).check()  # type: ignore[attr-defined]
        except OSError as exc:
            raise ConfigError("data.path", f"{exc}; point data.path at an existing file") from None
        except (KeyError, ValueError) as exc:
            raise ConfigError(
                "data.target",
                f"{exc.args[0] if exc.args else exc}; fix data.target / data.features",
            ) from None


def run_single_trial(base: dict[str, Any], settings: Settings) -> int:
    from sweep.trial import run_single

    print(f"Training one trial of {settings.name} in this process (no Ray, no MLflow)...")
    history = run_single(apply_values(base, {}), verbose=settings.verbose)
    if history:
        print(f"final {settings.metric}: {history[-1].get(settings.metric, float('nan')):.4f}")
    return 0


# No trial reported the metric (all failed or diverged): the sweep ran, but produced nothing.
EXIT_NO_RESULT = 1


def run_sweep(settings: Settings, base: dict[str, Any], folder: SweepFolder) -> int:
    import ray

    # Our stopper names the metrics a model does report; Tune's check would only raise.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    if settings.verbose < 1:
        # A failed trial's traceback goes to its MLflow run (error.txt) and the trial
        # folder; the terminal gets one line per failure (callbacks.py), not pages.
        os.environ["TUNE_PRINT_ALL_TRIAL_ERRORS"] = "0"
        logging.getLogger("ray.tune.tune").setLevel(logging.CRITICAL)  # "did not complete"
    tracker = None
    preparing = None
    print(header(settings, folder), flush=True)
    try:
        if settings.cluster.get("address", "local") == "local":
            # Opening the MLflow store (migrations on a new SQLite file: ~2 s) overlaps
            # Ray's start (~5 s). The URI was probed and the resources checked before, so
            # neither fails on bad input; joining a remote cluster can, and then nothing
            # may have been written, so there the store opens after it.
            preparing = in_background(open_store, settings)
        start_ray(settings)
        with signals.graceful_stop():
            try:
                store = preparing.result() if preparing else None
                tracker = open_tracking(settings, base, folder, store)
                for notice in advice.before_sweep(settings):
                    print(notice, flush=True)
                started = time.monotonic()
                stages, rows, interrupted = fit_stages(settings, base, folder, tracker)
                tracker.writer.flush()
                if interrupted or signals.received():
                    return interrupt(folder, tracker)
                missing_metric(settings, folder, tracker)
                close_stale_children(tracker, rows)
                result = report.finish(rows, settings, base, folder, tracker, stages)
                description = summary.note(result, settings, describe(settings, folder))
                tracker.set_tags({summary.NOTE_TAG: description})
                tracker.end_parent(result.status)
                folder.write_state(status=FINISHED)
                print(summary.render(result, settings, time.monotonic() - started), flush=True)
                return 0 if result.best is not None else EXIT_NO_RESULT
            except KeyboardInterrupt:  # outside Tune's own handling: start-up or the report
                return interrupt(folder, tracker)
    finally:
        ray.shutdown()


def in_background(call: Any, *args: Any) -> Future:
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sweep-prepare")
    try:
        return pool.submit(call, *args)
    finally:
        pool.shutdown(wait=False)


def open_store(settings: Settings) -> Any:
    from sweep.tracking import Tracker

    # Importing mlflow (here, first) installs its INFO logging: quiet it again before the
    # store's "Creating initial MLflow database tables" lines reach the user's terminal.
    silence(settings.verbose)
    return Tracker(settings.tracking_uri, settings.name)


def open_tracking(
    settings: Settings, base: dict[str, Any], folder: SweepFolder, tracker: Any = None
) -> Any:
    """The MLflow experiment and parent run: a new one, or the resumed sweep's own
    (``tracker``: the store, when it was already opened)."""
    tracker = tracker or open_store(settings)
    folder.path.mkdir(parents=True, exist_ok=True)
    state = folder.read_state()
    if state.get("parent_run_id"):
        tracker.resume_parent(state["parent_run_id"])
        print(f"Resuming sweep {folder.path}")
    else:
        start_parent(tracker, settings, base, folder)
    folder.write_state(status=RUNNING)
    return tracker


def interrupt(folder: SweepFolder, tracker: Any) -> int:
    """Save the state, close every open run as KILLED, and say how to resume."""
    signum = signals.received() or signal.SIGINT
    code = 128 + int(signum)  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
    if tracker is None or not tracker.parent_run_id:
        print("\nInterrupted before the sweep started; nothing to resume.", file=sys.stderr)
        return code
    from sweep.tracking import END_REASON_TAG

    tracker.writer.flush()
    for run_id in tracker.unfinished_children():
        tracker.client.set_tag(run_id, END_REASON_TAG, KILLED)
        tracker.client.set_terminated(run_id, status="KILLED")
    tracker.end_parent("KILLED")
    folder.write_state(status=INTERRUPTED)
    print(f"\nInterrupted. Resume with:\n  {resume_command(folder)}", file=sys.stderr)
    return code


def missing_metric(settings: Settings, folder: SweepFolder, tracker: Any) -> None:
    """The first report lacked ``metric``: undo the sweep's runs and folder (it produced
    nothing usable) and fail like any other bad input."""
    reported = running_stopper().reported
    if reported is None:
        return
    for run in tracker.children():
        tracker.client.delete_run(run.info.run_id)
    if not settings.resume:
        tracker.client.delete_run(tracker.parent_run_id)
        shutil.rmtree(folder.path, ignore_errors=True)
    else:
        tracker.end_parent("FAILED")
    raise ConfigError(
        "metric",
        f"{settings.metric!r} is not reported by the model, which reports "
        f"{', '.join(reported) or 'nothing'}; set metric=<one of those> (and mode)",
    )


def close_stale_children(tracker: Any, rows: list[report.TrialRow]) -> None:
    """A driver killed between a trial's end and its MLflow update leaves the run RUNNING;
    the resumed sweep knows how each trial ended, so it closes them."""
    from sweep.tracking import END_REASON_TAG

    stale = set(tracker.unfinished_children())
    if not stale:
        return
    for row in rows:
        run_id = tracker.child_run(row.trial_id)
        if run_id in stale:
            tracker.client.set_tag(run_id, END_REASON_TAG, row.end_reason)
            tracker.client.set_terminated(run_id, status=mlflow_status(row.end_reason))


def fit_stages(
    settings: Settings, base: dict[str, Any], folder: SweepFolder, tracker: Any
) -> tuple[list[Any], list[report.TrialRow], bool]:
    """One Tune run, or several stages (refinement rounds, scientific values: rounds.py)."""
    from sweep import rounds
    from sweep.tuning import fit

    if not rounds.is_staged(settings):
        results, interrupted = fit(settings, base, folder, tracker)
        rows = [] if interrupted else report.collect(results, settings)
        return [], rows, interrupted
    stages, interrupted = rounds.run(settings, base, folder, tracker)
    rows = report.rank([row for stage in stages for row in stage.rows], settings.mode)
    return stages, rows, interrupted


def start_parent(
    tracker: Any, settings: Settings, base: dict[str, Any], folder: SweepFolder
) -> None:
    config_file = report.write_yaml(folder.path / report.CONFIG_FILE, redact(base))
    tags = {
        "sweep.searcher": settings.searcher["name"],
        "sweep.scheduler": settings.scheduler["name"],
        "sweep.seed": str(settings.seed),
        summary.NOTE_TAG: describe(settings, folder),
    }
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    run_id = tracker.start_parent(f"sweep {folder.path.name}", folder.path, tags, redact(base))
    tracker.log_artifact(config_file)
    folder.write_state(parent_run_id=run_id, experiment_id=tracker.experiment_id)


def describe(settings: Settings, folder: SweepFolder) -> str:
    """The parent run's description while the sweep runs (Markdown, shown in MLflow)."""
    return summary.describe(settings, folder.path)


def header(settings: Settings, folder: SweepFolder) -> str:
    """The first line a user sees: what runs, and where its outputs go."""
    stopping = "ASHA" if settings.scheduler["name"] == "asha" else "no early stopping"
    tuned = " ".join(d.key.rsplit(".", 1)[-1] for d in settings.dims) or "nothing"
    return (
        f"Sweep {settings.name}: {settings.num_samples} trials × ≤{settings.max_epochs} epochs, "
        f"{settings.searcher['name']} search, {stopping}, tuning {tuned} → {folder.path}"
    )


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def resume_command(folder: SweepFolder) -> str:
    """The user's own command line (quoted for a shell) with ``resume=<this folder>``."""
    args = [a for a in sys.argv[1:] if not a.startswith("resume=")]
    return shlex.join(["sweep", *args, f"resume={folder.path}"])
