"""The digits MLP with a fault injected at a chosen epoch.

``fault`` picks what goes wrong when epoch ``fault_epoch`` (1-based) starts:

- ``none``: nothing; trains normally.
- ``raise_once``: raises on the first attempt only; the retry (from the last checkpoint)
  succeeds. The first attempt leaves a marker file in ``marker_dir`` to know it was there.
- ``raise_always``: raises on every attempt, so retries run out.
- ``nan``: the loss becomes NaN from that epoch on (the weights are poisoned).
- ``kill_once``: the trial's process SIGKILLs itself on the first attempt, as the OS's
  out-of-memory killer would.

``epoch_sleep`` slows every epoch down, so that a test can interrupt a sweep mid-trial.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import torch

from models.mlp import MLPClassifier

FAULTS = ("none", "raise_once", "raise_always", "nan", "kill_once")


class InjectedFault(RuntimeError):
    pass


class FaultyMLP(MLPClassifier):
    def __init__(
        self,
        num_features: int,
        num_classes: int,
        fault: str = "none",
        fault_epoch: int = 2,
        marker_dir: str | None = None,
        epoch_sleep: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_features, num_classes, **kwargs)
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS}, got {fault!r}")
        self.fault, self.fault_epoch, self.epoch_sleep = fault, fault_epoch, epoch_sleep
        self.marker_dir = Path(marker_dir) if marker_dir else None

    def on_train_epoch_start(self) -> None:
        if self.epoch_sleep:
            time.sleep(self.epoch_sleep)
        epoch = self.current_epoch + 1
        if epoch != self.fault_epoch:
            return
        if self.fault == "raise_always":
            raise InjectedFault(f"injected fault at epoch {epoch}")
        if self.fault in ("raise_once", "kill_once") and self._first_attempt():
            if self.fault == "kill_once":
                os.kill(os.getpid(), signal.SIGKILL)
            raise InjectedFault(f"injected fault at epoch {epoch} (first attempt)")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.fault == "nan" and self.current_epoch + 1 >= self.fault_epoch:
            with torch.no_grad():
                for param in self.parameters():
                    param.fill_(float("nan"))

    def _first_attempt(self) -> bool:
        assert self.marker_dir is not None, "raise_once/kill_once need marker_dir"
        marker = self.marker_dir / f"{self.fault}.attempted"
        if marker.exists():
            return False
        self.marker_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(os.getpid()))
        return True
