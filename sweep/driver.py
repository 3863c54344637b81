"""Runs a sweep: validate → start Ray → MLflow parent run → Tuner.fit (or restore) → report.

Nothing is started or written until the config has been validated; the MLflow parent run
and the output folder exist before the first trial, so an interrupted sweep can resume.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from typing import Any

from omegaconf import DictConfig

from sweep import report
from sweep.cluster import start_ray
from sweep.errors import ConfigError
from sweep.folder import FINISHED, INTERRUPTED, RUNNING, SweepFolder, folder_to_resume, new_folder
from sweep.noise import silence
from sweep.redact import redact
from sweep.settings import Settings, load_settings
from sweep.space import portable_config


def run(cfg: DictConfig) -> int:
    """Entry point from the CLI; returns the process exit code."""
    settings = load_settings(cfg)
    base = portable_config(cfg)
    silence(settings.verbose)
    check_data(base)
    if settings.single_trial:
        return run_single_trial(base, settings)
    if settings.resume:
        folder = folder_to_resume(settings.output_dir, settings.name, settings.resume)
        if folder.read_state().get("status") == FINISHED:
            print(f"Sweep {folder.path} already finished; nothing to resume.")
            return 0
    else:
        folder = new_folder(settings.output_dir, settings.name)
    return run_sweep(settings, base, folder)


def check_data(base: dict[str, Any]) -> None:
    """Let a DataModule with a cheap ``check()`` (file and columns exist) fail fast."""
    data = base.get("data", {})
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
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(
                "data", f"{exc}; fix data.path / data.target / data.features"
            ) from None


def run_single_trial(base: dict[str, Any], settings: Settings) -> int:
    from sweep.trial import run_single

    print(f"Training one trial of {settings.name} in this process (no Ray, no MLflow)...")
    history = run_single(base, verbose=settings.verbose)
    if history:
        print(f"final {settings.metric}: {history[-1].get(settings.metric, float('nan')):.4f}")
    return 0


def run_sweep(settings: Settings, base: dict[str, Any], folder: SweepFolder) -> int:
    import ray

    from sweep.tracking import Tracker

    silence(settings.verbose)  # again: importing mlflow re-installs its INFO logging
    start_ray(settings)
    try:
        tracker = Tracker(settings.tracking_uri, settings.name)
        folder.path.mkdir(parents=True, exist_ok=True)
        state = folder.read_state()
        if state.get("parent_run_id"):
            tracker.resume_parent(state["parent_run_id"])
            print(f"Resuming sweep {folder.path}")
        else:
            start_parent(tracker, settings, base, folder)
        folder.write_state(status=RUNNING)
        from sweep.tuning import fit

        results, interrupted = fit(settings, base, folder, tracker)
        tracker.writer.flush()
        if interrupted:
            folder.write_state(status=INTERRUPTED)
            tracker.end_parent("KILLED")
            print(f"\nInterrupted. Resume with:\n  {resume_command(folder)}")
            return 130
        rows = report.collect(results, settings)
        summary = report.finish(rows, settings, base, folder, tracker)
        folder.write_state(status=FINISHED)
        print(summary)
        return 0
    finally:
        ray.shutdown()


def start_parent(
    tracker: Any, settings: Settings, base: dict[str, Any], folder: SweepFolder
) -> None:
    config_file = report.write_yaml(folder.path / report.CONFIG_FILE, redact(base))
    tags = {
        "sweep.searcher": settings.searcher["name"],
        "sweep.scheduler": settings.scheduler["name"],
        "sweep.seed": str(settings.seed),
        "mlflow.note.content": describe(settings),
    }
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    run_id = tracker.start_parent(f"sweep {folder.path.name}", folder.path, tags, redact(base))
    tracker.log_artifact(config_file)
    folder.write_state(parent_run_id=run_id, experiment_id=tracker.experiment_id)


def describe(settings: Settings) -> str:
    tuned = ", ".join(d.key for d in settings.dims) or "nothing (fixed config)"
    return (
        f"Sweep of {settings.num_samples} trials × up to {settings.max_epochs} epochs, "
        f"{settings.searcher['name']} search, {settings.scheduler['name']} scheduler, "
        f"optimising {settings.metric} ({settings.mode}). Tuned: {tuned}."
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
    args = " ".join(a for a in sys.argv[1:] if not a.startswith("resume="))
    return f"sweep {args} resume={folder.path}".replace("  ", " ")
