"""MLflow logging cost per result, measured on the tracker the sweep uses: what one
epoch's report costs Ray's event loop (a queue put) and the background writer thread
(the real SQLite write), on a fresh SQLite store."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def measure(results: int = 60) -> dict[str, Any]:
    from sweep.track.tracker import Tracker

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        tracker = Tracker(f"sqlite:///{tmp}/mlflow.db", "bench")
        tracker.start_parent("bench", Path(tmp), {}, {"model.lr": 0.01})
        setup = time.perf_counter() - t
        tracker.open_child("t1", "trial 001", {"model.lr": 0.01})
        run_id = tracker.child_run("t1")
        metrics = {"val_acc": 0.9, "val_loss": 0.3, "train_acc": 0.9, "train_loss": 0.3}
        writes = []
        for step in range(results):
            t = time.perf_counter()
            tracker.log_metrics(metrics, step=step, run_id=run_id)
            writes.append(time.perf_counter() - t)
        submits = []
        for step in range(results):
            t = time.perf_counter()
            tracker.writer.submit(
                lambda s=step: tracker.log_metrics(metrics, step=results + s, run_id=run_id)
            )
            submits.append(time.perf_counter() - t)
        tracker.writer.flush()
        tracker.writer.close()
    return {
        "store_setup_s": setup,
        "write_per_result_ms": 1000 * statistics.median(writes),
        "event_loop_per_result_ms": 1000 * statistics.median(submits),
    }
