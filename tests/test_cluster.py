"""`sweep cluster=remote` against a real multi-node Ray cluster on this machine.

A head (`ray start --head`) and a worker node (`ray start --address=...`), each a raylet with
one CPU and its own temp folder, with token auth; a real `mlflow server` on 127.0.0.1 with
SQLite; storage in a temp folder both nodes see. Then: trials spread over both nodes; bad
addresses, tokens and storage fail fast; the worker node's processes are killed mid-sweep
and its trial resumes on the head from its last checkpoint. Every process started here is
stopped by pid, also when a test fails (never Ray's stop-all CLI: it kills other Rays).

    python -m pytest tests/test_cluster.py -v
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pytorch
import psutil
import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.conftest import SWEEP, run_sweep

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))
MLFLOW = str(Path(sys.executable).with_name("mlflow"))
# Small but not instant (~0.5 s epochs): trials outlast a worker process's start-up, so
# both nodes get some, and one is still running when its node is killed.
TRIALS = ["data.batch_size=4", "model.hidden=64"]
SPREAD_EPOCHS = 4
LOST_EPOCHS = 8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def processes_mentioning(text: str) -> list[psutil.Process]:
    """Processes whose command line contains ``text``, with all their descendants."""
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if proc.pid != os.getpid() and any(text in a for a in proc.info["cmdline"] or []):
                found[proc.pid] = proc
                found.update((c.pid, c) for c in proc.children(recursive=True))
        except psutil.Error:
            continue
    return list(found.values())


def kill(procs: list[psutil.Process], sig: int = signal.SIGKILL, grace: float = 3) -> None:
    """Send ``sig``; whatever is left after ``grace`` seconds gets SIGKILL."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()


@dataclass
class Node:
    """One raylet (plus the head's GCS) with its own temp folder; its processes are the
    ones whose command line names that folder, and their children."""

    temp_dir: Path

    def processes(self) -> list[psutil.Process]:
        return processes_mentioning(f"={self.temp_dir}")

    @property
    def node_id(self) -> str:
        for proc in self.processes():
            for arg in proc.cmdline():
                if arg.startswith("--node_id="):
                    return arg.split("=", 1)[1]
        raise AssertionError(f"no raylet for {self.temp_dir}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        # SIGTERM first: a raylet that exits cleanly unregisters at once.
        kill(self.processes(), sig)


@dataclass
class Cluster:
    root: Path
    env: dict[str, str]
    port: int = 0
    mlflow_port: int = 0
    nodes: list[Node] = field(default_factory=list)
    servers: list[subprocess.Popen] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def start_node(
        self, *args: str, wrapper: tuple[str, ...] = (), cwd: Path | None = None, cpus: int = 1
    ) -> Node:
        node = Node(self.root / f"n{len(self.nodes)}")
        self.nodes.append(node)
        cmd = [
            *wrapper,
            RAY,
            "start",
            *args,
            f"--num-cpus={cpus}",
            f"--temp-dir={node.temp_dir}",
            "--object-store-memory=100000000",
            "--disable-usage-stats",
        ]
        out = subprocess.run(
            cmd,
            env=self.env,
            cwd=cwd,  # a Ray job's working folder, on the head
            capture_output=True,
            text=True,
            timeout=120,
            start_new_session=True,  # signals to this test's process group never reach Ray
        )
        assert out.returncode == 0, out.stdout + out.stderr
        return node

    def start_head(self) -> Node:
        self.port = free_port()
        return self.start_node("--head", f"--port={self.port}", "--include-dashboard=false")

    def start_worker(self, wrapper: tuple[str, ...] = ()) -> Node:
        return self.start_node(f"--address={self.address}", wrapper=wrapper)

    def start_mlflow(self) -> None:
        self.mlflow_port = free_port()
        server = subprocess.Popen(
            [MLFLOW, "server", "--host", "127.0.0.1", "--port", str(self.mlflow_port),
             "--backend-store-uri", f"sqlite:///{self.root}/mlflow.db",
             "--artifacts-destination", str(self.root / "artifacts"), "--workers", "1"],
            env={**self.env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        self.servers.append(server)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.tracking_uri}/health", timeout=2):
                    return
            except OSError:
                assert server.poll() is None, "mlflow server exited"
                time.sleep(0.5)
        raise AssertionError("mlflow server not healthy after 90 s")

    def teardown(self) -> None:
        # SIGKILL: the whole cluster goes, so no raylet needs to unregister. With SIGTERM
        # the head's GCS, raylet and agents outlived kill()'s 3 s grace every time.
        for node in reversed(self.nodes):
            node.stop(signal.SIGKILL)
        # The head's Ray Client server names no folder, only the head's address, and
        # outlived the head by minutes (found running after a local test run).
        kill(processes_mentioning(f":{self.port}"), signal.SIGKILL)
        for server in self.servers:
            kill([psutil.Process(server.pid), *_children(server.pid)], signal.SIGTERM)
            server.wait(timeout=10)  # reaped, so no ResourceWarning lands on a later test
        shutil.rmtree(self.root, ignore_errors=True)


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def cluster_root(prefix: str) -> tuple[Path, dict[str, str]]:
    """A fresh folder for a test cluster, and the environment its processes run with."""
    # A short root: Ray's socket paths under it must stay below 108 characters.
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    # The cluster's own token (not ~/.ray/auth_token); the sweep finds it the same way.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    # The head declares a lost node dead after 3 failed health checks 1 s apart, not Ray's
    # 5 checks 3 s apart: Ray Train restarts a multi-worker trial's group only then, and
    # tests/test_multi_worker.py waited ~13 s longer. A live raylet still has Ray's 10 s
    # to answer each check, so a busy machine does not lose one.
    env.update(RAY_health_check_period_ms="1000", RAY_health_check_failure_threshold="3")
    env.pop("RAY_ADDRESS", None)
    return root, env


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    cluster = Cluster(*cluster_root("swc"))
    try:
        cluster.start_head()
        cluster.start_worker()
        cluster.start_mlflow()
        (cluster.root / "shared").mkdir()
        yield cluster
    finally:
        cluster.teardown()
        # Connections to the servers just stopped (MLflow's HTTP pool, Ray's sockets) are
        # collected here, not as a ResourceWarning in whichever test runs next.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()


def sweep_args(cluster: Cluster, name: str, *extra: str) -> list[str]:
    return [
        "cluster=remote",
        f"cluster.address={cluster.address}",
        f"cluster.storage_path={cluster.root / 'shared'}",
        "tracking=server",
        f"tracking.uri={cluster.tracking_uri}",
        f"name={name}",
        "scheduler=fifo",
        "num_samples=4",
        "resources.cpu=1",
        *extra,
    ]


def sweep_env(cluster: Cluster) -> dict[str, str]:
    """The driver gets the token path but not RAY_AUTH_MODE: it turns token auth on itself."""
    env = {k: v for k, v in cluster.env.items() if k != "RAY_AUTH_MODE"}
    return {**env, "PYTHONUNBUFFERED": "1"}


def runs(cluster: Cluster, name: str) -> tuple[Any, list[Any], MlflowClient]:
    client = MlflowClient(cluster.tracking_uri)
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None, f"no experiment {name!r}"
    found = client.search_runs([experiment.experiment_id])
    parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    children = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents[0], children, client


def one_line_error(proc: subprocess.CompletedProcess, key: str) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {key}: "), lines[0]
    return lines[0]


# ---- trials spread over the nodes ---------------------------------------------------------
@pytest.fixture(scope="module")
def spread(cluster: Cluster, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    cwd = tmp_path_factory.mktemp("spread")
    proc = subprocess.run(
        [SWEEP, *sweep_args(
            cluster, "spread", *TRIALS, f"trainer.max_epochs={SPREAD_EPOCHS}",
            "register_model=spread_best",
        )],
        cwd=cwd, env=sweep_env(cluster), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "View run" not in proc.stdout  # MLflow's per-run links would bury the progress line
    return cwd, proc


def test_trials_spread_over_both_nodes(cluster: Cluster, spread) -> None:
    _, children, _ = runs(cluster, "spread")
    used = {c.data.tags["sweep.node_id"] for c in children}
    assert used == {node.node_id for node in cluster.nodes[:2]}


def test_mlflow_server_has_the_parent_and_every_trial(cluster: Cluster, spread) -> None:
    parent, children, client = runs(cluster, "spread")
    assert parent.info.status == "FINISHED"
    assert parent.data.params["cluster.address"] == cluster.address
    assert len(children) == 4
    assert {c.info.status for c in children} == {"FINISHED"}
    assert {c.data.tags["sweep.end_reason"] for c in children} == {"completed"}
    for child in children:
        history = client.get_metric_history(child.info.run_id, "val_acc")
        assert sorted(m.step for m in history) == list(range(1, SPREAD_EPOCHS + 1))


def test_the_best_model_is_registered_on_the_server(cluster: Cluster, spread) -> None:
    """Logged by a task on the cluster, through the server's artifact proxy; loaded here."""
    parent, _, client = runs(cluster, "spread")
    assert client.get_model_version("spread_best", "1").run_id == parent.info.run_id
    mlflow.set_tracking_uri(cluster.tracking_uri)
    logged = mlflow.pytorch.load_model("models:/spread_best/1")
    assert logged(torch.zeros(2, 64)).shape == (2, 10)


def test_checkpoints_live_on_the_shared_storage(cluster: Cluster, spread) -> None:
    cwd, _ = spread
    (sweep_dir,) = (cwd / "sweeps" / "spread").iterdir()
    tune_dir = cluster.root / "shared" / "spread" / sweep_dir.name / "tune"
    trials = [p for p in tune_dir.iterdir() if (p / "result.json").is_file()]
    assert len(trials) == 4
    assert all(list(t.glob("checkpoint_*/model.ckpt")) for t in trials)
    assert not list((cluster.root / "shared").glob(".sweep-check-*"))  # the probe cleaned up


# ---- mistakes fail fast, with one line ------------------------------------------------------
def test_unreachable_head_fails_fast(cluster: Cluster, tmp_path) -> None:
    args = sweep_args(cluster, "nohead")
    args[1] = f"cluster.address=127.0.0.1:{free_port()}"
    line = one_line_error(run_sweep(tmp_path, *args, timeout=60), "cluster.address")
    assert "no Ray head answers" in line
    assert not (tmp_path / "sweeps").exists()


def test_rejected_token_fails_fast(cluster: Cluster, tmp_path) -> None:
    env = {**sweep_env(cluster), "RAY_AUTH_TOKEN": "not-the-cluster-token"}
    proc = subprocess.run(
        [SWEEP, *sweep_args(cluster, "badtoken")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    line = one_line_error(proc, "cluster.address")
    assert "rejected this machine's auth token" in line and "RAY_AUTH_TOKEN" in line


def test_storage_path_must_be_absolute_or_a_uri(cluster, tmp_path) -> None:
    # (more cases in test_cluster_checks.py)
    args = [a for a in sweep_args(cluster, "nostorage") if "storage_path" not in a]
    proc = run_sweep(tmp_path, *args, "cluster.storage_path=shared", timeout=60)
    assert "is relative" in one_line_error(proc, "cluster.storage_path")


# ---- losing a worker node mid-sweep -------------------------------------------------------
def trial_on(client: MlflowClient, experiment: str, node_id: str, min_step: int) -> Any:
    """A running child run on ``node_id`` that has logged at least ``min_step`` epochs."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    for run in client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`sweep.node_id` = '{node_id}' and attributes.status = 'RUNNING'",
    ):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
        if steps and min_step <= max(steps) < LOST_EPOCHS - 1:
            return run
    return None


@pytest.fixture(scope="module")
def lost_node(cluster: Cluster, tmp_path_factory) -> dict[str, Any]:
    cwd = tmp_path_factory.mktemp("lost")
    head, worker = cluster.nodes[:2]
    head_id, worker_id = head.node_id, worker.node_id
    client = MlflowClient(cluster.tracking_uri)
    driver = subprocess.Popen(
        [SWEEP, *sweep_args(cluster, "lost", *TRIALS, f"trainer.max_epochs={LOST_EPOCHS}")],
        cwd=cwd, env=sweep_env(cluster), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline, victim = time.monotonic() + 180, None
        while victim is None and time.monotonic() < deadline and driver.poll() is None:
            victim = trial_on(client, "lost", worker_id, min_step=2)
            time.sleep(0.3)
        assert victim is not None, "no trial ran on the worker node with a checkpoint"
        killed = [(p.pid, p.name()) for p in worker.processes()]
        worker.stop(signal.SIGKILL)  # the node is lost: raylet, its workers, its agents
        out, _ = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            kill([psutil.Process(driver.pid), *_children(driver.pid)])
            driver.wait(timeout=10)
    assert driver.returncode == 0, out
    print(f"killed worker node {worker_id[:8]}: {killed}")
    return {"cwd": cwd, "victim": victim, "head": head_id, "worker": worker_id, "out": out}


def test_lost_node_every_trial_finishes_once(cluster: Cluster, lost_node) -> None:
    parent, children, client = runs(cluster, "lost")
    assert parent.info.status == "FINISHED"
    assert len(children) == 4  # one run per trial, none duplicated by the retry
    assert {c.info.status for c in children} == {"FINISHED"}
    assert {c.data.tags["sweep.end_reason"] for c in children} == {"completed"}
    for child in children:  # every epoch logged once: no gap, no re-run from scratch
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_acc")]
        assert sorted(steps) == list(range(1, LOST_EPOCHS + 1)), child.info.run_name


def test_lost_node_trial_resumed_on_the_head_from_its_checkpoint(
    cluster: Cluster, lost_node
) -> None:
    victim = MlflowClient(cluster.tracking_uri).get_run(lost_node["victim"].info.run_id)
    assert victim.data.tags["sweep.node_id"] == lost_node["head"]  # where it finished
    trial_id = victim.data.tags["sweep.trial_id"]
    (sweep_dir,) = (lost_node["cwd"] / "sweeps" / "lost").iterdir()
    tune_dir = cluster.root / "shared" / "lost" / sweep_dir.name / "tune"
    (result_file,) = [p for p in tune_dir.glob(f"*{trial_id}*/result.json")]
    rows = [json.loads(line) for line in result_file.read_text().splitlines()]
    nodes = [r["node_id"] for r in rows]
    assert nodes[0] == lost_node["worker"] and nodes[-1] == lost_node["head"]
    moved = nodes.index(lost_node["head"])
    # The first epoch on the head continues the count: it was restored, not restarted.
    assert rows[moved]["iterations_since_restore"] == 1
    assert rows[moved]["training_iteration"] == rows[moved - 1]["training_iteration"] + 1
    assert [r["training_iteration"] for r in rows] == list(range(1, LOST_EPOCHS + 1))


# ---- storage that only the driver sees ----------------------------------------------------
def can_unshare() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not can_unshare(), reason="needs `unshare -m` (root) to hide a folder")
def test_storage_not_shared_with_a_node_fails_fast(cluster: Cluster, lost_node, tmp_path) -> None:
    # A third node whose view of the storage folder is its own empty disk (a private
    # mount), as on a machine that never mounted the NFS share.
    shared = cluster.root / "shared"
    hidden = (
        "unshare", "-m", "sh", "-c", f'mount -t tmpfs tmpfs {shared} && exec "$0" "$@"'
    )  # fmt: skip
    blind = cluster.start_worker(wrapper=hidden)
    try:
        proc = subprocess.run(
            [SWEEP, *sweep_args(cluster, "notshared")],
            cwd=tmp_path, env=sweep_env(cluster), capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        line = one_line_error(proc, "cluster.storage_path")
        assert "is not shared: 1 of 2 nodes cannot read" in line
        assert blind.node_id[:8] in line
    finally:
        blind.stop()
