"""Ray Tune, configured from settings: search space domains, scheduler, searcher,
resources, checkpoints, failure policy; a new Tuner, or the interrupted one restored."""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import pyarrow.fs
import ray
from ray import tune
from ray.tune import ExperimentAnalysis, ResultGrid
from ray.tune.execution.class_cache import _ActorClassCache
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    HyperBandForBOHB,
    TrialScheduler,
)
from ray.tune.search import BasicVariantGenerator, SearchAlgorithm
from ray.tune.search.optuna import OptunaSearch

from sweep.config.settings import BOHB_HYPERBAND, LOCAL, POPULATION, Settings
from sweep.config.space import Dimension, fixed_points
from sweep.folder import SweepFolder
from sweep.run import population
from sweep.run.callbacks import MlflowTrialLogger, WhenTrialsRun
from sweep.run.checkpoints import (
    SpareCheckpoints,
    StateSaves,
    WholeState,
    put_back,
    saved_state,
)
from sweep.run.outcome import TimeBudget, TrialStopper
from sweep.run.progress import ProgressLine
from sweep.run.signals import StopSignals
from sweep.run.workers import Workers

if TYPE_CHECKING:  # mlflow: imported by the driver where the store opens
    from sweep.track.tracker import Tracker


def param_space(dims: list[Dimension]) -> dict[str, Any]:
    """Tune's param_space: one flat entry per dimension, keyed by its dotted config key."""
    return {dim.key: to_domain(dim) for dim in dims}


def to_domain(dim: Dimension) -> Any:
    if dim.type == "choice":
        return tune.choice(list(dim.values))
    if dim.type == "grid":
        return tune.grid_search(list(dim.values))
    assert dim.low is not None and dim.high is not None, "parse_dimension sets numeric bounds"
    low, high, q = dim.low, dim.high, dim.q or 1.0
    # Tune's randint/lograndint exclude `high`; ours include it, like Tune's q-variants.
    domains: dict[str, Any] = {
        "uniform": lambda: tune.uniform(low, high),
        "quniform": lambda: tune.quniform(low, high, q),
        "loguniform": lambda: tune.loguniform(low, high),
        "qloguniform": lambda: tune.qloguniform(low, high, q),
        "one_minus_log": lambda: tune.loguniform(1.0 - high, 1.0 - low),
        "randint": lambda: tune.randint(int(low), int(high) + 1),
        "lograndint": lambda: tune.lograndint(int(low), int(high) + 1),
        "qrandint": lambda: tune.qrandint(int(low), int(high), int(q)),
        "qlograndint": lambda: tune.qlograndint(int(low), int(high), int(q)),
    }
    return domains[dim.type]()


def make_scheduler(settings: Settings) -> TrialScheduler:
    section = settings.scheduler
    if section.name == "fifo":
        return FIFOScheduler()
    # pbt, pb2: widths, layers and choices stay as drawn (a checkpoint cannot take a new
    # shape); the continuous dimensions move.
    moving = [d for d in settings.dims if d.is_continuous and not d.when]
    if section.name == "pb2":
        domains = {d.key: to_domain(d) for d in moving}
        return population.PB2(
            time_attr="training_iteration",
            perturbation_interval=section.perturbation_interval,
            hyperparam_bounds={k: [dom.lower, dom.upper] for k, dom in domains.items()},
            quantile_fraction=section.quantile_fraction,
            synch=section.synch,
        )
    if section.name == "pbt":
        mutations = {d.key: to_domain(d) for d in moving}
        return population.PBT(
            time_attr="training_iteration",
            perturbation_interval=section.perturbation_interval,
            hyperparam_mutations=mutations,
            quantile_fraction=section.quantile_fraction,
            resample_probability=section.resample_probability,
            synch=section.synch,
        )
    if section.name == BOHB_HYPERBAND:
        return HyperBandForBOHB(
            time_attr="training_iteration",
            max_t=settings.max_epochs,
            reduction_factor=section.reduction_factor,
        )
    # One report per epoch, so training_iteration counts epochs and max_t is max_epochs.
    scheduler = ASHAScheduler(
        time_attr="training_iteration",
        # Several objectives: Tune is given no metric (the searcher holds them all), so
        # ASHA is given the first.
        metric=settings.metric if settings.several_objectives else None,
        mode=settings.mode if settings.several_objectives else None,
        max_t=settings.max_epochs,
        grace_period=section.grace_period,
        reduction_factor=section.reduction_factor,
    )
    seed_rungs(scheduler, section.earlier, settings.mode)
    return scheduler


def seed_rungs(
    scheduler: ASHAScheduler, earlier: tuple[tuple[tuple[int, float], ...], ...], mode: str
) -> None:
    """Record an extended sweep's earlier trials at each rung they reached, with the value
    the live scheduler recorded (the first report at or past the rung), so the cut-offs a
    new trial meets are the whole sweep's, not those of empty rungs. Tune has no public
    way in: its brackets' rungs are (milestone, {trial id: signed value}) lists."""
    sign = 1.0 if mode == "max" else -1.0
    for number, reports in enumerate(earlier):
        for bracket in scheduler._brackets:
            for milestone, recorded in bracket._rungs:
                reached = [value for epoch, value in reports if epoch >= milestone]
                if reached and math.isfinite(reached[0]):
                    recorded[f"earlier-{number}"] = sign * reached[0]


def make_searcher(settings: Settings, limit: int | None = None) -> SearchAlgorithm | Any:
    """``limit``: trials at once. Tune applies its own cap (``max_concurrent_trials``) to
    a Searcher only; the random searcher is given it here, or it would go unheeded."""
    name, drawn = settings.searcher.name, settings.searcher.drawn
    # Points the searcher tries first (then it samples): e.g. the same trials for a benchmark.
    points = fixed_points(list(settings.dims), settings.searcher.points) or None
    # An extension draws from a stream of its own: the sweep's seed would replay its start.
    seed = settings.seed if not drawn else _seed_after(settings.seed, drawn)
    if name == "random":
        return BasicVariantGenerator(
            random_state=seed, points_to_evaluate=points, max_concurrent=limit or 0
        )
    if name == "bohb":
        from ray.tune.search.bohb import TuneBOHB  # hpbandster: the optional extra [bohb]

        return TuneBOHB(seed=seed, points_to_evaluate=points)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler: optuna.samplers.BaseSampler
    if name == "quasi_random":
        # Optuna marks QMCSampler experimental; the warning tells users nothing they can act on.
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        # A sweep's first trial is Optuna's random start; the rest are Sobol points 0, 1, ...
        # An extension (its earlier trials given as evaluated) goes on where they stopped.
        sampler = _SobolFrom(max(drawn - 1, 0), seed=settings.seed)
    else:
        # Warm-started, the same seed would replay the earlier sweep's random start.
        seed = settings.seed + len(settings.searcher.evaluated)
        sampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=settings.searcher.n_startup_trials
        )
    if settings.several_objectives:
        # Optuna's TPE is multi-objective (MOTPE); Sobol points ignore the objectives.
        # Ray cannot give it earlier trials with several values: an extension draws anew.
        metrics, modes = zip(*settings.objectives, strict=True)
        return OptunaSearch(
            sampler=sampler, metric=list(metrics), mode=list(modes), points_to_evaluate=points
        )
    if settings.searcher.evaluated:  # warm start, extension: points known without a run
        known, rewards = zip(*settings.searcher.evaluated, strict=True)
        return OptunaSearch(
            sampler=sampler, points_to_evaluate=list(known), evaluated_rewards=list(rewards)
        )
    return OptunaSearch(sampler=sampler, points_to_evaluate=points)


def _seed_after(seed: int, drawn: int) -> int:
    return int(np.random.SeedSequence([seed, drawn]).generate_state(1)[0])


class _SobolFrom(optuna.samplers.QMCSampler):
    """Optuna's scrambled Sobol sampler, starting ``skip`` points into its sequence. Optuna
    counts the points a study drew in the study; an extension's study is new."""

    def __init__(self, skip: int, seed: int) -> None:
        super().__init__(qmc_type="sobol", scramble=True, seed=seed)
        self._skip = skip

    def _find_sample_id(self, study: Any, search_space: dict[str, Any]) -> int:
        return super()._find_sample_id(study, search_space) + self._skip


def total_trials(settings: Settings) -> int:
    grids = [len(dim.values) for dim in settings.dims if dim.type == "grid"]
    return settings.num_samples * math.prod(grids)


@dataclass
class TuneRun:
    """What one Tune experiment (a stage) left: Tune's ResultGrid, whether a stop signal
    cut it short, and a mistake in the config that the trials showed (key, message)."""

    results: Any
    interrupted: bool
    bad_input: tuple[str, str] | None = None


def fit(
    settings: Settings,
    base: dict[str, Any],
    tracker: Tracker,
    signals: StopSignals,
    experiment: str,
    deadline: float | None = None,
    when_trials_run: Callable[[], object] | None = None,
    on_trial_start: Callable[[], None] | None = None,
) -> TuneRun:
    """Run the Tune experiment at ``experiment`` (a path under the storage), or resume it
    from there: callbacks and stopper are this driver's own either way. After
    ``deadline`` (``time.time()``) no trial trains: the sweep's time budget.
    ``when_trials_run`` is called once, when the trials hold their workers;
    ``on_trial_start`` in each trial's worker, as the trial starts."""
    budget = TimeBudget(deadline) if deadline is not None else None
    population_based = settings.scheduler.name in POPULATION
    stopper = TrialStopper(
        settings.metrics,
        budget,
        needs_every_trial=population_based and settings.scheduler.synch,
        last_epoch=settings.max_epochs if population_based else None,
    )
    callbacks: list[tune.Callback] = [
        *([budget] if budget is not None else []),
        MlflowTrialLogger(
            tracker, settings.dims, settings.max_epochs, signals, stopper, settings.trial_offset
        ),
        ProgressLine.for_sweep(settings, total_trials(settings)),
        # The result files the report reads back; not Tune's TensorBoard files, which
        # nothing reads (MLflow has every metric) and which took ~17 % of Tune's
        # controller time at many short trials (bench/SCALING.md).
        CSVLoggerCallback(),
        JsonLoggerCallback(),
        WholeState(experiment),  # the state a resume reads, never cut short
    ]
    saves = StateSaves()
    if not population_based:  # Tune deletes replaced checkpoints (num_to_keep below)
        callbacks += [SpareCheckpoints(experiment), saves]
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    workers = multi_worker(settings, experiment)
    if when_trials_run is not None:
        # A multi-worker trial's workers start after its Tune actor: only its first
        # result says that they all hold theirs. A trial runs ``on_trial_start`` before it
        # trains, so at the first result the model's logger knows whether a local trial
        # has forked a copy of its worker for it (sweep/report/model.py); a Tune actor
        # that has only started has not run it yet.
        first_result_only = workers is not None or on_trial_start is not None
        every = None if first_result_only else total_trials(settings)
        callbacks.append(WhenTrialsRun(when_trials_run, every))
    trainable = tune.with_resources(
        tune.with_parameters(
            trial_function(),
            base=base,
            dims=settings.dims,
            cpus=settings.cpus_per_trial,
            verbose=settings.verbose,
            deadline=deadline,
            population=population_based,
            workers=workers,
            on_start=on_trial_start,
        ),
        # A multi-worker trial only waits for its workers, which reserve their own CPUs
        # and GPUs: it holds nothing Ray schedules by (Tune refuses an empty request).
        {"memory": 1}
        if workers
        else {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial},
    )
    # The state as Tune last wrote it whole, and a checkpoint it names that was deleted.
    put_back(experiment)
    if resumable(experiment):
        # Interrupted trials are "unfinished" and resume from their checkpoints; a trial
        # that already spent its retries stays failed: a resume re-runs nothing that ended.
        # Tune keeps only the space's keys: a driver killed before the first trials were
        # saved would resume a searcher over an empty space.
        tuner = tune.Tuner.restore(
            experiment,
            trainable=trainable,
            param_space=param_space(list(settings.dims)),
            resume_errored=False,
        )
        # Tune restores the run config it pickled, where our callbacks are Detached: hand
        # it the live ones (Tune has no public way to pass them to a restore).
        run_config = tuner._local_tuner.get_run_config()  # type: ignore[union-attr]
        run_config.callbacks, run_config.stop = callbacks, stopper
    else:
        storage, _, name = experiment.rpartition("/")
        limit = settings.max_concurrent or concurrency(workers)
        searcher = make_searcher(settings, limit)
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(list(settings.dims)),
            tune_config=tune.TuneConfig(
                # Several objectives: the searcher and ASHA hold theirs (Tune takes one).
                metric=None if settings.several_objectives else settings.metric,
                mode=None if settings.several_objectives else settings.mode,
                search_alg=searcher,
                scheduler=make_scheduler(settings),
                num_samples=settings.num_samples,
                max_concurrent_trials=None
                if isinstance(searcher, BasicVariantGenerator)
                else limit,
                # Worker processes import torch+Lightning once, then serve many trials. A
                # multi-worker trial's process must end with it: its workers go with it.
                reuse_actors=workers is None,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=storage,
                callbacks=callbacks,
                stop=stopper,
                checkpoint_config=tune.CheckpointConfig(
                    # Plus the latest, which Tune always keeps for resuming. pbt and pb2 keep
                    # all: a trial copies another's checkpoint after that one has moved on.
                    num_to_keep=None if settings.scheduler.name in POPULATION else 1,
                    checkpoint_score_attribute=settings.metric,
                    checkpoint_score_order=settings.mode,
                ),
                failure_config=tune.FailureConfig(max_failures=settings.max_failures),
                verbose=1 if settings.verbose >= 2 else 0,
            ),
        )
    try:
        with prestarted_workers(settings.cluster.address == LOCAL), saves.in_force():
            results = tuner.fit()
    finally:
        signals.take_back()
    return TuneRun(results, signals.received is not None, stopper.bad_input)


def trial_function() -> Callable[..., None]:
    """What Tune runs in each trial's worker: sweep/run/trial.py:train, imported there.

    Defined inside a function, it is pickled by value (cloudpickle sends functions it
    cannot find by name that way), so the worker imports the trial alone: not this
    module's optuna, pyarrow and tracker. The driver never imports the trial's torch and
    Lightning (~5 s, ~300 MB)."""

    def train(config: dict[str, Any], **arguments: Any) -> None:
        from sweep.run import trial

        trial.train(config, **arguments)

    return train


@contextlib.contextmanager
def prestarted_workers(embedded: bool) -> Iterator[None]:
    """On an embedded Ray, Tune's trial actors start in the workers Ray prestarts (one per
    CPU, booting while ``ray.init`` returns) instead of each in a new process.

    Ray hands an actor only a worker started with the same runtime_env, and Tune gives
    every trial actor one of its own (``PL_DISABLE_FORK``, and variables it copies from
    the driver), so the prestarted workers sat idle while each trial waited for a new
    Python to start: 4 processes for 2 trials. An embedded Ray's processes already carry
    that environment (sweep/run/cluster.py:start_ray), so here the actors ask for none.
    Measured: first step 12.7 -> 11.1 s, 3 s less CPU (bench/BENCHMARKS.md). A cluster
    keeps Tune's way: its workers get the environment from the job's runtime_env."""
    if not embedded:
        yield
        return
    tunes_own = _ActorClassCache.get

    def plain(cache: _ActorClassCache, trainable_cls: type) -> Any:
        return cache._cache.setdefault(trainable_cls, ray.remote(trainable_cls))

    _ActorClassCache.get = plain  # type: ignore[method-assign]
    try:
        yield
    finally:
        _ActorClassCache.get = tunes_own  # type: ignore[method-assign]


def multi_worker(settings: Settings, experiment: str) -> Workers | None:
    """The worker group of each trial, when ``resources.workers`` > 1."""
    if settings.workers_per_trial <= 1:
        return None
    return Workers(
        count=settings.workers_per_trial,
        cpus=settings.cpus_per_trial,
        gpus=settings.gpus_per_trial,
        placement=settings.worker_placement,
        storage=experiment,
        max_failures=settings.max_failures,
        metric=settings.metric,
        mode=settings.mode,
    )


def concurrency(workers: Workers | None) -> int | None:
    """Multi-worker trials hold no resources of their own, so Tune would start them all:
    as many run at once as the cluster has CPUs (and GPUs) for their workers."""
    if workers is None:
        return None
    total = ray.cluster_resources()
    fits = [total.get("CPU", 0.0) / (workers.count * workers.cpus)]
    if workers.gpus:
        fits.append(total.get("GPU", 0.0) / (workers.count * workers.gpus))
    return max(1, int(min(fits)))


def resumable(experiment: str) -> bool:
    """Whether Tune saved the experiment with a trial in it. A driver stopped before that
    leaves a folder that Tune restores wrongly (no state: one sample instead of
    num_samples; no trial: a logged IndexError): nothing ran, so it starts from scratch."""
    if not tune.Tuner.can_restore(experiment):
        return False
    if (saved_state(experiment) or {}).get("trial_data"):
        return True
    fs, path = pyarrow.fs.FileSystem.from_uri(experiment)
    fs.delete_dir(path)
    return False


def load_results(settings: Settings, experiment: str) -> Any:
    """The ResultGrid of a stage that already finished, read from its folder (no trial runs)."""
    return ResultGrid(
        ExperimentAnalysis(experiment, default_metric=settings.metric, default_mode=settings.mode)
    )


def storage_path(settings: Settings, folder: SweepFolder) -> str:
    """Trial checkpoints and Tune's state: the sweep folder, or on a cluster a shared
    location every node reaches, under the same <name>/<timestamp>."""
    shared = settings.cluster.storage_path
    if not shared:
        return str(folder.path)
    return f"{str(shared).rstrip('/')}/{settings.name}/{folder.path.name}"
