"""One live progress line: trials done / running / stopped early / failed, the best so far,
elapsed time and an estimate of what is left. Rewritten in place on a terminal; plain
lines (only when something changed) when output goes to a file or CI log."""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

from ray.tune.experiment import Trial

from sweep.display import format_value
from sweep.live import LiveCallback
from sweep.outcome import DIVERGED, ERROR, STOPPED_EARLY, end_reason, trial_number


class ProgressLine(LiveCallback):
    live_name = "progress"

    def __init__(
        self,
        total: int,
        metric: str,
        mode: str,
        max_epochs: int,
        stream: TextIO | None = None,
        min_interval_s: float = 0.5,
    ) -> None:
        super().__init__()
        self.total = total
        self.metric = metric
        self.sign = 1.0 if mode == "max" else -1.0
        self.max_epochs = max_epochs
        self.stream = stream or sys.stdout
        self.interactive = self.stream.isatty()
        self.min_interval_s = min_interval_s
        self.started = time.monotonic()
        self.running: set[str] = set()
        self.ended: dict[str, str] = {}
        self.best: tuple[float, str] | None = None
        self._last_line = ""
        self._last_print = 0.0

    # ---- Tune hooks -----------------------------------------------------------------
    def on_trial_start(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self.running.add(trial.trial_id)
        self.show()

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any
    ) -> None:
        value = result.get(self.metric)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return self.show()
        if self.best is None or self.sign * value > self.sign * self.best[0]:
            self.best = (float(value), str(trial_number(trial.trial_id, trial.experiment_tag)))
        self.show()

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self._end(trial, end_reason("TERMINATED", trial.last_result, self.max_epochs))

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self._end(trial, ERROR)

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self.show(force=True)
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()

    def _end(self, trial: Trial, reason: str) -> None:
        self.running.discard(trial.trial_id)
        self.ended[trial.trial_id] = reason
        self.show(force=True)

    # ---- rendering ------------------------------------------------------------------
    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        done = len(self.ended)
        reasons = list(self.ended.values())
        parts = [
            f"[{_clock(elapsed)}] {done}/{self.total} done",
            f"{len(self.running)} running",
            f"{reasons.count(STOPPED_EARLY)} stopped early",
        ]
        failed = reasons.count(ERROR) + reasons.count(DIVERGED)
        if failed:
            parts.append(f"{failed} failed/diverged")
        if self.best is not None:
            value, number = self.best
            parts.append(f"best {self.metric}={format_value(value)} (trial {number})")
        if 0 < done < self.total:
            parts.append(f"~{_clock(elapsed / done * (self.total - done))} left")
        return " | ".join(parts)

    def show(self, force: bool = False) -> None:
        now = time.monotonic()
        line = self.line()
        if self.interactive:
            if force or now - self._last_print >= self.min_interval_s:
                self.stream.write("\r\033[K" + line)
                self.stream.flush()
                self._last_print = now
            return
        # Non-terminal: a new line only when counts change, so logs stay short.
        key = line.split("] ", 1)[1].split(" | ~")[0]
        if key != self._last_line and (force or now - self._last_print >= self.min_interval_s):
            print(line, file=self.stream, flush=True)
            self._last_line = key
            self._last_print = now


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return (
        f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else f"{seconds // 60:02d}:{seconds % 60:02d}"
    )
