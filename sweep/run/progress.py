"""One live progress line: trials done / running / stopped early / failed, the best so far,
elapsed time and an estimate of what is left. Rewritten in place on a terminal; plain
lines (when a trial ends or the best changes, and at least once a minute) when output
goes to a file or a CI log.

The estimate counts epochs, not trials: under ASHA most trials stop after a few epochs,
so "elapsed / trials done" overestimates badly at first. Epochs left = for each running
or pending trial, the epochs ASHA is expected to grant it (a trial survives each rung
with probability 1/reduction_factor); the rate = epochs reported / time since the first
trial started, which includes the per-trial start-up overhead.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from ray.tune.experiment import Trial

from sweep.config.settings import Settings
from sweep.run.callbacks import DriverCallback, Trials
from sweep.run.outcome import DIVERGED, ERROR, STOPPED_EARLY, end_reason, trial_number
from sweep.text import duration, format_value

HEARTBEAT_S = 60.0  # non-terminal output: repeat an unchanged line this often


def asha_rungs(grace_period: int, reduction_factor: float, max_epochs: int) -> list[int]:
    """The epochs at which ASHA may stop a trial (as Ray's ASHA computes its milestones)."""
    count = int(math.log(max_epochs / grace_period) / math.log(reduction_factor) + 1)
    rungs = {math.ceil(grace_period * reduction_factor**k) for k in range(count)}
    return sorted(r for r in rungs if r < max_epochs)


def expected_epochs_left(
    done: int, max_epochs: int, rungs: Sequence[int] = (), survival: float = 1.0
) -> float:
    """Epochs a trial that has trained ``done`` epochs is expected to train still, if it
    survives each rung ahead of it with probability ``survival``."""
    left, alive, at = 0.0, 1.0, done
    for rung in rungs:
        if at < rung < max_epochs:
            left += alive * (rung - at)
            alive *= survival
            at = rung
    return left + alive * max(max_epochs - at, 0)


class ProgressLine(DriverCallback):
    def __init__(
        self,
        total: int,
        metric: str,
        mode: str,
        max_epochs: int,
        stream: TextIO | None = None,
        min_interval_s: float = 0.5,
        rungs: Sequence[int] = (),
        survival: float = 1.0,
        first_number: int = 0,  # an extension's trials are numbered after the earlier ones
    ) -> None:
        self.total = total
        self.first_number = first_number
        self.metric = metric
        self.sign = 1.0 if mode == "max" else -1.0
        self.max_epochs = max_epochs
        self.rungs = list(rungs)
        self.survival = survival
        self.stream = stream or sys.stdout
        self.interactive = self.stream.isatty()
        self.min_interval_s = min_interval_s
        self.started = time.monotonic()
        self.first_trial_at: float | None = None
        self.running: set[str] = set()
        self.ended: dict[str, str] = {}
        self.epochs: dict[str, int] = {}  # trial → epochs trained so far
        self.epochs_seen = 0  # epochs reported in this session (the rate's numerator)
        self.best: tuple[float, int] | None = None  # value, trial number
        self._seeded = False
        self._ends = 0  # trial ends seen, a retried trial's included: part of the change key
        self._last_key: tuple = ()
        self._last_print = -math.inf

    @classmethod
    def for_sweep(cls, settings: Settings, total: int) -> ProgressLine:
        args = (total, settings.metric, settings.mode, settings.max_epochs)
        scheduler, first = settings.scheduler, settings.trial_offset
        if scheduler.name != "asha":
            return cls(*args, first_number=first)
        factor = scheduler.reduction_factor
        rungs = asha_rungs(scheduler.grace_period, factor, settings.max_epochs)
        return cls(*args, rungs=rungs, survival=1.0 / factor, first_number=first)

    # ---- Tune hooks -----------------------------------------------------------------
    def on_step_begin(self, iteration: int, trials: Trials, **info: Any) -> None:
        if self._seeded:
            return
        self._seeded = True  # a resumed sweep: count the trials that ended before
        for trial in trials:
            if trial.status in (Trial.TERMINATED, Trial.ERROR):
                reason = end_reason(trial.status, trial.last_result, self.max_epochs)
                self.ended[trial.trial_id] = reason
                stats = trial.metric_analysis.get(self.metric, {})
                self._consider(stats.get("max" if self.sign > 0 else "min"), trial)

    def on_step_end(self, iteration: int, trials: Trials, **info: Any) -> None:
        self.show()  # keeps the clock ticking between events

    def on_trial_start(self, iteration: int, trials: Trials, trial: Trial, **info: Any) -> None:
        if self.first_trial_at is None:
            self.first_trial_at = time.monotonic()
        self.running.add(trial.trial_id)
        self.show(force=True)

    def on_trial_result(
        self, iteration: int, trials: Trials, trial: Trial, result: dict, **info: Any
    ) -> None:
        self.epochs_seen += 1
        self.epochs[trial.trial_id] = int(result.get("training_iteration", 0))
        self._consider(result.get(self.metric), trial)
        self.show()

    def on_trial_complete(self, iteration: int, trials: Trials, trial: Trial, **info: Any) -> None:
        self._end(trial, end_reason("TERMINATED", trial.last_result, self.max_epochs))

    def on_trial_error(self, iteration: int, trials: Trials, trial: Trial, **info: Any) -> None:
        self._end(trial, ERROR)

    def on_experiment_end(self, trials: Trials, **info: Any) -> None:
        self.show(force=True)
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()

    def _consider(self, value: Any, trial: Trial) -> None:
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return
        if self.best is None or self.sign * value > self.sign * self.best[0]:
            number = self.first_number + trial_number(trial.trial_id, trial.experiment_tag)
            self.best = (float(value), number)

    def _end(self, trial: Trial, reason: str) -> None:
        self.running.discard(trial.trial_id)
        self.ended[trial.trial_id] = reason
        self._ends += 1
        self.show(force=True)

    # ---- the estimate -----------------------------------------------------------------
    def seconds_left(self) -> float | None:
        """None until an epoch has been reported: before that there is no rate to go by."""
        if self.first_trial_at is None or self.epochs_seen == 0:
            return None
        rate = self.epochs_seen / max(time.monotonic() - self.first_trial_at, 1e-6)
        pending = max(self.total - len(self.ended) - len(self.running), 0)
        left = pending * expected_epochs_left(0, self.max_epochs, self.rungs, self.survival)
        for trial_id in self.running:
            done = self.epochs.get(trial_id, 0)
            left += expected_epochs_left(done, self.max_epochs, self.rungs, self.survival)
        return left / rate

    # ---- rendering ------------------------------------------------------------------
    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        reasons = list(self.ended.values())
        parts = [
            f"[{duration(elapsed, clock=True)}] {len(self.ended)}/{self.total} done",
            f"{len(self.running)} running",
            f"{reasons.count(STOPPED_EARLY)} stopped early",
        ]
        if self.first_trial_at is None and not self.ended:
            parts.append("starting trial workers")
        failed = reasons.count(ERROR) + reasons.count(DIVERGED)
        if failed:
            parts.append(f"{failed} failed/diverged")
        if self.best is not None:
            value, number = self.best
            parts.append(f"best {self.metric}={format_value(value)} (trial {number})")
        left = self.seconds_left() if len(self.ended) < self.total else None
        if left is not None:
            parts.append(f"~{duration(left, clock=True)} left")
        return " | ".join(parts)

    def show(self, force: bool = False) -> None:
        # Called at every step of Tune's loop: the line (which counts every ended trial)
        # is built only when it is printed, or thousands of trials make the loop quadratic.
        now = time.monotonic()
        due = force or now - self._last_print >= self.min_interval_s
        if self.interactive:
            if due:
                width = shutil.get_terminal_size((120, 24)).columns - 1
                self.stream.write("\r\033[K" + self.line()[:width])
                self.stream.flush()
                self._last_print = now
            return
        # Not a terminal: a new line when a trial ends or the best changes, or once a
        # minute, so logs stay short but show the sweep is alive.
        key = (len(self.ended), self._ends, self.best)
        if (due and key != self._last_key) or now - self._last_print >= HEARTBEAT_S:
            print(self.line(), file=self.stream, flush=True)
            self._last_key = key
            self._last_print = now
