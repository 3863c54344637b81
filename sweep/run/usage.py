"""What a trial's process used during each epoch, reported with its metrics so that MLflow
shows it in the run's System metrics tab (metrics named ``system/...``): a slow trial is
seen to have waited for CPU, swapped, or left its GPU idle.

Measured in the trial's own process, not the machine's: trials share a node, and MLflow's
own system-metrics monitor (one per run, in the process that owns the run) would sit in
the driver and see every trial at once.
"""

from __future__ import annotations

import contextlib
import time

import psutil
import torch

from sweep.run.outcome import SYSTEM as PREFIX

_MB = 1024 * 1024


class EpochUsage:
    """Call :meth:`sample` at the end of each epoch: averages since the previous call."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.process.cpu_percent(None)  # starts its clock: the first sample covers epoch 1
        self.started = time.monotonic()

    def sample(self, device: torch.device) -> dict[str, float]:
        now = time.monotonic()
        usage = {
            # 100 = one core busy for the whole epoch (torch threads add up).
            f"{PREFIX}trial_cpu_percentage": self.process.cpu_percent(None),
            f"{PREFIX}trial_memory_megabytes": self.process.memory_info().rss / _MB,
            f"{PREFIX}node_memory_percentage": psutil.virtual_memory().percent,
            f"{PREFIX}epoch_seconds": now - self.started,
        }
        self.started = now
        if device.type == "cuda":
            usage[f"{PREFIX}gpu_memory_peak_megabytes"] = (
                torch.cuda.max_memory_allocated(device) / _MB
            )
            torch.cuda.reset_peak_memory_stats(device)
            # Needs NVIDIA's management library (nvidia-ml-py), which may be absent: then
            # a metric less, never a failed trial.
            with contextlib.suppress(Exception):
                utilization = torch.cuda.utilization(device)
                usage[f"{PREFIX}gpu_utilization_percentage"] = float(utilization)
        return usage
