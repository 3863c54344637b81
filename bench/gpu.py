"""GPU checks, for a machine with an NVIDIA GPU: one command, a few minutes.

    python bench/gpu.py                    # both packings, prints trials/s and the speed-up
    python bench/gpu.py --out gpu.json     # ... and writes the figures
    python bench/gpu.py --cpu-smoke        # the same flow with resources.gpu=0 (CI, no GPU)

Runs the real ``sweep`` command twice in a scratch folder, on the same trials (the digits
CNN, ``searcher=random seed=0``, ``scheduler=fifo``: every trial trains every epoch, so the
work is equal):

  gpu=1      ``resources.gpu=1``: one trial per GPU at a time
  gpu=0.25   ``resources.gpu=0.25``: four trials share each GPU (small models leave most
             of a GPU idle; packing them is the point of fractional GPUs)

and checks in MLflow that every trial ran on ``cuda`` (the ``sweep.device`` tag of its
run) and what the GPU held (``system/gpu_memory_peak_megabytes``). Exits 1 when a trial did
not run on the GPU, 2 when there is no GPU. Multi-worker (DDP) trials are not part of this
script yet: ``sweep`` does not run them (issue 16, item 1).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SWEEP = str(Path(sys.executable).with_name("sweep"))
PACKINGS = {"gpu=1": 1.0, "gpu=0.25": 0.25}


def run_sweep(folder: Path, gpu: float, trials: int, epochs: int) -> float:
    """``sweep`` with ``resources.gpu=gpu`` in ``folder``; returns its wall seconds."""
    args = [
        SWEEP,
        "model=cnn",
        f"num_samples={trials}",
        f"trainer.max_epochs={epochs}",
        "scheduler=fifo",
        "seed=0",
        "resources.cpu=1",
        f"resources.gpu={gpu:g}",
        "best_model=false",
    ]
    started = time.monotonic()
    proc = subprocess.run(args, cwd=folder, capture_output=True, text=True, timeout=900)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"sweep resources.gpu={gpu:g} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall


def trial_runs(folder: Path) -> list[Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cnn_digits")
    assert experiment is not None, "the sweep logged no experiment"
    return client.search_runs([experiment.experiment_id], "tags.`sweep.trial_id` != ''")


def measure(name: str, gpu: float, trials: int, epochs: int, device: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as scratch:
        folder = Path(scratch)
        wall = run_sweep(folder, gpu, trials, epochs)
        runs = trial_runs(folder)
    devices = sorted({r.data.tags.get("sweep.device", "?") for r in runs})
    memory = [r.data.metrics.get("system/gpu_memory_peak_megabytes") for r in runs]
    busy = [r.data.metrics.get("system/gpu_utilization_percentage") for r in runs]
    return {
        "packing": name,
        "resources_gpu": gpu,
        "trials": len(runs),
        "wall_s": round(wall, 1),
        "trials_per_s": round(len(runs) / wall, 3),
        "devices": devices,
        "on_expected_device": all(d.startswith(device) for d in devices),
        "gpu_memory_peak_mb_median": _median(memory),
        "gpu_utilization_pct_median": _median(busy),
    }


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 1) if known else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--cpu-smoke", action="store_true", help="resources.gpu=0, 2 trials")
    args = parser.parse_args()
    import torch

    if args.cpu_smoke:
        packings, device, trials, epochs = {"cpu-a": 0.0, "cpu-b": 0.0}, "cpu", 2, 1
    elif not torch.cuda.is_available():
        print("error: no CUDA GPU on this machine; run this where `nvidia-smi` lists one")
        sys.exit(2)
    else:
        packings, device, trials, epochs = PACKINGS, "cuda", args.trials, args.epochs
        print(f"GPU: {torch.cuda.get_device_name(0)} × {torch.cuda.device_count()}")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    rows = [measure(name, gpu, trials, epochs, device) for name, gpu in packings.items()]
    first = rows[0]["trials_per_s"]
    for row in rows:
        row["speed_up"] = round(row["trials_per_s"] / first, 2) if first else None
        print(
            f"{row['packing']:>9}  {row['trials']} trials  {row['wall_s']:>6.1f} s  "
            f"{row['trials_per_s']:.3f} trials/s  ×{row['speed_up']}  "
            f"on {', '.join(row['devices'])}"
            f"  GPU memory peak {row['gpu_memory_peak_mb_median']} MB"
        )
    if args.out:
        args.out.write_text(json.dumps({"device": device, "packings": rows}, indent=2))
    wrong = [row["packing"] for row in rows if not row["on_expected_device"]]
    if wrong:
        print(f"error: trials of {', '.join(wrong)} did not all run on {device}")
        sys.exit(1)


if __name__ == "__main__":
    main()
