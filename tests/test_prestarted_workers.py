"""On an embedded Ray, trials start in the workers Ray prestarted while `ray.init` returned
(not each in a new Python), and still get the environment Tune gives its trial actors; the
best model's logger, started at the first result, gets a worker of its own; and
stopping that Ray leaves none of its processes behind."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import ray
from omegaconf import DictConfig
from ray import tune

from sweep.config.settings import load_settings
from sweep.report.model import WarmLogger
from sweep.run.callbacks import WhenTrialsRun
from sweep.run.cluster import start_ray, stop_ray
from sweep.run.tuner import prestarted_workers
from tests.conftest import REPO

CPUS = 2
AGENTS = {"ray::DashboardAgent", "ray::RuntimeEnvAgent"}


def ray_workers() -> set[int]:
    """The Python workers this process's embedded Ray has started so far."""
    found = set()
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):  # one that ended meanwhile
            # Workers retitle themselves: ray::IDLE, then ray::<the actor they host>.
            title = process.cmdline()[0]
            if title.startswith("ray::") and title not in AGENTS:
                found.add(process.pid)
    return found


@pytest.fixture
def prestarted(
    composed: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[set[int]]:
    """An embedded Ray started as a sweep starts it; the workers it prestarted."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the trials' function, from this module
    reaper = start_ray(load_settings(composed(f"cluster.num_cpus={CPUS}")))
    try:
        deadline = time.monotonic() + 60
        while len(ray_workers()) < CPUS:  # Ray prestarts one per CPU, in the background
            assert time.monotonic() < deadline, "Ray prestarted no workers"
            time.sleep(0.05)
        yield ray_workers()
    finally:
        stop_ray()
        if reaper:
            reaper.close()


def where(config: dict) -> None:
    tune.report({"pid": os.getpid(), "no_fork": os.environ.get("PL_DISABLE_FORK", "")})


def trial_processes(tmp_path: Path, *callbacks: tune.Callback) -> list[tuple[int, str]]:
    tuner = tune.Tuner(
        where,
        param_space={"x": tune.grid_search(list(range(CPUS)))},
        run_config=tune.RunConfig(
            storage_path=str(tmp_path / "tune"), verbose=0, callbacks=list(callbacks)
        ),
    )
    return [(r.metrics["pid"], r.metrics["no_fork"]) for r in tuner.fit()]


@pytest.mark.slow
def test_trials_start_in_the_prestarted_workers_with_tune_s_environment(
    prestarted: set[int], tmp_path: Path
) -> None:
    # Tune asks for its first trials 2 s after Ray started, as after a slow start-up (a
    # resume reading its state, a loaded machine): Ray kills a worker idle for 1 s unless
    # told otherwise (sweep/run/cluster.py), and then each trial waits for a new one.
    time.sleep(2)
    with prestarted_workers(embedded=True):
        trials = trial_processes(tmp_path)
    assert {pid for pid, _ in trials} <= prestarted, (trials, prestarted)
    # Tune's own environment for trial actors (Lightning's fork guard) still reaches them.
    assert {no_fork for _, no_fork in trials} == {"1"}
    assert ray_workers() <= prestarted  # no process started for a trial


@pytest.mark.slow
@pytest.mark.parametrize("every", [None, CPUS], ids=["at the first result", "once all started"])
def test_the_model_logger_started_when_the_trials_run_takes_no_trial_s_worker(
    every: int | None, prestarted: set[int], tmp_path: Path
) -> None:
    """The best model's logger starts at the first trial result, or once every trial has
    started (sweep/report/model.py): by then the trials hold the prestarted workers, and
    the logger gets one of its own."""
    logger = WarmLogger({})
    with prestarted_workers(embedded=True):
        trials = trial_processes(tmp_path, WhenTrialsRun(logger.warm, every))
    assert {pid for pid, _ in trials} <= prestarted, (trials, prestarted)
    assert logger.handle is not None  # started, once
    ray.get(logger.handle.__ray_ready__.remote(), timeout=120)
    (new,) = ray_workers() - prestarted
    assert psutil.Process(new).cmdline()[0] == "ray::ModelLogger"


@pytest.mark.slow
def test_tune_s_own_way_starts_a_new_process_for_each_trial(
    prestarted: set[int], tmp_path: Path
) -> None:
    """What the above avoids (and how it can fail): Tune's runtime_env for its actors."""
    with prestarted_workers(embedded=False):
        trials = trial_processes(tmp_path)
    assert not {pid for pid, _ in trials} & prestarted


@pytest.mark.slow
def test_stopping_an_embedded_ray_ends_every_process_it_started(prestarted: set[int]) -> None:
    """stop_ray kills the autoscaler monitor itself (Ray waits 1 s on it, then does the
    same): afterwards not one of the processes `ray.init` started is running."""
    node = ray._private.worker._global_node
    started = {kind: [info.process for info in infos] for kind, infos in node.all_processes.items()}
    assert started.get("monitor"), sorted(started)  # what stop_ray has to end first
    stop_ray()
    assert not ray.is_initialized()
    left = {kind for kind, procs in started.items() for proc in procs if proc.poll() is None}
    assert not left, left
    (monitor,) = started["monitor"]
    assert monitor.returncode == -9  # killed, not left to report its death to a gone GCS
    stop_ray()  # no Ray: nothing to do, nothing raised
