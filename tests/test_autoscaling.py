"""A sweep on an autoscaling cluster whose GPU node type starts at zero nodes, for real:
Ray's local fake autoscaler (the ``fake_multinode`` provider, ``RAY_FAKE_CLUSTER=1``) runs
the autoscaler against a config written the way cluster.yaml is, and launches each node
it decides on as a real raylet on this machine. The sweep's start-time check accepts
trials no node up can run, the cluster grows for them, they train there, and it shrinks
back when they are done.

Every process is stopped by pid (those naming this test's temp folder): never Ray's
stop-all command, which would end other people's clusters on this machine.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.tracking import MlflowClient
from ray._private import services

from tests.conftest import run_sweep
from tests.test_cluster import cluster_root, free_port, kill, processes_mentioning

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))
# The ids the fake provider gives the nodes it launches (the head keeps a random one).
LAUNCHED_ID = re.compile(r"f{51}\d{5}")
IDLE_TIMEOUT_MIN = 0.1  # the autoscaler removes a node idle for 6 s


@dataclass
class AutoscalingCluster:
    root: Path
    address: str
    config: Path
    env: dict[str, str]

    def alive_nodes(self) -> int:
        """Alive nodes as `ray status` would count them (asked in a fresh process: the
        auth mode is read when Ray is imported)."""
        code = (
            f"import ray; ray.init(address={self.address!r}, logging_level='ERROR', "
            "log_to_driver=False); print(sum(n['Alive'] for n in ray.nodes()))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        return int(out.stdout.strip().splitlines()[-1])


def autoscaler_config(address: str) -> dict:
    """cluster.yaml's shape: a head that runs no trial, a CPU type that is up, and a GPU
    type with min_workers 0 (fake GPUs: Ray schedules by the count, torch finds no CUDA)."""
    return {
        "cluster_name": "sweep-autoscaling-test",
        "max_workers": 3,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": IDLE_TIMEOUT_MIN,
        "provider": {
            "type": "fake_multinode",
            "gcs_address": address,
            # As Ray's own fake-cluster example: its nodes start as processes here, with
            # nothing to set up over SSH, and their ids stand in for IPs.
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": {
            # The fake provider's name for the head it did not launch.
            "ray.head.default": {"resources": {"CPU": 1}, "node_config": {}, "max_workers": 0},
            "gpu_worker": {
                "resources": {"CPU": 1, "GPU": 1},
                "node_config": {},
                "min_workers": 0,
                "max_workers": 2,
            },
        },
        "head_node_type": "ray.head.default",
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


@pytest.fixture(scope="module")
def autoscaling() -> Iterator[AutoscalingCluster]:
    root, env = cluster_root("swa")
    port = free_port()
    # The launched nodes join the GCS at this machine's address, as the head advertises it.
    address = f"{services.get_node_ip_address()}:{port}"
    config = root / "autoscaler.yaml"
    config.write_text(yaml.safe_dump(autoscaler_config(address)))
    head_env = {**env, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    cluster = AutoscalingCluster(root, address, config, env)
    try:
        out = subprocess.run(
            [RAY, "start", "--head", f"--port={port}", f"--autoscaling-config={config}",
             "--num-cpus=1", f"--temp-dir={root / 'ray'}", "--include-dashboard=false",
             "--object-store-memory=100000000", "--disable-usage-stats"],
            env=head_env, capture_output=True, text=True, timeout=120, start_new_session=True,
        )  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        (root / "shared").mkdir()
        yield cluster
    finally:
        # The head, its autoscaler, and every node it launched name the session folder.
        kill(processes_mentioning(str(root / "ray")), signal.SIGTERM)
        kill(processes_mentioning(f":{port}"))  # the head's Ray Client server names no folder
        shutil.rmtree(root, ignore_errors=True)


def sweep_on(autoscaling: AutoscalingCluster, tmp_path: Path, *args: str) -> Any:
    """`sweep ARGS` on the autoscaling cluster, logging to a SQLite store in ``tmp_path``;
    the driver gets the token path but not RAY_AUTH_MODE (it turns token auth on itself)."""
    env = {
        k: v for k, v in autoscaling.env.items() if k.startswith("RAY_") and k != "RAY_AUTH_MODE"
    }
    return run_sweep(
        tmp_path,
        "cluster=remote",
        f"cluster.address={autoscaling.address}",
        f"cluster.storage_path={autoscaling.root / 'shared'}",
        f"cluster.autoscaler_config={autoscaling.config}",
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        *args,
        **env,
    )


def test_gpu_trials_scale_the_cluster_up_from_zero_and_back_down(
    autoscaling: AutoscalingCluster, tmp_path: Path
) -> None:
    assert autoscaling.alive_nodes() == 1  # the head only: no GPU node is up
    proc = sweep_on(
        autoscaling, tmp_path, "resources.gpu=1", "num_samples=2", "trainer.max_epochs=2",
        "best_model=false",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (
        "No node that is up fits a trial (1 CPU, 1 GPU): the autoscaler adds gpu_worker "
        "nodes for them (at most 2)." in proc.stdout
    ), proc.stdout

    # The trials ran on nodes the autoscaler launched, not on the head.
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("mlp_digits")
    assert experiment is not None
    trials = client.search_runs([experiment.experiment_id], "tags.`sweep.trial_id` != ''")
    assert len(trials) == 2 and {r.info.status for r in trials} == {"FINISHED"}
    for run in trials:
        assert LAUNCHED_ID.fullmatch(run.data.tags["sweep.node_id"]), run.data.tags

    # With nothing left to run, the idle GPU nodes go again.
    deadline = time.monotonic() + 90
    while autoscaling.alive_nodes() > 1:
        assert time.monotonic() < deadline, "the idle GPU nodes were never removed"
        time.sleep(2)


def test_a_trial_no_node_type_can_run_is_one_line(
    autoscaling: AutoscalingCluster, tmp_path: Path
) -> None:
    proc = sweep_on(autoscaling, tmp_path, "resources.gpu=2")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip() == (
        "error: resources.gpu: 2 GPUs per trial, but the largest node, up or launchable, "
        "has 1; set resources.gpu=0 or add a GPU node"
    )
    assert not (tmp_path / "sweeps").exists()
