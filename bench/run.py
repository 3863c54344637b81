"""Side-by-side benchmark: `sweep` vs a hand-written Ray Tune script, a serial loop and
Optuna, on the same fixed trials. See bench/BENCHMARKS.md.

    python bench/run.py --workload overhead --reps 3          # one workload, 3 rounds
    python bench/run.py --smoke                               # tiny sizes, 1 round (CI)
    python bench/run.py --merge out1.json out2.json           # medians over saved rounds

Each round runs every contender once, in a rotating order (so no contender always runs
first on a cold page cache); the table shows medians over rounds and the ratio of each
contender's wall time to the hand-written Ray Tune script's.
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

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.workloads import Workload, workload  # noqa: E402

PYTHON = sys.executable
SWEEP = str(Path(sys.executable).with_name("sweep"))
CONTENDERS = ("sweep", "sweep_fifo", "ray_script", "ray_script_reuse", "serial", "optuna")
BASELINE = "ray_script"
TARGET_SLACK = 0.005  # ASHA must reach FIFO's best val acc within 0.5 points
FIFO_REFERENCE = "sweep_fifo"


def sweep_args(w: Workload, tmp: Path, scheduler: str = "asha") -> list[str]:
    points = ", ".join(
        "{model: {" + ", ".join(f"{k}: {v!r}" for k, v in p.items()) + "}}" for p in w.points()
    )
    args = [
        f"model={w.model}",
        f"model._target_={w.target}",
        *(f"model.{k}={v}" for k, v in w.fixed.items()),
        f"num_samples={w.trials}",
        f"trainer.max_epochs={w.epochs}",
        f"scheduler={scheduler}",
        "searcher=random",
        f"searcher.points=[{points}]",
        f"output_dir={tmp}/sweeps",
        f"tracking.uri=sqlite:///{tmp}/mlflow.db",
    ]
    if scheduler == "asha":
        args += [
            f"scheduler.grace_period={w.grace_period}",
            f"scheduler.reduction_factor={w.reduction_factor}",
        ]
    if w.model == "cnn":
        args.append("search_space.model.channels.values=[32,64]")
    return args


def command(name: str, w: Workload, spec: Path, tmp: Path) -> list[str]:
    contenders = REPO / "bench" / "contenders"
    if name == "sweep":
        return [SWEEP, *sweep_args(w, tmp)]
    if name == "sweep_fifo":
        return [SWEEP, *sweep_args(w, tmp, "fifo")]
    if name == "ray_script":
        return [PYTHON, str(contenders / "ray_tune_script.py"), str(spec)]
    if name == "ray_script_reuse":
        return [PYTHON, str(contenders / "ray_tune_script.py"), str(spec), "--reuse-actors"]
    if name == "serial":
        return [PYTHON, str(contenders / "serial_loop.py"), str(spec)]
    if name == "optuna":
        return [PYTHON, str(contenders / "optuna_sh.py"), str(spec)]
    raise ValueError(name)


def measure(cmd: list[str], cwd: Path, timeout: float) -> dict[str, Any]:
    """Run ``cmd``; wall time, the driver process's CPU and peak memory, and the events
    the probe models wrote."""
    events = cwd / "events.jsonl"
    env = {
        **os.environ,
        "BENCH_EVENTS": str(events),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "PYTHONUNBUFFERED": "1",
    }
    with open(cwd / "output.log", "w") as log:
        t0 = time.time()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        driver = psutil.Process(proc.pid)
        cpu, rss = 0.0, 0
        while proc.poll() is None:
            try:  # sampled: the last reading before exit is within 0.1 s of the total
                times = driver.cpu_times()
                cpu = times.user + times.system
                rss = max(rss, driver.memory_info().rss)
            except psutil.Error:
                pass
            if time.time() - t0 > timeout:
                proc.kill()
            time.sleep(0.1)
        wall = time.time() - t0
    lines = [json.loads(x) for x in events.read_text().splitlines()] if events.exists() else []
    return {
        "rc": proc.returncode,
        "t0": t0,
        "wall_s": wall,
        "driver_cpu_s": cpu,
        "driver_peak_rss_mib": rss / 2**20,
        "events": lines,
        "log_tail": (cwd / "output.log").read_text()[-2000:] if proc.returncode else "",
    }


def figures(run: dict[str, Any], cpus: int) -> dict[str, Any]:
    epochs = [e for e in run["events"] if e["event"] == "epoch"]
    firsts = [e["t"] for e in run["events"] if e["event"] == "first_step"]
    train = sum(e["t1"] - e["t0"] for e in epochs)
    return {
        "wall_s": run["wall_s"],
        "first_step_s": (min(firsts) - run["t0"]) if firsts else float("nan"),
        "train_s": train,
        "efficiency": train / (run["wall_s"] * cpus),
        "trials": len({e["trial"] for e in epochs}),
        "epochs": len(epochs),
        "best_val_acc": max((e["val_acc"] for e in epochs), default=float("nan")),
        "driver_cpu_s": run["driver_cpu_s"],
        "driver_peak_rss_mib": run["driver_peak_rss_mib"],
    }


def time_to(run: dict[str, Any], target: float) -> float:
    hits = [e["t1"] for e in run["events"] if e["event"] == "epoch" and e["val_acc"] >= target]
    return (min(hits) - run["t0"]) if hits else float("nan")


def one_round(w: Workload, names: list[str], order: int, timeout: float) -> dict[str, Any]:
    cpus = psutil.cpu_count() or 1
    runs: dict[str, dict[str, Any]] = {}
    rotated = names[order % len(names) :] + names[: order % len(names)]
    for name in rotated:
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
            spec = Path(tmp) / "spec.json"
            spec.write_text(json.dumps(w.spec()))
            run = measure(command(name, w, spec, Path(tmp)), Path(tmp), timeout)
        if run["rc"] != 0:
            print(f"  {name}: exit {run['rc']}\n{run['log_tail']}", file=sys.stderr)
        runs[name] = run
        print(f"  {name:<17} {run['wall_s']:7.1f} s  (exit {run['rc']})", flush=True)
    out = {name: figures(run, cpus) | {"rc": run["rc"]} for name, run in runs.items()}
    fifo = runs.get(FIFO_REFERENCE) or runs.get("serial")
    if fifo:
        target = figures(fifo, cpus)["best_val_acc"] - TARGET_SLACK
        for name, run in runs.items():
            reach = time_to(run, target)
            out[name]["time_to_target_s"] = reach
            out[name]["target_vs_fifo_wall"] = reach / fifo["wall_s"]
    return out


def median(rounds: list[dict[str, Any]], name: str, key: str) -> float:
    values = [r[name][key] for r in rounds if name in r and key in r[name]]
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else float("nan")


COLUMNS = (
    ("wall_s", "wall s", "{:.1f}"),
    ("first_step_s", "1st step s", "{:.1f}"),
    ("train_s", "train s", "{:.1f}"),
    ("efficiency", "efficiency", "{:.2f}"),
    ("time_to_target_s", "to target s", "{:.1f}"),
    ("target_vs_fifo_wall", "÷ FIFO wall", "{:.2f}"),
    ("best_val_acc", "best acc", "{:.4f}"),
    ("driver_cpu_s", "driver CPU s", "{:.1f}"),
    ("driver_peak_rss_mib", "driver MiB", "{:.0f}"),
)


def table(result: dict[str, Any]) -> str:
    rounds = result["rounds"]
    names = [n for n in CONTENDERS if any(n in r for r in rounds)]
    base = median(rounds, BASELINE, "wall_s")
    head = ["contender", *(c[1] for c in COLUMNS), f"wall ÷ {BASELINE}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        cells = [fmt.format(median(rounds, name, key)) for key, _, fmt in COLUMNS]
        cells.append(f"{median(rounds, name, 'wall_s') / base:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    w = result["workload"]
    lines.append(
        f"\n{w['name']}: {w['trials']} trials × ≤{w['epochs']} epochs of {w['model']}, "
        f"ASHA grace {w['grace_period']} η {w['reduction_factor']}; "
        f"medians of {len(rounds)} round(s); {result['cpus']} CPUs."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="overhead", choices=("overhead", "compute"))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 round (CI)")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--first-round", type=int, default=0, help="rotates the order")
    parser.add_argument("--out", type=Path, help="JSON file for the rounds and figures")
    parser.add_argument("--merge", type=Path, nargs="+", help="only merge saved JSON files")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--mlflow", action="store_true", help="also measure MLflow cost")
    args = parser.parse_args()
    if args.merge:
        parts = [json.loads(p.read_text()) for p in args.merge]
        result = {**parts[0], "rounds": [r for p in parts for r in p["rounds"]]}
    else:
        w = workload(args.workload, smoke=args.smoke)
        names = [n.strip() for n in args.contenders.split(",") if n.strip()]
        unknown = set(names) - set(CONTENDERS)
        if unknown:
            parser.error(f"unknown contender(s) {sorted(unknown)}; use {CONTENDERS}")
        reps = 1 if args.smoke else args.reps
        rounds = []
        for i in range(reps):
            print(f"round {i + 1}/{reps} ({w.name})", flush=True)
            rounds.append(one_round(w, names, args.first_round + i, args.timeout))
        result = {
            "workload": w.spec() | {"points": w.points()},
            "cpus": psutil.cpu_count(),
            "rounds": rounds,
        }
        if args.mlflow or args.smoke:
            from bench.mlflow_cost import measure as mlflow_measure

            result["mlflow"] = mlflow_measure(10 if args.smoke else 60)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    print(table(result))
    if "mlflow" in result:
        print(
            "\nMLflow per result: " + ", ".join(f"{k} {v:.3g}" for k, v in result["mlflow"].items())
        )


if __name__ == "__main__":
    main()
