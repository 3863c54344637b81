"""Tune callbacks on the driver: every trial's life mirrored into MLflow.

Ray's MLflowLoggerCallback, setup_mlflow and Lightning's MLFlowLogger each get statuses
or resumes wrong on these versions (ASHA exits the trial process; restored sweeps
duplicate runs), so the driver owns MLflow and finds runs again by tag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune.experiment import Trial

from sweep.display import describe_point
from sweep.live import LiveCallback
from sweep.outcome import (
    KILLED,
    end_reason,
    mlflow_status,
    trial_number,
    user_metrics,
)
from sweep.space import Dimension, config_values
from sweep.tracking import END_REASON_TAG, Tracker


def run_name(trial_id: str, values: dict[str, Any]) -> str:
    return f"trial {trial_number(trial_id):03d}  {describe_point(values)}".strip()


class MlflowTrialLogger(LiveCallback):
    """Opens, fills and closes one child run per trial, through the tracker's writer."""

    live_name = "mlflow"

    def __init__(self, tracker: Tracker, dims: tuple[Dimension, ...], max_epochs: int) -> None:
        super().__init__()
        self.tracker = tracker
        self.dims = list(dims)
        self.max_epochs = max_epochs
        self.unfinished: list[str] = []

    def on_trial_start(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        values = config_values(self.dims, trial.config)
        trial_id, name = trial.trial_id, run_name(trial.trial_id, values)
        self.tracker.writer.submit(lambda: self.tracker.open_child(trial_id, name, values))

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any
    ) -> None:
        metrics = user_metrics(result)
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        trial_id, node = trial.trial_id, result.get("hostname", "")
        first = step == 1 or result.get("iterations_since_restore") == 1

        def write() -> None:
            run_id = self.tracker.child_run(trial_id)
            if run_id is None:
                return
            self.tracker.log_metrics(metrics, step=step, run_id=run_id)
            if first:
                self.tracker.set_tags({"sweep.node": node}, run_id)

        self.tracker.writer.submit(write)

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self._close(trial, end_reason("TERMINATED", trial.last_result, self.max_epochs))

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self._close(trial, "error", error_file=trial.error_file)

    def _close(self, trial: Trial, reason: str, error_file: str | None = None) -> None:
        trial_id = trial.trial_id

        def write() -> None:
            error = (
                Path(error_file).read_text() if error_file and Path(error_file).is_file() else None
            )
            tags: dict[str, Any] = {END_REASON_TAG: reason}
            if error:
                tags["sweep.error"] = error.strip().splitlines()[-1]
            self.tracker.close_child(trial_id, mlflow_status(reason), tags, error=error)

        self.tracker.writer.submit(write)

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        """Trials still pending or running here were interrupted (Ctrl-C, SIGTERM): their
        runs are closed as KILLED; a resume reopens them."""
        self.unfinished = [t.trial_id for t in trials if t.status not in ("TERMINATED", "ERROR")]
        for trial in trials:
            if trial.trial_id in self.unfinished:
                self._close(trial, KILLED)
