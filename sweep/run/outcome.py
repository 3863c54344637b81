"""How a trial ended, decided in one place for MLflow, progress and the report."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ray.tune import Callback, Stopper
from ray.tune.result import AUTO_RESULT_KEYS

COMPLETED = "completed"
STOPPED_EARLY = "stopped_early"
TIME_BUDGET = "stopped_by_time_budget"
DIVERGED = "diverged"
ERROR = "error"
KILLED = "killed"

# Result key naming the Ray node an epoch ran on (Tune's `hostname` and `node_ip` are the
# same for every node of one machine, and say nothing of a node that was replaced).
NODE_ID_KEY = "node_id"
# Result key: the torch device the trial trains on (``cuda:0``, ``cpu``).
DEVICE_KEY = "device"
# Result key: the trial's epoch ended after the sweep's time budget (the worker's clock).
BUDGET_SPENT = "time_budget_spent"
# Result key prefix (pbt, pb2): the values a trial trained this epoch with (``hp/model.lr``).
TRAINED_WITH = "hp/"
# Result key prefix: what the trial's process used in the epoch (sweep/run/usage.py); MLflow
# lists these under System metrics.
SYSTEM = "system/"
# Keys our trials and Tune report that are bookkeeping, not metrics to plot.
_NOT_METRICS = {
    *AUTO_RESULT_KEYS,
    *("done", "trial_id", "experiment_tag", "should_checkpoint", "epoch", "diverged"),
    BUDGET_SPENT,
}


def end_reason(status: str, last_result: Mapping[str, Any] | None, max_epochs: int) -> str:
    """``status`` is Tune's (TERMINATED, ERROR, ...); ``last_result`` the trial's last report."""
    if status == "ERROR":
        return ERROR
    last = last_result or {}
    if last.get("diverged"):
        return DIVERGED
    if last.get("epoch", 0) >= max_epochs:
        return COMPLETED
    if last.get(BUDGET_SPENT):
        return TIME_BUDGET
    if status == "TERMINATED":
        return STOPPED_EARLY
    return KILLED


def mlflow_status(reason: str) -> str:
    """Early stopping and divergence are normal ends of a trial, not failures."""
    return {ERROR: "FAILED", KILLED: "KILLED"}.get(reason, "FINISHED")


def user_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The metrics the model logged (train_loss, val_acc, ...), without Tune's bookkeeping."""
    return {
        k: float(v)
        for k, v in result.items()
        if k not in _NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


class TrialStopper(Stopper):
    """Ends a diverged trial at once, and the whole sweep on a mistake in the config that
    only a trial can show: the first report lacks the metric being optimised (a typo in
    ``metric=`` would otherwise rank nothing), or the model or data cannot be built (the
    trial callbacks report it: a retry would fail the same way).

    Tune's own metric check raises a multi-line error from deep inside ``fit``; it is off
    (TUNE_DISABLE_STRICT_METRIC_CHECKING) so this one can name the metrics that exist. It
    pickles as plain data: a restored Tuner is handed the driver's own instance again
    (sweep/run/tuner.py), so ``bad_input`` is read where it was set.
    """

    def __init__(
        self,
        metrics: tuple[str, ...],
        budget: TimeBudget | None = None,
        needs_every_trial: bool = False,
        last_epoch: int | None = None,
    ) -> None:
        self.metrics = metrics
        self.budget = budget
        # pbt/pb2: a trial ends at its last epoch before the scheduler sees the result, or
        # it would copy another trial's config that nothing trains with any more.
        self.last_epoch = last_epoch
        self.bad_input: tuple[str, str] | None = None  # (key, message) for a ConfigError
        # Synchronous pbt/pb2 waits for every trial at each interval, a failed one too
        # (Ray's scheduler never stops waiting): such a failure ends the sweep instead.
        self.needs_every_trial = needs_every_trial
        self.stalled = False

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        missing = [m for m in self.metrics if m not in result]
        if "epoch" in result and missing:
            logged = [m for m in user_metrics(result) if not m.startswith(SYSTEM)]
            reported = ", ".join(sorted(logged)) or "nothing"
            self.bad_input = (
                "metric",
                f"{missing[0]!r} is not reported by the model, which reports {reported}; "
                "set metric=<one of those> (and mode)",
            )
            return True
        if self.last_epoch is not None and result.get("epoch", 0) >= self.last_epoch:
            return True
        # Diverged: a retry would diverge again. Out of time: the epoch just ended.
        return bool(result.get("diverged") or result.get(BUDGET_SPENT))

    def stop_all(self) -> bool:
        budget_spent = self.budget is not None and self.budget.spent and not self.budget.running
        return self.bad_input is not None or budget_spent or self.stalled


class TimeBudget(Callback):
    """``time_budget``: after ``deadline`` (``time.time()``) no trial trains. Each trial's
    worker compares its clock at every epoch's end and reports :data:`BUDGET_SPENT`, so a
    running trial stops at that epoch boundary; a trial that starts later returns at
    once without training. This callback counts the trials that started in time, so the
    stopper ends the experiment once the last of them has stopped: Tune would otherwise
    start every pending trial, only for it to return."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.running: set[str] = set()

    @property
    def spent(self) -> bool:
        return time.time() >= self.deadline

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if not self.spent:
            self.running.add(trial.trial_id)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.discard(trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.discard(trial.trial_id)


def trial_number(trial_id: str, experiment_tag: str | None = None) -> int:
    """Tune's random search ids look like ``4f2a1_00007``: the suffix counts trials from 0.
    Searchers (Optuna's quasi_random, tpe) give bare ids (``ddd87896``); their experiment
    tag (``3_model.lr=...``) counts from 1 instead."""
    suffix = trial_id.rsplit("_", 1)[-1]
    if suffix.isdigit() and "_" in trial_id:
        return int(suffix)
    head = (experiment_tag or "").split("_", 1)[0]
    return int(head) - 1 if head.isdigit() else 0
