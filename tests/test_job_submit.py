"""The README's `ray job submit` command, for real: a head with its dashboard (the job API)
on 127.0.0.1 and token auth, the MLflow tracking server the head's environment names
(as cluster.yaml sets it up), and the README's command submitted, followed to its end,
with its runs checked in MLflow. Needs the extra ``[cluster]`` (``ray[default]``: without
it the dashboard has no web port and there is no job API).

The README's placeholders become this machine's: the dashboard's port for 8265, a local
folder every node reads for the bucket, and fewer trials.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO
from tests.test_cluster import Cluster, cluster_root, free_port

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))
README_JOB = re.compile(r"RAY_AUTH_MODE=token RAY_ADDRESS=.*?ray job submit -- .*$", re.M)


def readme_job_command() -> str:
    """The README's job command, its `\\`-continued lines joined."""
    text = re.sub(r"\\[ \t]*\n\s*", "", (REPO / "README.md").read_text())
    commands = README_JOB.findall(text)
    assert len(commands) == 1, commands
    return commands[0]


@pytest.fixture(scope="module")
def head() -> Iterator[tuple[Cluster, int]]:
    """A head node with the dashboard on 127.0.0.1, and an MLflow server; the head's
    environment has MLFLOW_TRACKING_URI (jobs inherit it) and this venv's commands."""
    cluster = Cluster(*cluster_root("swj"))
    root, env = cluster.root, cluster.env
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    try:
        cluster.start_mlflow()
        cluster.env["MLFLOW_TRACKING_URI"] = cluster.tracking_uri
        cluster.port, dashboard = free_port(), free_port()
        cluster.start_node(
            "--head",
            f"--port={cluster.port}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            cwd=root,  # where jobs start: the sweep's output folder goes under it
        )
        (root / "shared").mkdir()
        yield cluster, dashboard
    finally:
        cluster.teardown()


def test_the_readme_job_command_runs_a_sweep_on_the_cluster(head: tuple[Cluster, int]) -> None:
    cluster, dashboard = head
    command = readme_job_command()
    assert "ray job submit -- sweep cluster=remote" in command
    assert "cluster.storage_path=s3://YOUR-BUCKET/sweeps tracking=server" in command
    local = (
        command.replace("http://127.0.0.1:8265", f"http://127.0.0.1:{dashboard}")
        .replace("s3://YOUR-BUCKET/sweeps", str(cluster.root / "shared"))
        .replace("num_samples=64", "num_samples=2 trainer.max_epochs=2 best_model=false")
    )
    env = {k: v for k, v in cluster.env.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    # `ray job submit` waits for the job and streams its output; its exit code is the job's.
    proc = subprocess.run(
        ["bash", "-c", local], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"Job 'raysubmit_\w+' succeeded", proc.stdout + proc.stderr), proc.stdout
    assert "Sweep mlp_digits: 2 trials" in proc.stdout, proc.stdout  # the sweep's summary

    client = MlflowClient(cluster.tracking_uri)
    experiment = client.get_experiment_by_name("mlp_digits")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "sweep.trial_id" not in r.data.tags]
    trials = [r for r in runs if "sweep.trial_id" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(trials) == 2 and {r.info.status for r in trials} == {"FINISHED"}
    assert parents[0].data.tags["mlflow.source.name"].startswith("sweep cluster=remote")
    # Checkpoints went to the shared folder, the results to the job's folder on the head.
    assert list((cluster.root / "shared" / "mlp_digits").glob("*/tune"))
    assert list((cluster.root / "sweeps" / "mlp_digits").glob("*/results.csv"))
