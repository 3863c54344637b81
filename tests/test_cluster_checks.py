"""The cluster checks that are pure functions: a trial must fit on one node (CPUs and
fractional GPUs), and cluster storage must be absolute or a URI."""

from __future__ import annotations

import pytest

from sweep.config.settings import load_settings
from sweep.errors import ConfigError
from sweep.run.cluster import check_resources, shared_storage


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
