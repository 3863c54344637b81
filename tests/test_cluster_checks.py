"""The cluster checks that are pure functions: a trial must fit on one node (CPUs and
fractional GPUs), and cluster storage must be absolute or a URI."""

from __future__ import annotations

import pytest

from sweep.config.settings import load_settings
from sweep.errors import ConfigError
from sweep.run.cluster import NodeType, check_resources, node_types, shared_storage
from tests.conftest import REPO


def node(cpu: float, gpu: float = 0.0) -> dict[str, float]:
    return {"CPU": cpu, "GPU": gpu}


@pytest.mark.parametrize(
    ("cpu", "gpu", "nodes", "error"),
    [
        (1, 0, [node(1)], None),
        (2, 0, [node(1), node(1)], "resources.cpu: 2 CPUs per trial, but the largest node has 1"),
        (4, 0, [node(2)], "resources.cpu: 4 CPUs per trial, but the cluster has 2"),
        (1, 0.25, [node(8), node(4, gpu=1)], None),
        (
            1,
            0.5,
            [node(8), node(8)],
            "resources.gpu: 0.5 GPUs per trial, but the largest node has 0",
        ),
        (1, 2, [node(8, gpu=1), node(8, gpu=1)], "resources.gpu: 2 GPUs per trial"),
    ],
)
def test_a_trial_must_fit_on_one_node(composed, cpu, gpu, nodes, error) -> None:
    settings = load_settings(composed(f"resources.cpu={cpu}", f"resources.gpu={gpu}"))
    if error is None:
        check_resources(settings, nodes)
    else:
        with pytest.raises(ConfigError, match=error.replace(".", r"\.")):
            check_resources(settings, nodes)


@pytest.mark.parametrize("path", ["/shared/sweeps", "s3://bucket/sweeps", "gs://b/s"])
def test_shared_storage_accepts_absolute_paths_and_uris(path) -> None:
    assert shared_storage(path) == path


@pytest.mark.parametrize(
    ("path", "error"),
    [(None, "required with cluster=remote"), ("", "required"), ("shared", "is relative")],
)
def test_shared_storage_rejects_missing_or_relative(path, error) -> None:
    with pytest.raises(ConfigError, match=error):
        shared_storage(path)


# ---- autoscaling: node types the autoscaler can still launch (cluster.yaml) ------------
SHIPPED = str(REPO / "cluster.yaml")
HEAD = {"CPU": 0.0}  # the shipped head runs no trial
CPU_NODE = {"CPU": 8.0}


def test_the_shipped_cluster_yaml_names_its_launchable_worker_types() -> None:
    assert node_types(SHIPPED) == [
        NodeType("cpu_worker", {"CPU": 8.0}, 8),
        NodeType("gpu_worker", {"CPU": 4.0, "GPU": 1.0}, 2),
    ]
    assert node_types(None) == [] and node_types("/no/such/bootstrap.yaml") == []


@pytest.mark.parametrize("gpu", [1, 0.25])
def test_a_gpu_trial_fits_the_gpu_type_that_has_no_node_up_yet(composed, gpu) -> None:
    settings = load_settings(composed("resources.cpu=2", f"resources.gpu={gpu}"))
    line = check_resources(settings, [HEAD, CPU_NODE], node_types(SHIPPED))
    assert line == (
        f"No node that is up fits a trial (2 CPU, {gpu:g} GPU): the autoscaler adds "
        "gpu_worker nodes for them (at most 2)."
    )
    with pytest.raises(ConfigError, match="GPUs per trial, but the largest node has 0"):
        check_resources(settings, [HEAD, CPU_NODE])  # the same cluster, not autoscaling


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        (
            ("resources.gpu=2",),
            "resources.gpu: 2 GPUs per trial, but the largest node, up or launchable, has 1",
        ),
        (
            ("resources.cpu=16",),
            "resources.cpu: 16 CPUs per trial, but the largest node, up or launchable, has 8",
        ),
        (
            ("resources.cpu=6", "resources.gpu=1"),
            "resources: 6 CPU, 1 GPU per trial fits no single node",
        ),
    ],
)
def test_a_trial_no_node_type_fits_is_still_rejected(composed, overrides, error) -> None:
    settings = load_settings(composed(*overrides))
    with pytest.raises(ConfigError) as caught:
        check_resources(settings, [HEAD, CPU_NODE], node_types(SHIPPED))
    assert str(caught.value).startswith(error), caught.value


def test_a_broken_autoscaler_config_is_one_line(tmp_path) -> None:
    broken = tmp_path / "bootstrap.yaml"
    broken.write_text("available_node_types:\n  gpu: {max_workers: many}\n")
    with pytest.raises(ConfigError, match="not a cluster launcher config"):
        node_types(str(broken))
