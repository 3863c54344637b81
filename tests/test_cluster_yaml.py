"""cluster.yaml is Ray's own cluster-launcher format: validated with the schema Ray ships,
and it sets up what a sweep on the cluster needs."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from tests.conftest import REPO


@pytest.fixture(scope="module")
def launcher() -> dict[str, Any]:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def validate(cfg: dict[str, Any]) -> None:
    # Ray's own check, as `ray up` runs it (offline: no cloud calls).
    validate_config(prepare_config(copy.deepcopy(cfg)))


def test_cluster_yaml_passes_rays_schema(launcher) -> None:
    validate(launcher)


@pytest.mark.parametrize(
    "typo",
    [
        lambda c: c.update(max_worker=c.pop("max_workers")),
        lambda c: c["available_node_types"]["cpu_worker"].update(min_worker=1),
        lambda c: c.update(setup_command=c.pop("setup_commands")),
    ],
    ids=["max_worker", "node_type.min_worker", "setup_command"],
)
def test_a_typo_in_cluster_yaml_is_rejected(launcher, typo) -> None:
    cfg = copy.deepcopy(launcher)
    typo(cfg)
    with pytest.raises(Exception, match="Additional properties are not allowed"):
        validate(cfg)


def test_every_node_installs_the_project_with_token_auth(launcher) -> None:
    setup = "\n".join(launcher["setup_commands"])
    assert "hydra-ray-sweep" in setup and "ray[default]==2.60.0" in setup
    assert "RAY_AUTH_MODE=token" in setup
    assert launcher["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token"}
    workers = {k: v for k, v in launcher["available_node_types"].items() if k != "head"}
    assert workers and all(v["max_workers"] > v["min_workers"] for v in workers.values())


def test_head_runs_a_lean_private_mlflow_and_a_local_dashboard(launcher) -> None:
    start = "\n".join(launcher["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start
    mlflow = next(c for c in launcher["head_start_ray_commands"] if "mlflow server" in c)
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in mlflow
    assert "--workers 1" in mlflow and "sqlite:///" in mlflow
    assert "--host $(hostname -I" in mlflow  # the private address, not 0.0.0.0
    assert "0.0.0.0" not in start
    assert "MLFLOW_TRACKING_URI" in "\n".join(launcher["head_setup_commands"])
