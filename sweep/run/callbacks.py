"""Tune callbacks on the driver: every trial's life mirrored into MLflow.

Ray's MLflowLoggerCallback, setup_mlflow and Lightning's MLFlowLogger each get statuses
or resumes wrong on these versions (ASHA exits the trial process; restored sweeps
duplicate runs), so the driver owns MLflow and finds runs again by tag.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from ray import tune
from ray.tune.experiment import Trial

from sweep.config.space import Dimension, config_values
from sweep.run import outcome
from sweep.run.signals import StopSignals
from sweep.text import describe_point
from sweep.track import tags

if TYPE_CHECKING:  # mlflow: imported by the driver where the store opens
    from sweep.track.tracker import Tracker

Trials: TypeAlias = list[Trial]  # every trial of the experiment, as Tune's hooks get them
SETUP_ERROR = re.compile(r"SetupError: (model|data): (.*)")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class Detached(tune.Callback):
    """What a driver callback is in Tune's saved state: nothing. A restored Tuner is
    handed the resuming driver's live callbacks again (sweep/run/tuner.py)."""


class DriverCallback(tune.Callback):
    """A callback holding live things (an MLflow client, a terminal) that Tune pickles
    with its experiment state: it is saved as a :class:`Detached`."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (Detached, ())


class WhenTrialsRun(DriverCallback):
    """Calls ``start`` once the trials hold the workers they start in: at the first
    result of any trial, or as soon as ``trials`` of them have started (a sweep of no
    more trials than run at once, whose first result may come just before its last).
    Whatever ``start`` launches then gets a worker of its own."""

    def __init__(self, start: Callable[[], object], trials: int | None = None) -> None:
        self.start: Callable[[], object] | None = start
        self.trials = trials
        self.started: set[str] = set()

    def on_trial_start(self, iteration: int, trials: Trials, trial: Trial, **info: Any) -> None:
        self.started.add(trial.trial_id)
        if self.trials is not None and len(self.started) >= self.trials:
            self._start()

    def on_trial_result(
        self, iteration: int, trials: Trials, trial: Trial, result: dict[str, Any], **info: Any
    ) -> None:
        self._start()

    def _start(self) -> None:
        if self.start is not None:
            start, self.start = self.start, None
            start()


class MlflowTrialLogger(DriverCallback):
    """Opens, fills and closes one child run per trial, through the tracker's writer."""

    def __init__(
        self,
        tracker: Tracker,
        dims: tuple[Dimension, ...],
        max_epochs: int,
        signals: StopSignals,
        stopper: outcome.TrialStopper,
        first_number: int = 0,  # an extension's trials are numbered after the earlier ones
    ) -> None:
        self.tracker = tracker
        self.first_number = first_number
        self.signals = signals
        self.stopper = stopper
        self.dims = list(dims)
        self.max_epochs = max_epochs
        self._logged_step: dict[str, int] = {}  # trial id → last step in MLflow (writer thread)
        self._trained_with: dict[str, dict[str, float]] = {}  # pbt: trial id → last values

    def on_trial_start(self, iteration: int, trials: Trials, trial: Trial, **info: Any) -> None:
        if self._out_of_time(trial):
            return  # it returns without training: not a trial of the sweep
        trial_id, values = trial.trial_id, config_values(self.dims, trial.config)
        number = self.first_number + outcome.trial_number(trial_id, trial.experiment_tag)
        # ``trial 003  lr=2.2e-3 hidden=128 dropout=0.37``: sortable, and says what was tried.
        name = f"trial {number:03d}  {describe_point(values, self.dims)}".strip()
        self.tracker.writer.submit(lambda: self.tracker.open_child(trial_id, name, values))

    def on_trial_result(
        self, iteration: int, trials: Trials, trial: Trial, result: dict, **info: Any
    ) -> None:
        metrics = outcome.user_metrics(result)
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        trial_id, host = trial.trial_id, result.get("hostname", "")
        node_id = result.get(outcome.NODE_ID_KEY, "")
        device = result.get(outcome.DEVICE_KEY, "")
        first = step == 1 or result.get("iterations_since_restore") == 1
        changed = self._trained_with_new_values(trial_id, result)

        def write() -> None:
            run_id = self.tracker.child_run(trial_id)
            if run_id is None:
                return
            if first or trial_id not in self._logged_step:
                last = self.tracker.last_step(run_id, next(iter(metrics))) if metrics else 0
                self._logged_step[trial_id] = last
            # A resumed sweep re-runs the epochs after Tune's last saved state; MLflow
            # already has them, so each step is logged once and histories stay continuous.
            if step <= self._logged_step[trial_id]:
                return
            notes: dict[str, str] = {}
            if changed:  # pbt copied a better trial and perturbed its values
                notes[f"{tags.CONFIG_CHANGE}_{step:03d}"] = describe_point(changed, self.dims)
            if first:
                # Where the trial runs (again after a retry on another node), and on what.
                notes |= {tags.NODE: host, tags.NODE_ID: node_id, tags.DEVICE: device}
            self.tracker.log_metrics(metrics, step=step, run_id=run_id, tags=notes)
            self._logged_step[trial_id] = step

        self.tracker.writer.submit(write)

    def _trained_with_new_values(self, trial_id: str, result: dict) -> dict[str, float]:
        """pbt/pb2 copied a better trial and moved its values: those this epoch used that
        differ from the epoch before (the worker reports them, so the epoch is exact)."""
        used = {
            k.removeprefix(outcome.TRAINED_WITH): v
            for k, v in result.items()
            if k.startswith(outcome.TRAINED_WITH)
        }
        before = self._trained_with.get(trial_id)
        self._trained_with[trial_id] = used
        if before is None:
            return {}
        return {k: v for k, v in used.items() if before.get(k) != v}

    def on_trial_recover(self, iteration: int, trials: Trials, trial: Trial, **info: Any) -> None:
        """A failed trial about to be retried, from its last checkpoint or from the start:
        same run, noted. One that could not build its model or data stops the sweep."""
        if self._setup_failed(trial):
            return
        trial_id, retries = trial.trial_id, trial.num_failures
        start = "from its last checkpoint" if trial.checkpoint else "from the start"
        error = _print_failure(trial, self.first_number, f"retry {retries} {start}")

        def write() -> None:
            run_id = self.tracker.child_run(trial_id)
            if run_id is not None:
                self.tracker.set_tags({tags.RETRIES: retries, tags.LAST_ERROR: error}, run_id)

        self.tracker.writer.submit(write)

    def setup(self, *args: Any, **info: Any) -> None:
        self.signals.hand_to_tune()  # Tune has just installed its SIGINT handler

    def on_trial_complete(self, iteration: int, trials: Trials, trial: Trial, **info: Any) -> None:
        reason = outcome.end_reason("TERMINATED", trial.last_result, self.max_epochs)
        if self.signals.received and reason not in (outcome.COMPLETED, outcome.DIVERGED):
            # Tune stops the running trials on its way out: not an end of their own. One
            # that reached its last epoch (or diverged) as the stop came did end, and Tune
            # keeps it ended: a resume will not run it again to close its run.
            reason = outcome.KILLED
        self._close(trial, reason)

    def on_trial_error(self, iteration: int, trials: Trials, trial: Trial, **info: Any) -> None:
        if not self._setup_failed(trial):
            if self.stopper.needs_every_trial:
                self.stopper.stalled = True
                then = "no retries left; synchronous pbt cannot go on without it: the sweep ends"
            else:
                then = "no retries left, the sweep goes on"
            _print_failure(trial, self.first_number, then)
        self._close(trial, outcome.ERROR, error_file=trial.error_file)

    def _setup_failed(self, trial: Trial) -> bool:
        """The trial failed building its model or data, before its first report: the
        config is wrong, and every retry and every other trial would fail the same way."""
        found = SETUP_ERROR.findall(_read(trial.error_file))
        if not found or "epoch" in (trial.last_result or {}):
            return False
        key, message = found[-1]
        self.stopper.bad_input = (key, f"{message.strip()}; fix the {key} config")
        return True

    def _out_of_time(self, trial: Trial) -> bool:
        """The time budget was spent before this trial trained an epoch."""
        budget = self.stopper.budget
        return budget is not None and budget.spent and "epoch" not in (trial.last_result or {})

    def _close(self, trial: Trial, reason: str, error_file: str | None = None) -> None:
        trial_id = trial.trial_id
        if reason not in (outcome.ERROR, outcome.KILLED) and self._out_of_time(trial):
            # Started just before the deadline, its worker found it spent: no epoch ran.
            self.tracker.writer.submit(lambda: self.tracker.drop_child(trial_id))
            return

        def write() -> None:
            error = _read(error_file) or None
            ending: dict[str, Any] = {tags.END_REASON: reason}
            if error:
                ending[tags.ERROR] = _error_summary(error)
            self.tracker.close_child(trial_id, outcome.mlflow_status(reason), ending, error=error)

        self.tracker.writer.submit(write)

    def get_state(self) -> dict | None:
        """Called by Tune each time it saves the experiment state: MLflow is brought up to
        date first, so a driver killed after the save has lost no metric the resume skips."""
        self.tracker.writer.flush()
        return None

    def on_experiment_end(self, trials: Trials, **info: Any) -> None:
        """Trials still pending or running here were interrupted (Ctrl-C, SIGTERM): their
        runs are closed as KILLED; a resume reopens them."""
        cut = [t for t in trials if t.status not in ("TERMINATED", "ERROR")]
        for trial in cut:
            self._close(trial, outcome.KILLED)


def _error_summary(error: str) -> str:
    """The line of a Ray error file that says what went wrong (its last line is often
    Ray's wrapper), e.g. ``RuntimeError: injected fault at epoch 2``."""
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b.*:", line):
            return line
    return lines[-1] if lines else "unknown error"


def _read(error_file: str | None) -> str:
    """A trial's error file as plain text (Ray colours some of it for terminals)."""
    if not error_file or not Path(error_file).is_file():
        return ""
    return ANSI.sub("", Path(error_file).read_text())


def _print_failure(trial: Trial, first_number: int, then: str, limit: int = 120) -> str:
    """One terminal line on what went wrong (returned; the whole message is in the run's
    tags and error.txt)."""
    text = _read(trial.error_file)
    error = _error_summary(text) if text else ""
    short = error if len(error) <= limit else error[: limit - 3].rstrip() + "..."
    number = first_number + outcome.trial_number(trial.trial_id, trial.experiment_tag)
    print(f"\ntrial {number} failed ({short}); {then}", file=sys.stderr, flush=True)
    return error
