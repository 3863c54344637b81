"""Timed versions of the project's models: the same networks, plus one JSON line per event
appended to the file named by ``$BENCH_EVENTS``.

Every contender trains these classes, so all of them are measured by the same code
and none of the orchestrators needs instrumenting. Events are written (and the file
closed) before the epoch is reported, because ASHA may end the process inside the report.

    {"event": "first_step", "trial": ..., "t": ...}                  first training batch
    {"event": "epoch", "trial": ..., "epoch": n, "t0": ..., "t1": ..., "val_acc": ...}
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

import torch
from torch.nn import functional as F

from models.classifier import Classifier
from models.cnn import SmallCNN
from models.mlp import MLPClassifier

EVENTS_ENV = "BENCH_EVENTS"


def record(event: dict[str, Any]) -> None:
    path = os.environ.get(EVENTS_ENV)
    if not path:
        return
    # One short append per event: whole lines from several processes never interleave.
    with open(path, "a") as out:
        out.write(json.dumps(event) + "\n")


def process_start() -> float:
    """When this process started (Unix time): how long a trial waited for its worker."""
    with open(f"/proc/{os.getpid()}/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/stat") as f:
        boot = next(float(line.split()[1]) for line in f if line.startswith("btime"))
    return boot + ticks / os.sysconf("SC_CLK_TCK")


class Timed(Classifier):
    """Mixin: wall-clock time of each epoch's training + validation, and its val accuracy."""

    def on_fit_start(self) -> None:
        self._fit_start = time.time()
        self._trial = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._epoch_start = 0.0
        self._correct = 0
        self._seen = 0

    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.time()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if batch_idx == 0 and self.current_epoch == 0:
            record(
                {
                    "event": "first_step",
                    "trial": self._trial,
                    "t": time.time(),
                    "process_start": process_start(),
                    "fit_start": self._fit_start,
                }
            )

    def on_validation_epoch_start(self) -> None:
        self._correct, self._seen = 0, 0

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        hits = logits.argmax(dim=-1) == y
        self._correct += int(hits.sum())
        self._seen += len(y)
        self.log("val_loss", loss, on_step=False, on_epoch=True)
        self.log("val_acc", hits.float().mean(), on_step=False, on_epoch=True)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or not self._seen:
            return
        record(
            {
                "event": "epoch",
                "trial": self._trial,
                "epoch": self.current_epoch + 1,
                "t0": self._epoch_start,
                "t1": time.time(),
                "val_acc": self._correct / self._seen,
            }
        )


class TimedMLP(Timed, MLPClassifier):
    pass


class TimedCNN(Timed, SmallCNN):
    pass
