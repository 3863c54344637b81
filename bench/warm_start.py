"""Does a warm start pay? TPE's first proposals, cold against warm-started from an earlier
sweep of the same model, over several seeds (same budget, same epochs, no early stopping,
so every trial's value is a full-length one).

    python bench/warm_start.py --seeds 1 2 3 --trials 8 --epochs 10

Prints one row per seed and the mean best-over-epochs metric of the new trials each way.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
from pathlib import Path

import pandas as pd


def sweep(cwd: Path, *args: str) -> Path:
    """Run `sweep ARGS` in ``cwd``; the folder of the sweep it made."""
    before = set((cwd / "sweeps" / "mlp_digits").glob("*")) if (cwd / "sweeps").exists() else set()
    subprocess.run(["sweep", *args], cwd=cwd, check=True, capture_output=True)
    (made,) = set((cwd / "sweeps" / "mlp_digits").glob("*")) - before
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--earlier-trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    common = ["searcher=tpe", "scheduler=fifo", f"trainer.max_epochs={args.epochs}"]
    with tempfile.TemporaryDirectory() as scratch:
        cwd = Path(scratch)
        earlier = sweep(cwd, *common, "seed=100", f"num_samples={args.earlier_trials}")
        rows = []
        for seed in args.seeds:
            run = [*common, f"seed={seed}", f"num_samples={args.trials}"]
            cold = pd.read_csv(sweep(cwd, *run) / "results.csv")["best_val_acc"]
            warm_dir = sweep(cwd, *run, f"searcher.warm_start={earlier}")
            warm = pd.read_csv(warm_dir / "results.csv")["best_val_acc"]
            rows.append((seed, cold.mean(), warm.mean(), cold.max(), warm.max()))
            print(f"seed {seed}: mean cold {cold.mean():.4f} warm {warm.mean():.4f}", flush=True)
    print(f"\n| seed | mean of {args.trials} new trials, cold | warm | best, cold | warm |")
    print("|---|---|---|---|---|")
    for seed, cold_mean, warm_mean, cold_best, warm_best in rows:
        print(f"| {seed} | {cold_mean:.4f} | {warm_mean:.4f} | {cold_best:.4f} | {warm_best:.4f} |")
    means = [statistics.mean(r[i] for r in rows) for i in (1, 2, 3, 4)]
    print(f"| mean | {means[0]:.4f} | {means[1]:.4f} | {means[2]:.4f} | {means[3]:.4f} |")


if __name__ == "__main__":
    main()
