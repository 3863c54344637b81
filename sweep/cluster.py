"""The Ray cluster a sweep runs on: an embedded one (``cluster=local``) or an existing
cluster joined by address (``cluster=remote``), checked before the first trial."""

from __future__ import annotations

import os
from typing import Any

from sweep.errors import ConfigError
from sweep.settings import Settings


def start_ray(settings: Settings) -> None:
    import ray

    # Trials must keep the driver's working directory: relative paths in user configs.
    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"
    # Ray's newer console output prints a config box and TensorBoard hints even when
    # silent; the legacy reporter honours verbose=0. verbose=2 brings Ray's table back.
    os.environ["RAY_AIR_NEW_OUTPUT"] = "1" if settings.verbose >= 2 else "0"
    cluster = settings.cluster
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": settings.verbose >= 1,
        "logging_level": "WARNING" if settings.verbose >= 1 else "ERROR",
        "runtime_env": {"env_vars": trial_env()},
    }
    if cluster.get("address", "local") == "local":
        kwargs.update(num_cpus=cluster.get("num_cpus"), num_gpus=cluster.get("num_gpus"))
    try:
        ray.init(address=cluster.get("address", "local"), **kwargs)
    except (ConnectionError, RuntimeError) as exc:
        raise ConfigError(
            "cluster.address", f"cannot connect to Ray at {cluster.get('address')!r}: {exc}"
        ) from None
    check_resources(settings, ray.cluster_resources())


def trial_env() -> dict[str, str]:
    """Environment for trial workers: the driver's folder importable (the user's own
    `_target_` modules), and trials kept in the driver's working directory."""
    paths = [os.getcwd(), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"RAY_CHDIR_TO_TRIAL_DIR": "0", "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}


def check_resources(settings: Settings, available: dict[str, float]) -> None:
    cpus, gpus = available.get("CPU", 0.0), available.get("GPU", 0.0)
    if settings.cpus_per_trial > cpus:
        raise ConfigError(
            "resources.cpu",
            f"{settings.cpus_per_trial:g} CPUs per trial, but the cluster has {cpus:g}; "
            f"set resources.cpu<={cpus:g}",
        )
    if settings.gpus_per_trial > gpus:
        raise ConfigError(
            "resources.gpu",
            f"{settings.gpus_per_trial:g} GPUs per trial, but the cluster has {gpus:g}; "
            "set resources.gpu=0 or run on a GPU node",
        )
