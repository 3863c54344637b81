"""Batch-size probe: training throughput per batch size, measured, to choose the batch size.

    sweep probe=batch_size                 # the configured model and data, in this process
    sweep probe=batch_size model=cnn trainer.accelerator=gpu

Batch size is not a knob for validation performance; it sets how fast training runs. The
tuning practice: use the largest batch size that still increases training throughput
(examples per second), measured at powers of two until memory runs out. For each size this
trains the real model on the real DataLoader for ``WARMUP_STEPS`` + ``MEASURED_STEPS``
steps and takes the median examples/second of the measured full-size steps (a step's time
runs from the end of one step to the end of the next, so data loading counts). It stops when
memory runs out, when the batch would exceed the training set, or when a doubling gains less
than ``GAIN``. It recommends the last size that gained, and names the first doubling that
did not nearly double throughput: past it, something other than per-step overhead bounds
training (compute, data loading, host-device copies, synchronisation).

No Ray, no MLflow: a table on the terminal, a CSV and a plot in the output folder.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import pandas as pd
import torch

from sweep.config.settings import Settings
from sweep.config.space import apply_values
from sweep.errors import ConfigError
from sweep.folder import new_folder
from sweep.quiet import silence
from sweep.run.trial import build, build_datamodule, make_trainer

START = 8
LIMIT = 1 << 16  # a safety stop where neither memory nor the data set stops the probe
WARMUP_STEPS = 5
MEASURED_STEPS = 20
GAIN = 1.1  # a doubling that adds less than 10% throughput: throughput stopped growing
NEAR_DOUBLE = 1.6  # a doubling under ×1.6 did not "nearly double" throughput
KEY = "data.batch_size"


@dataclass(frozen=True)
class Measurement:
    batch_size: int
    throughput: float  # examples per second, median over measured steps
    step_ms: float  # median step time


@dataclass
class Probe:
    rows: list[Measurement]
    stop: str  # why it stopped
    train_examples: int | None

    @property
    def recommended(self) -> int | None:
        """The largest size reached by doublings that each gained at least ``GAIN``."""
        if not self.rows:
            return None
        stalled = self._doubling_under(GAIN)
        return (stalled[0] if stalled else self.rows[-1]).batch_size

    @property
    def bottleneck(self) -> tuple[Measurement, Measurement] | None:
        """The first doubling that did not nearly double throughput."""
        return self._doubling_under(NEAR_DOUBLE)

    def _doubling_under(self, ratio: float) -> tuple[Measurement, Measurement] | None:
        """The first doubling that multiplied throughput by less than ``ratio``."""
        pairs = zip(self.rows, self.rows[1:], strict=False)
        return next(((a, b) for a, b in pairs if b.throughput < ratio * a.throughput), None)


class StepTimer(L.Callback):
    """Times full-size training steps after a warm-up, end to end (data loading included)."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.steps: list[float] = []
        self._last: float | None = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            torch.cuda.synchronize()  # kernels run asynchronously: wait before reading time
        now = time.perf_counter()
        full = _batch_len(batch) == self.batch_size
        if self._last is not None and trainer.global_step > WARMUP_STEPS and full:
            self.steps.append(now - self._last)
        self._last = now


def _batch_len(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, dict):
        return _batch_len(next(iter(batch.values())))
    if isinstance(batch, (list, tuple)) and batch:
        return _batch_len(batch[0])
    return 0


def measure(cfg: dict[str, Any], batch_size: int, verbose: int = 0) -> Measurement | None:
    """Train ``MEASURED_STEPS`` steps at ``batch_size``; None when no full step was timed."""
    silence(verbose)  # again: importing Lightning re-enables its start-up banners
    model, datamodule = build(apply_values(cfg, {KEY: batch_size}))
    timer = StepTimer(batch_size)
    steps = WARMUP_STEPS + MEASURED_STEPS + 1
    trainer = make_trainer(
        cfg["trainer"], [timer], verbose, max_epochs=-1, max_steps=steps, limit_val_batches=0
    )
    trainer.fit(model, datamodule=datamodule)
    if not timer.steps:
        return None
    step = statistics.median(timer.steps)
    return Measurement(batch_size, batch_size / step, step * 1000)


def train_examples(cfg: dict[str, Any]) -> int | None:
    datamodule = build_datamodule(apply_values(cfg, {})["data"])  # resolves ${seed} etc.
    datamodule.prepare_data()
    datamodule.setup("fit")
    dataset = getattr(datamodule.train_dataloader(), "dataset", None)
    try:
        return len(dataset)  # type: ignore[arg-type]
    except TypeError:
        return None  # an iterable dataset: only memory or throughput stop the probe


def probe(cfg: dict[str, Any], verbose: int = 0, show: Any = print) -> Probe:
    """Double the batch size from ``START`` until a stop; ``show`` gets each row as measured."""
    if "batch_size" not in cfg.get("data", {}):
        raise ConfigError(KEY, "the probe sets data.batch_size, and this data config has none")
    examples = train_examples(cfg)
    rows: list[Measurement] = []
    size = START
    while True:
        if examples is not None and size > examples:
            stop = f"batch {size} exceeds the training set ({examples} examples)"
            break
        if size > LIMIT:
            stop = f"reached the probe's limit ({LIMIT})"
            break
        try:
            row = measure(cfg, size, verbose)
        except RuntimeError as exc:  # torch.OutOfMemoryError is a RuntimeError
            if not (isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()):
                raise
            stop = f"out of memory at batch {size}"
            break
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        if row is None:
            stop = f"no full batch of {size} to time"
            break
        rows.append(row)
        show(_row_text(row, rows[-2] if len(rows) > 1 else None))
        if len(rows) > 1 and row.throughput < GAIN * max(r.throughput for r in rows[:-1]):
            stop = f"throughput stopped growing (under +{GAIN - 1:.0%} at {size})"
            break
        size *= 2
    return Probe(rows, stop, examples)


HEADER = f"{'batch_size':>10}  {'examples/s':>11}  {'step ms':>8}  {'vs half':>7}"


def _row_text(row: Measurement, previous: Measurement | None) -> str:
    ratio = f"×{row.throughput / previous.throughput:.2f}" if previous else ""
    return f"{row.batch_size:>10}  {row.throughput:>11,.0f}  {row.step_ms:>8.2f}  {ratio:>7}"


def conclusions(result: Probe) -> list[str]:
    lines = [f"Stopped: {result.stop}."]
    if result.recommended is not None:
        lines.append(
            f"Recommended: {KEY}={result.recommended} (the largest size whose doubling still "
            f"gained {GAIN - 1:.0%}+ throughput). Re-tune the learning rate at that size."
        )
    if result.bottleneck is not None:
        a, b = result.bottleneck
        lines.append(
            f"Bottleneck: doubling {a.batch_size} → {b.batch_size} raised throughput only "
            f"×{b.throughput / a.throughput:.2f}, not ~×2. Past {a.batch_size} a step's cost "
            "grows with the batch: the device is saturated, or data loading, host-device "
            "copies or synchronisation bound it. Larger batches buy little speed."
        )
    return lines


def run_probe(base: dict[str, Any], settings: Settings) -> int:
    print(f"Batch-size probe of {settings.name}: training throughput per batch size")
    # Measure what a trial gets: its CPU threads (resources.cpu), its accelerator.
    threads = max(1, int(settings.cpus_per_trial))
    torch.set_num_threads(threads)
    print(
        f"(median of {MEASURED_STEPS} steps after {WARMUP_STEPS} warm-up steps, in this "
        f"process, {threads} CPU thread(s) as a trial gets with resources.cpu={threads})"
    )
    print(HEADER, flush=True)
    result = probe(base, settings.verbose, show=lambda line: print(line, flush=True))
    folder = new_folder(settings.output_dir, f"{settings.name}_probe").path
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / "batch_size.csv"
    pd.DataFrame([row.__dict__ for row in result.rows]).to_csv(table, index=False)
    png = plot(result, folder / "batch_size.png")
    print("\n".join(conclusions(result)))
    print(f"Table: {table}\nPlot:  {png}")
    return 0


def plot(result: Probe, path: Path) -> Path:
    """Throughput against batch size (probe.Probe), with ideal linear scaling for reference."""
    fig, ax = plt.subplots(figsize=(6, 4))
    sizes = [row.batch_size for row in result.rows]
    throughputs = [row.throughput for row in result.rows]
    ax.plot(sizes, throughputs, "-o", label="measured")
    if sizes:
        ideal = [throughputs[0] * size / sizes[0] for size in sizes]
        ax.plot(sizes, ideal, ":", color="grey", label="ideal: doubling doubles throughput")
        ax.set_ylim(0, max(throughputs) * 1.3)
    if result.recommended is not None:
        ax.axvline(result.recommended, color="tab:green", linestyle="--", label="recommended")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("training examples / second")
    ax.set_title(f"Batch-size probe (stopped: {result.stop})", fontsize=9)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
