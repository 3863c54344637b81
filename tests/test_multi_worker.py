"""Multi-worker trials for real (``resources.workers=2``): each trial is two DDP workers
(Lightning over gloo, through Ray Train) on different nodes of a local multi-raylet
cluster; one worker's node is killed mid-trial and the trial resumes from its checkpoint.

The cluster: a head (2 CPUs, its dashboard on 127.0.0.1: Ray Train frees a stopped
trial's workers through it) and two worker nodes of 1 CPU, each a raylet on this machine,
stopped by pid (never Ray's stop-all command).
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import SWEEP, reports_in
from tests.test_cluster import Cluster, Node, _children, cluster_root, free_port, kill

pytestmark = pytest.mark.slow

EPOCHS = 8


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    cluster = Cluster(*cluster_root("swm"))
    root = cluster.root
    try:
        cluster.port = free_port()
        cluster.start_node(
            "--head",
            f"--port={cluster.port}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={free_port()}",
            cpus=2,
        )
        cluster.start_worker()
        cluster.start_worker()
        (root / "shared").mkdir()
        yield cluster
    finally:
        cluster.teardown()


def train_workers_on(node: Node) -> int:
    """Ray Train workers running on ``node`` (its raylet's child processes)."""
    return sum("RayTrainWorker" in " ".join(p.cmdline()) for p in _alive(node.processes()))


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def reports(shared: Path) -> list[dict]:
    """The trial's reports so far, as Tune recorded them (result.json)."""
    lines: list[dict] = []
    for path in shared.glob("mlp_digits/*/tune/train_*/result.json"):
        lines += reports_in(path)
    return lines


def test_a_two_worker_trial_survives_losing_a_worker_s_node(cluster: Cluster, tmp_path) -> None:
    head, *workers = cluster.nodes
    shared = cluster.root / "shared"
    args = [
        "cluster=remote",
        f"cluster.address={cluster.address}",
        f"cluster.storage_path={shared}",
        "resources.workers=2",
        "resources.placement=SPREAD",
        "num_samples=1",
        f"trainer.max_epochs={EPOCHS}",
        "scheduler=fifo",
        "data.batch_size=8",  # slower epochs: the kill lands mid-trial
        "best_model=false",
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
    ]
    env = {k: v for k, v in cluster.env.items() if k != "RAY_AUTH_MODE"}
    driver = subprocess.Popen(
        [SWEEP, *args], cwd=tmp_path, env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        # Two epochs reported (each with a checkpoint), then the node of a worker goes.
        deadline = time.monotonic() + 240
        while len(reports(shared)) < 2:
            assert driver.poll() is None and time.monotonic() < deadline, "no 2 epochs reported"
            time.sleep(0.5)
        hosts = [train_workers_on(node) for node in cluster.nodes]
        assert sum(hosts) == 2 and max(hosts) == 1, f"workers per node: {hosts}"  # spread
        victim = next(node for node in workers if train_workers_on(node))
        victim.stop(signal.SIGKILL)  # the node is lost: raylet, its worker, its agents
        out, _ = driver.communicate(timeout=400)
    finally:
        if driver.poll() is None:
            kill([psutil.Process(driver.pid), *_children(driver.pid)])
            driver.wait(timeout=10)
    assert driver.returncode == 0, out
    assert "1 trials" in out and "(1 completed)" in out, out

    # The trial went on from its last checkpoint: its epochs never started over at 1, and
    # it reached the last one.
    epochs = [int(r["epoch"]) for r in reports(shared)]
    assert epochs.count(1) == 1 and epochs[-1] == EPOCHS, epochs
    assert len(epochs) < 2 * EPOCHS, epochs

    # One MLflow run for the trial (not one per worker), every epoch logged once.
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("mlp_digits")
    assert experiment is not None
    (trial,) = client.search_runs([experiment.experiment_id], "tags.`sweep.trial_id` != ''")
    assert trial.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(trial.info.run_id, "val_acc")]
    assert sorted(steps) == list(range(1, EPOCHS + 1)), steps
    # Its checkpoint is the Ray Train run's (written once, by rank 0).
    (folder,) = (tmp_path / "sweeps" / "mlp_digits").iterdir()
    checkpoint = next(line for line in out.splitlines() if "checkpoint " in line).split()[-1]
    assert (Path(checkpoint) / "model.ckpt").is_file(), checkpoint
    assert (folder / "results.csv").is_file()
    head_id = head.node_id
    assert trial.data.tags["sweep.node_id"] != "" and head_id
