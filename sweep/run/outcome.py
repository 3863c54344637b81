"""How a trial ended, decided in one place for MLflow, progress and the report."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray.tune import Stopper
from ray.tune.result import AUTO_RESULT_KEYS

COMPLETED = "completed"
STOPPED_EARLY = "stopped_early"
DIVERGED = "diverged"
ERROR = "error"
KILLED = "killed"

# Result key naming the Ray node an epoch ran on (Tune's `hostname` and `node_ip` are the
# same for every node of one machine, and say nothing of a node that was replaced).
NODE_ID_KEY = "node_id"
# Keys our trials and Tune report that are bookkeeping, not metrics to plot.
_NOT_METRICS = {
    *AUTO_RESULT_KEYS,
    *("done", "trial_id", "experiment_tag", "should_checkpoint", "epoch", "diverged"),
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

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.bad_input: tuple[str, str] | None = None  # (key, message) for a ConfigError

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if "epoch" in result and self.metric not in result:
            reported = ", ".join(sorted(user_metrics(result))) or "nothing"
            self.bad_input = (
                "metric",
                f"{self.metric!r} is not reported by the model, which reports {reported}; "
                "set metric=<one of those> (and mode)",
            )
            return True
        return bool(result.get("diverged"))  # retrying would diverge again

    def stop_all(self) -> bool:
        return self.bad_input is not None


def trial_number(trial_id: str, experiment_tag: str | None = None) -> int:
    """Tune's random search ids look like ``4f2a1_00007``: the suffix counts trials from 0.
    Searchers (Optuna's quasi_random, tpe) give bare ids (``ddd87896``); their experiment
    tag (``3_model.lr=...``) counts from 1 instead."""
    suffix = trial_id.rsplit("_", 1)[-1]
    if suffix.isdigit() and "_" in trial_id:
        return int(suffix)
    head = (experiment_tag or "").split("_", 1)[0]
    return int(head) - 1 if head.isdigit() else 0
