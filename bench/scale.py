"""Scale benchmark: many trivial trials through the whole orchestrator and through bare Tune.

    python bench/scale.py                  # 1,000 trials per mode (see bench/SCALING.md)
    python bench/scale.py --trials 20      # smoke run (tests/test_bench_scale_smoke.py)

Every mode starts a fresh embedded Ray on this machine and runs the same trials: the
one-parameter model of bench/scale_model.py on one batch, so training costs nothing and
what is left is the machinery around it.

  sweep    sweep.driver.run, as the `sweep` command runs it: Tune + ASHA-free FIFO,
           Lightning trials reporting with checkpoints, the driver's MLflow parent run and
           one child run per trial (SQLite), progress line, results and report.
  tune     bare Ray Tune with the same trainable (sweep.trial.train), search space,
           resources and checkpoint policy: no MLflow, no callbacks, no report; Tune's
           default result files (CSV, JSON and TensorBoard).
  tune-files  the same, writing only the result files a sweep writes (CSV and JSON, no
           TensorBoard): the like-for-like baseline.
  tune-fn  bare Ray Tune with a plain function that reports the same metrics and a
           checkpoint of the same size: Tune's own floor, without Lightning.

Then the MLflow store's own write rate, through the sweep's Tracker (one writer thread,
as in a sweep): child runs per second (open + params + metrics + close) and metric
batches per second, on SQLite and on a local `mlflow server`.

Each mode runs in a process of its own: a sweep sets Tune's environment variables
(TUNE_DISABLE_AUTO_CALLBACK_LOGGERS among them), which a bare Tune run after it in the
same process would inherit.

Reported per mode: wall time, trials/s, results/s, and the driver's CPU time per trial
(the driver is one process; at scale its CPU per trial bounds the trial rate).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/scale.py` from a checkout
    sys.path.insert(0, str(REPO))
# Trial workers import bench.scale_model too: they inherit PYTHONPATH (sweep.run.cluster.trial_env).
os.environ["PYTHONPATH"] = os.pathsep.join(
    dict.fromkeys([str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])
)

MODES = ("sweep", "tune", "tune-files", "tune-fn")


def compose(trials: int, epochs: int, workdir: Path) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    overrides = [
        f"hydra.searchpath=[file://{REPO / 'bench' / 'scale_conf'}]",
        "model=trivial",
        "data=one_batch",
        "scheduler=fifo",
        "searcher=random",
        f"num_samples={trials}",
        f"trainer.max_epochs={epochs}",
        "resources.cpu=1",
        f"tracking.uri=sqlite:///{workdir}/mlflow.db",
        f"output_dir={workdir}/sweeps",
        "name=scale",
    ]
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


@contextlib.contextmanager
def measured(row: dict[str, Any]) -> Iterator[None]:
    """Wall and this process's CPU time (all its threads: Tune's loop, MLflow's writer)."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    row["wall_s"] = time.perf_counter() - wall
    row["driver_cpu_s"] = time.process_time() - cpu


def run_sweep_mode(cfg: Any, workdir: Path) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    from sweep import driver

    row: dict[str, Any] = {"mode": "sweep"}
    log = io.StringIO()
    with measured(row), contextlib.redirect_stdout(log):
        code = driver.run(cfg)
    assert code == 0, log.getvalue()
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    experiment = client.get_experiment_by_name("scale")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=50_000)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    row["trials_done"] = sum(r.info.status == "FINISHED" for r in children)
    row["mlflow_child_runs"] = len(children)
    return row


def trivial_function(config: dict[str, Any], epochs: int, checkpoint_bytes: int) -> None:
    """Reports what a Trivial trial reports, with a checkpoint of the same size."""
    import math

    from ray import tune

    val_acc = 1.0 - (math.log10(config["model.lr"]) + 2.0) ** 2 / 10.0
    for epoch in range(1, epochs + 1):
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "model.ckpt").write_bytes(b"\0" * checkpoint_bytes)
            tune.report(
                {"val_acc": val_acc, "train_loss": 1.0, "epoch": epoch, "diverged": 0.0},
                checkpoint=tune.Checkpoint.from_directory(folder),
            )


def run_tune_mode(cfg: Any, workdir: Path, mode: str, checkpoint_bytes: int) -> dict[str, Any]:
    import ray
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    from sweep.config.settings import load_settings
    from sweep.config.space import portable_config
    from sweep.run import trial
    from sweep.run.cluster import trial_env
    from sweep.run.tuner import param_space

    settings = load_settings(cfg)
    callbacks: list[Any] | None = None
    if mode == "tune-files":  # the result files a sweep writes, and no TensorBoard
        os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
        callbacks = [CSVLoggerCallback(), JsonLoggerCallback()]
    if mode in ("tune", "tune-files"):
        inner = tune.with_parameters(
            trial.train, base=portable_config(cfg), dims=settings.dims, cpus=1
        )
    else:
        inner = tune.with_parameters(
            trivial_function, epochs=settings.max_epochs, checkpoint_bytes=checkpoint_bytes
        )
    row: dict[str, Any] = {"mode": mode}
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    with measured(row):
        ray.init(
            address="local",
            include_dashboard=False,
            log_to_driver=False,
            logging_level="ERROR",
            runtime_env={"env_vars": trial_env()},
        )
        try:
            tuner = tune.Tuner(
                tune.with_resources(inner, {"cpu": settings.cpus_per_trial}),
                param_space=param_space(list(settings.dims)),
                tune_config=tune.TuneConfig(
                    metric=settings.metric,
                    mode=settings.mode,
                    num_samples=settings.num_samples,
                    search_alg=BasicVariantGenerator(random_state=settings.seed),
                    scheduler=FIFOScheduler(),
                    reuse_actors=True,
                ),
                run_config=tune.RunConfig(
                    name=mode,
                    storage_path=str(workdir / "tune"),
                    checkpoint_config=tune.CheckpointConfig(
                        num_to_keep=1,
                        checkpoint_score_attribute=settings.metric,
                        checkpoint_score_order=settings.mode,
                    ),
                    verbose=0,
                    callbacks=callbacks,
                ),
            )
            results = tuner.fit()
        finally:
            ray.shutdown()
    row["trials_done"] = sum(r.error is None for r in results)
    return row


# ---- the MLflow store's write rate -----------------------------------------------------
def store_rate(uri: str, runs: int) -> dict[str, Any]:
    """Through the sweep's Tracker, on its writer thread, as a sweep writes."""
    from sweep.track.tracker import Tracker

    tracker = Tracker(uri, f"rate-{time.time_ns()}")
    tracker.start_parent("rate", Path("."), {}, {"model.lr": 0.01})
    metrics = {"val_acc": 0.9, "val_loss": 0.3, "train_acc": 0.9, "train_loss": 0.3}
    start = time.perf_counter()
    for i in range(runs):
        trial_id = f"t_{i:05d}"

        def one_trial(trial_id: str = trial_id) -> None:
            run_id = tracker.open_child(trial_id, trial_id, {"model.lr": 0.01})
            tracker.log_metrics(metrics, step=1, run_id=run_id)
            tracker.close_child(trial_id, "FINISHED", {"sweep.end_reason": "completed"})

        tracker.writer.submit(one_trial)
    tracker.writer.flush()
    trials_s = runs / (time.perf_counter() - start)
    run_id = tracker.child_run("t_00000")
    start = time.perf_counter()
    for step in range(runs):
        tracker.writer.submit(
            lambda s=step: tracker.log_metrics(metrics, step=100 + s, run_id=run_id)
        )
    tracker.writer.flush()
    batches_s = runs / (time.perf_counter() - start)
    tracker.writer.close()
    assert not tracker.writer.errors, tracker.writer.errors[:3]
    return {"child_runs_per_s": trials_s, "metric_batches_per_s": batches_s}


@contextlib.contextmanager
def mlflow_server(workdir: Path) -> Iterator[str]:
    """A lean local `mlflow server` (127.0.0.1, SQLite, one worker), stopped by pid."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{workdir}/server.db",
         "--artifacts-destination", str(workdir / "artifacts")],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("mlflow server did not start") from None
                time.sleep(0.5)
        yield uri
    finally:
        # The server's own process group (it forks a worker): stop exactly that group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def in_own_process(mode: str, trials: int, epochs: int, tmp: Path) -> dict[str, Any]:
    out = tmp / f"{mode}.json"
    argv = [sys.executable, __file__, f"--trials={trials}", f"--epochs={epochs}"]
    argv += [f"--modes={mode}", "--store-runs=0", f"--out={out}"]
    subprocess.run(argv, check=True, cwd=tmp)
    row: dict[str, Any] = json.loads(out.read_text())["modes"][0]
    return row


# ---- report --------------------------------------------------------------------------
def derive(row: dict[str, Any], trials: int, epochs: int) -> dict[str, Any]:
    row["trials"] = trials
    row["results"] = trials * epochs
    row["trials_per_s"] = trials / row["wall_s"]
    row["results_per_s"] = trials * epochs / row["wall_s"]
    row["driver_cpu_ms_per_trial"] = 1000 * row["driver_cpu_s"] / trials
    return row


def table(rows: list[dict[str, Any]], stores: dict[str, dict[str, float]]) -> str:
    lines = [
        f"{'mode':<10} {'trials':>6} {'wall s':>7} {'trials/s':>8} {'results/s':>9} "
        f"{'driver CPU ms/trial':>19}"
    ]
    for r in rows:
        lines.append(
            f"{r['mode']:<10} {r['trials_done']:>6} {r['wall_s']:>7.1f} {r['trials_per_s']:>8.2f} "
            f"{r['results_per_s']:>9.2f} {r['driver_cpu_ms_per_trial']:>19.1f}"
        )
    by = {r["mode"]: r for r in rows}
    for base in ("tune", "tune-files"):
        if "sweep" not in by or base not in by:
            continue
        extra = (by["sweep"]["wall_s"] - by[base]["wall_s"]) / by["sweep"]["trials"]
        cpu = by["sweep"]["driver_cpu_ms_per_trial"] - by[base]["driver_cpu_ms_per_trial"]
        rate = by["sweep"]["trials_per_s"] / by[base]["trials_per_s"]
        lines.append(
            f"orchestrator over bare Tune ({base}): {1000 * extra:+.1f} ms wall and "
            f"{cpu:+.1f} ms driver CPU per trial; trials/s {rate:.2f}x"
        )
    for store, rate in stores.items():
        lines.append(
            f"MLflow {store:<7} {rate['child_runs_per_s']:7.1f} child runs/s "
            f"(open+params+metrics+close), {rate['metric_batches_per_s']:7.1f} metric batches/s"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    import platform

    import ray

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "ray": ray.__version__,
        "platform": platform.platform(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=1, help="results per trial")
    parser.add_argument("--modes", default=",".join(MODES), help=f"subset of {MODES}")
    parser.add_argument("--store-runs", type=int, default=500, help="runs for the MLflow rate")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)

    from sweep.quiet import silence

    silence(0)
    modes = args.modes.split(",")
    rows, stores = [], {}
    with tempfile.TemporaryDirectory(prefix="scale") as tmp:
        for mode in modes:
            if len(modes) > 1:  # a process of its own: no environment left by another mode
                rows.append(in_own_process(mode, args.trials, args.epochs, Path(tmp)))
                continue
            workdir = Path(tmp) / mode
            workdir.mkdir()
            cfg = compose(args.trials, args.epochs, workdir)
            print(f"{mode}: {args.trials} trials ...", flush=True)
            cwd = os.getcwd()
            os.chdir(workdir)  # the sweep's relative outputs land in the scratch folder
            try:
                if mode == "sweep":
                    row = run_sweep_mode(cfg, workdir)
                else:
                    row = run_tune_mode(cfg, workdir, mode, checkpoint_bytes=checkpoint_size())
            finally:
                os.chdir(cwd)
            rows.append(derive(row, args.trials, args.epochs))
        if args.store_runs:
            stores["sqlite"] = store_rate(f"sqlite:///{tmp}/rate.db", args.store_runs)
            with mlflow_server(Path(tmp)) as uri:
                stores["server"] = store_rate(uri, args.store_runs)
    print(table(rows, stores))
    if args.out:
        args.out.write_text(
            json.dumps({"machine": machine(), "modes": rows, "mlflow": stores}, indent=2) + "\n"
        )
    return 0


def checkpoint_size() -> int:
    """Bytes of one Trivial checkpoint, so the plain-function floor writes the same."""
    import lightning as L
    import torch

    from bench.scale_model import OneBatch, Trivial

    with tempfile.TemporaryDirectory() as folder:
        trainer = L.Trainer(
            max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, num_sanity_val_steps=0,
        )  # fmt: skip
        torch.set_num_threads(1)
        trainer.fit(Trivial(), datamodule=OneBatch())
        path = Path(folder) / "model.ckpt"
        trainer.save_checkpoint(path)
        return path.stat().st_size


if __name__ == "__main__":
    sys.exit(main())
