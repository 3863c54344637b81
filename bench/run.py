"""Side-by-side benchmark: `sweep` vs a hand-written Ray Tune script (three ways), a
serial loop and Optuna, on the same fixed trials. See bench/BENCHMARKS.md.

    python bench/run.py --reps 3                      # both workloads, 3 rounds, interleaved
    python bench/run.py --workload overhead --reps 1  # one workload
    python bench/run.py --smoke                       # tiny sizes, 1 round (CI); see SMOKE
    python bench/run.py --merge out1.json out2.json   # medians over saved rounds

Each round runs every contender once on each workload, in a rotating order (so no
contender always runs first on a cold page cache); the tables show medians over rounds,
where each contender's time goes (start-up to the first step, the trials, after the last
epoch), and `sweep`'s ratios to each of the others.
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

from bench.workloads import NAMES, Workload, workload  # noqa: E402

PYTHON = sys.executable
SWEEP = str(Path(sys.executable).with_name("sweep"))
CONTENDERS = (
    "sweep",
    "sweep_no_model",
    "sweep_fifo",
    "ray_script",
    "ray_script_reuse",
    "ray_script_lean",
    "serial",
    "optuna",
)
# `sweep` is divided by each of these; the first is issue 12's yardstick: the Ray Tune
# script a user writes after reading Tune's performance guide (reused actors, and no
# per-epoch checkpoint, so it cannot resume a trial).
BASELINES = ("ray_script_lean", "ray_script_reuse", "ray_script", "serial", "optuna")
DEFAULT_WORKLOADS = "default,compute"
TARGET_SLACK = 0.005  # ASHA must reach FIFO's best val acc within 0.5 points
FIFO_REFERENCE = "sweep_fifo"
# A smoke run (CI) runs each program once per workload, its variants spread over the two:
# `sweep` with and without the model, the Ray script with and without checkpoints. The
# other two variants differ in one flag tested elsewhere (`scheduler=fifo` in the README
# commands; `reuse_actors=False` is Tune's default) and run in the measured rounds.
SMOKE = {
    "default": ("sweep", "ray_script_reuse", "serial", "optuna"),
    "compute": ("sweep_no_model", "ray_script_lean", "serial", "optuna"),
}


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
    if name == "sweep_no_model":  # the same without the best model logged to MLflow
        return [SWEEP, *sweep_args(w, tmp), "best_model=false"]
    if name == "sweep_fifo":
        return [SWEEP, *sweep_args(w, tmp, "fifo")]
    if name == "ray_script":
        return [PYTHON, str(contenders / "ray_tune_script.py"), str(spec)]
    if name == "ray_script_reuse":
        return [PYTHON, str(contenders / "ray_tune_script.py"), str(spec), "--reuse-actors"]
    if name == "ray_script_lean":
        script = [PYTHON, str(contenders / "ray_tune_script.py"), str(spec)]
        return [*script, "--reuse-actors", "--no-checkpoint"]
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
    busy_before = busy_cpu_s()
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
    busy = busy_cpu_s() - busy_before
    lines = [json.loads(x) for x in events.read_text().splitlines()] if events.exists() else []
    return {
        "rc": proc.returncode,
        "t0": t0,
        "wall_s": wall,
        "driver_cpu_s": cpu,
        "cpu_s": busy,
        "driver_peak_rss_mib": rss / 2**20,
        "events": lines,
        "log_tail": (cwd / "output.log").read_text()[-2000:] if proc.returncode else "",
    }


def busy_cpu_s() -> float:
    """CPU seconds this machine has spent busy since boot, every process together: a
    contender's whole cost (its driver, Ray's daemons and workers, Optuna's processes)."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def figures(run: dict[str, Any], cpus: int) -> dict[str, Any]:
    epochs = [e for e in run["events"] if e["event"] == "epoch"]
    firsts = [e["t"] for e in run["events"] if e["event"] == "first_step"]
    train = sum(e["t1"] - e["t0"] for e in epochs)
    first = (min(firsts) - run["t0"]) if firsts else float("nan")
    last = (max(e["t1"] for e in epochs) - run["t0"]) if epochs else float("nan")
    return {
        "wall_s": run["wall_s"],
        "first_step_s": first,  # start-up: the command's start to any trial's first batch
        "trials_s": last - first,  # the first batch to the last epoch's end
        "after_s": run["wall_s"] - last,  # the last epoch's end to exit: report, shutdown
        "cpu_s": run.get("cpu_s", float("nan")),
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
    ("trials_s", "trials s", "{:.1f}"),
    ("after_s", "after s", "{:.1f}"),
    ("train_s", "train s", "{:.1f}"),
    ("epoch_ms", "ms/epoch", "{:.0f}"),
    ("efficiency", "efficiency", "{:.2f}"),
    ("time_to_target_s", "to target s", "{:.1f}"),
    ("best_val_acc", "best acc", "{:.4f}"),
    ("cpu_s", "CPU s", "{:.1f}"),
    ("driver_cpu_s", "driver CPU s", "{:.1f}"),
    ("driver_peak_rss_mib", "driver MiB", "{:.0f}"),
)
RATIOS = (  # sweep ÷ a baseline, per round, then the median
    ("wall_s", "wall"),
    ("cpu_s", "CPU"),
    ("driver_cpu_s", "driver CPU"),
    ("driver_peak_rss_mib", "driver MiB"),
    ("first_step_s", "1st step"),
    ("epoch_ms", "ms/epoch"),
)


def derived(figures: dict[str, Any]) -> dict[str, Any]:
    """Figures computed from the stored ones (so older result files gain them too)."""
    epochs = figures.get("epochs") or 0
    return figures | {"epoch_ms": 1000 * figures["train_s"] / epochs if epochs else float("nan")}


def ratio(
    rounds: list[dict[str, Any]], key: str, base: str, name: str = "sweep"
) -> tuple[float, float, float]:
    """Median, low and high over the rounds that ran both, of ``name``'s ``key`` ÷ ``base``'s."""
    pairs = [(r[name].get(key), r[base].get(key)) for r in rounds if name in r and base in r]
    values = sorted(a / b for a, b in pairs if a == a and b == b and a is not None and b)
    if not values:
        return (float("nan"),) * 3
    return statistics.median(values), values[0], values[-1]


def table(result: dict[str, Any]) -> str:
    """One workload's medians per contender, then sweep's ratios to each baseline."""
    rounds = [{name: derived(f) for name, f in r.items()} for r in result["rounds"]]
    names = [n for n in CONTENDERS if any(n in r for r in rounds)]
    head = ["contender", *(c[1] for c in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        cells = [fmt.format(median(rounds, name, key)) for key, _, fmt in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    w = result["workload"]
    lines.append(
        f"\n{w['name']}: {w['trials']} trials × ≤{w['epochs']} epochs of {w['model']}, "
        f"ASHA grace {w['grace_period']} η {w['reduction_factor']}; "
        f"medians of {len(rounds)} round(s); {result['cpus']} CPUs."
    )
    for name in (n for n in ("sweep", "sweep_no_model") if n in names):
        bases = [b for b in BASELINES if b in names]
        if not bases:
            continue
        head = [f"{name} ÷", *(label for _, label in RATIOS)]
        lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for base in bases:
            cells = []
            for key, _ in RATIOS:
                mid, low, high = ratio(rounds, key, base, name)
                cells.append(f"{mid:.2f}" + (f" ({low:.2f}–{high:.2f})" if high > low else ""))
            lines.append(f"| {base} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workload", default=DEFAULT_WORKLOADS, help=f"comma-separated, of {', '.join(NAMES)}"
    )
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
        result = {**parts[0], "workloads": {}}
        for part in parts:
            for name, one in part["workloads"].items():
                merged = result["workloads"].setdefault(name, {**one, "rounds": []})
                merged["rounds"] += one["rounds"]
    else:
        chosen = [n.strip() for n in args.workload.split(",") if n.strip()]
        if set(chosen) - set(NAMES):
            parser.error(f"unknown workload(s) {sorted(set(chosen) - set(NAMES))}; use {NAMES}")
        loads = [workload(n, smoke=args.smoke) for n in chosen]
        names = [n.strip() for n in args.contenders.split(",") if n.strip()]
        unknown = set(names) - set(CONTENDERS)
        if unknown:
            parser.error(f"unknown contender(s) {sorted(unknown)}; use {CONTENDERS}")
        reps = 1 if args.smoke else args.reps
        cpus = psutil.cpu_count()
        result = {"cpus": cpus, "workloads": {}}
        for w in loads:
            spec = w.spec() | {"points": w.points()}
            result["workloads"][w.name] = {"workload": spec, "cpus": cpus, "rounds": []}
        for i in range(reps):  # workloads and contenders interleaved, round by round
            for w in loads:
                print(f"round {i + 1}/{reps} ({w.name})", flush=True)
                these = [n for n in names if n in SMOKE[w.name]] if args.smoke else names
                one = one_round(w, these, args.first_round + i, args.timeout)
                result["workloads"][w.name]["rounds"].append(one)
                if args.out:  # a round's figures survive an interrupted run
                    args.out.write_text(json.dumps(result, indent=1))
        if args.mlflow or args.smoke:
            from bench.mlflow_cost import measure as mlflow_measure

            result["mlflow"] = mlflow_measure(10 if args.smoke else 60)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    for one in result["workloads"].values():
        print(f"\n### {one['workload']['name']}\n\n{table(one)}")
    if "mlflow" in result:
        print(
            "\nMLflow per result: " + ", ".join(f"{k} {v:.3g}" for k, v in result["mlflow"].items())
        )


if __name__ == "__main__":
    main()
