"""Ray Tune, configured from settings: scheduler, searcher, resources, checkpoints,
failure policy; a new Tuner, or the interrupted one restored from the sweep folder."""

from __future__ import annotations

import warnings
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import BasicVariantGenerator, SearchAlgorithm

from sweep import trial
from sweep.callbacks import MlflowTrialLogger
from sweep.folder import TUNE_DIR, SweepFolder
from sweep.outcome import TrialStopper
from sweep.progress import ProgressLine
from sweep.settings import Settings
from sweep.space import fixed_points, param_space
from sweep.tracking import Tracker


def make_scheduler(settings: Settings) -> TrialScheduler:
    section = settings.scheduler
    if section["name"] == "fifo":
        return FIFOScheduler()
    # One report per epoch, so training_iteration counts epochs and max_t is max_epochs.
    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=settings.max_epochs,
        grace_period=int(section["grace_period"]),
        reduction_factor=float(section["reduction_factor"]),
    )


def make_searcher(settings: Settings) -> SearchAlgorithm | Any:
    name = settings.searcher["name"]
    # Points the searcher tries first (then it samples): e.g. the same trials for a benchmark.
    points = fixed_points(list(settings.dims), settings.searcher.get("points")) or None
    if name == "random":
        return BasicVariantGenerator(random_state=settings.seed, points_to_evaluate=points)
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler: optuna.samplers.BaseSampler
    if name == "quasi_random":
        # Optuna marks QMCSampler experimental; the warning tells users nothing they can act on.
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=settings.seed)
    else:
        sampler = optuna.samplers.TPESampler(
            seed=settings.seed, n_startup_trials=int(settings.searcher.get("n_startup_trials", 8))
        )
    return OptunaSearch(sampler=sampler, points_to_evaluate=points)


def total_trials(settings: Settings) -> int:
    grid = 1
    for dim in settings.dims:
        if dim.type == "grid":
            grid *= len(dim.values)
    return settings.num_samples * grid


def fit(
    settings: Settings,
    base: dict[str, Any],
    folder: SweepFolder,
    tracker: Tracker,
    name: str = TUNE_DIR,
) -> tuple[Any, bool]:
    """Run (or resume) the sweep; returns Tune's ResultGrid and whether it was interrupted.
    ``name``: the experiment folder, one per stage when a sweep has several (sweep/rounds.py)."""
    mlflow_logger = MlflowTrialLogger(tracker, settings.dims, settings.max_epochs)
    stopper = TrialStopper(settings.metric)  # before a restore, which unpickles it
    progress = ProgressLine.for_sweep(settings, total_trials(settings))
    trainable = tune.with_resources(
        tune.with_parameters(
            trial.train,
            base=base,
            dims=settings.dims,
            cpus=settings.cpus_per_trial,
            verbose=settings.verbose,
        ),
        {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial},
    )
    experiment = f"{storage_path(settings, folder)}/{name}"
    if tune.Tuner.can_restore(experiment):
        # Interrupted trials are "unfinished" and resume from their checkpoints; a trial
        # that already spent its retries stays failed: a resume re-runs nothing that ended.
        tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_errored=False)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(list(settings.dims)),
            tune_config=tune.TuneConfig(
                metric=settings.metric,
                mode=settings.mode,
                search_alg=make_searcher(settings),
                scheduler=make_scheduler(settings),
                num_samples=settings.num_samples,
                max_concurrent_trials=settings.max_concurrent,
                # Worker processes import torch+Lightning once, then serve many trials.
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(storage_path(settings, folder)),
                callbacks=[mlflow_logger, progress],
                stop=stopper,
                checkpoint_config=tune.CheckpointConfig(
                    num_to_keep=1,  # plus the latest, which Tune always keeps for resuming
                    checkpoint_score_attribute=settings.metric,
                    checkpoint_score_order=settings.mode,
                ),
                failure_config=tune.FailureConfig(max_failures=settings.max_failures),
                verbose=1 if settings.verbose >= 2 else 0,
            ),
        )
    results = tuner.fit()
    # On SIGINT Tune may end without on_experiment_end seeing the pending trials: a trial
    # that is neither terminated nor errored also means the run was cut short.
    cut_short = results.num_terminated + results.num_errors < len(results)
    return results, bool(mlflow_logger.unfinished) or cut_short


def load_results(settings: Settings, folder: SweepFolder, name: str) -> Any:
    """The ResultGrid of a stage that already finished, read from its folder (no trial runs)."""
    from ray.tune import ExperimentAnalysis, ResultGrid

    path = f"{storage_path(settings, folder)}/{name}"
    return ResultGrid(
        ExperimentAnalysis(path, default_metric=settings.metric, default_mode=settings.mode)
    )


def storage_path(settings: Settings, folder: SweepFolder) -> str:
    """Trial checkpoints and Tune's state: the sweep folder, or on a cluster a shared
    location every node reaches, under the same <name>/<timestamp>."""
    shared = settings.cluster.get("storage_path")
    if not shared:
        return str(folder.path)
    return f"{str(shared).rstrip('/')}/{settings.name}/{folder.path.name}"
