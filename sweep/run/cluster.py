"""The Ray cluster a sweep runs on, checked before the first trial.

``cluster=local`` starts an embedded Ray on this machine. ``cluster=remote`` joins a running
cluster (``cluster.address=auto`` on one of its nodes, or ``head_ip:6379`` from anywhere) and
checks, each in a few seconds, what would otherwise hang or fail late: the head answers, it
accepts this machine's auth token, every node can read ``cluster.storage_path``, and one
trial fits on some node.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs
import ray
import ray._private.worker as ray_worker
import yaml
from ray._private import ray_constants, services
from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]
from ray.tune.execution.class_cache import DEFAULT_ENV_VARS as TUNE_TRIAL_ENV
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from sweep.config.settings import LOCAL, Settings
from sweep.errors import ConfigError
from sweep.run.reaper import Reaper

# Seconds to wait for the head's TCP port, then for its GCS to answer a probe.
CONNECT_TIMEOUT_S = 5.0
GCS_PROBE_TIMEOUT_S = 30.0
# Seconds for every node to start a worker and read the storage marker.
STORAGE_CHECK_TIMEOUT_S = 120.0
# How long an embedded Ray keeps a worker with nothing to do (more than one per CPU).
IDLE_WORKER_KEEP_MS = 30_000


def start_ray(settings: Settings) -> Reaper | None:
    """Start an embedded Ray (its processes then share this driver's fate: the returned
    reaper, to close after ``ray.shutdown``), or join the cluster checked in preflight."""
    # Trials must keep the driver's working directory: relative paths in user configs.
    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"
    # Ray's newer console output prints a config box and TensorBoard hints even when
    # silent; the legacy reporter honours verbose=0. verbose=2 brings Ray's table back.
    os.environ["RAY_AIR_NEW_OUTPUT"] = "1" if settings.verbose >= 2 else "0"
    cluster = settings.cluster
    local = cluster.address == LOCAL
    if not local:  # reached and checked before (sweep/preflight.py)
        storage = shared_storage(cluster.storage_path)
    # An embedded Ray's processes inherit this process's environment, so its workers get
    # the trial environment that way, without a job runtime_env (a cluster needs one):
    # ours, and the one Tune gives its trial actors (sweep/run/tuner.py:prestarted_workers).
    given = {**trial_env(), **TUNE_TRIAL_ENV} if local else {}
    before = {key: os.environ.get(key) for key in given}
    os.environ.update(given)
    try:
        ray.init(
            address=cluster.address,
            num_cpus=cluster.num_cpus if local else None,  # None: Ray's default, or the cluster's
            num_gpus=cluster.num_gpus if local else None,
            # Ray Train (multi-worker trials) frees a stopped trial's workers by asking the
            # dashboard's state API; nothing else here needs it.
            include_dashboard=settings.workers_per_trial > 1,
            log_to_driver=settings.verbose >= 1,
            logging_level=logging.WARNING if settings.verbose >= 1 else logging.ERROR,
            runtime_env=None if local else {"env_vars": trial_env()},
            # The workers Ray prestarts wait for the first trials instead of being killed
            # after 1 s idle (Ray's default), which a slow start-up of Tune outlasts.
            _system_config={"idle_worker_killing_time_threshold_ms": IDLE_WORKER_KEEP_MS}
            if local
            else None,
        )
    except (ConnectionError, RuntimeError) as exc:
        raise _bad_address(f"cannot connect to Ray at {cluster.address!r}: {exc}") from None
    finally:  # the driver's own environment stays as it was
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if settings.verbose < 1:
        # The raylet's own paragraphs ("A worker died or was killed ..."), printed by a
        # thread of ray.init's whatever log_to_driver says: the trial callbacks already
        # print one line per failure, with the cause.
        ray_worker.print_to_stdstream = lambda data, ignore_prefix: None
    reaper = Reaper() if local else None
    if reaper:
        reaper.watch()
    try:
        if not local:
            check_storage_shared(storage)
        types = node_types(cluster.autoscaler_config) if not local else []
        launch = check_resources(settings, [n["Resources"] for n in alive_nodes()], types)
        if launch:
            print(launch, flush=True)
    except ConfigError:
        stop_ray()
        raise
    return reaper


def stop_ray() -> None:
    """``ray.shutdown``, a second sooner for an embedded Ray: its autoscaler monitor is
    killed first, as Ray itself does a second later."""
    # Ray stops the raylet and the GCS, then sends the monitor SIGTERM and waits 1 s: the
    # monitor's handler reports its own death to the GCS that is gone, so the wait always
    # runs out and SIGKILL follows. Killing it first ends the same way, without the wait.
    # A joined cluster's monitor is not this process's: the list is empty there.
    node = ray_worker._global_node
    processes: dict[str, list[Any]] = node.all_processes if node else {}
    monitors = processes.get(ray_constants.PROCESS_TYPE_MONITOR, [])
    for info in monitors:
        info.process.kill()  # a Popen: a no-op on a process that already ended
        with contextlib.suppress(subprocess.TimeoutExpired):  # else Ray's own wait follows
            info.process.wait(timeout=1)
    ray.shutdown()


def trial_env() -> dict[str, str]:
    """Environment for trial workers: the driver's folder importable (the user's own
    `_target_` modules), and trials kept in the driver's working directory."""
    paths = [os.getcwd(), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"RAY_CHDIR_TO_TRIAL_DIR": "0", "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}


def _bad_address(message: str) -> ConfigError:
    return ConfigError("cluster.address", message)


# ---- joining a running cluster -----------------------------------------------------------
def reach_head(address: str) -> str:
    """``auto`` or ``host:port`` → a head that answers and accepts our token, as host:port.

    Ray's own ``ray.init`` retries a silent or refusing head for minutes and reports a
    rejected token only as "Failed to connect": both are checked here first, quickly.
    """
    if address.startswith("ray://"):
        raise _bad_address(
            f"{address!r} is a Ray Client address; give the head's GCS address "
            "(head_ip:6379), or run the sweep on the cluster with `ray job submit`",
        )
    try:
        resolved = services.canonicalize_bootstrap_address_or_die(address)
    except (ConnectionError, ValueError) as exc:
        raise _bad_address(
            f"{address!r}: {str(exc).splitlines()[0]} Give head_ip:6379 instead",
        ) from None
    host, _, port = resolved.rpartition(":")
    shown = address if address == resolved else f"{address} ({resolved})"
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as exc:
        raise _bad_address(
            f"no Ray head answers at {shown} ({exc}); start it with "
            "`ray start --head --port=6379` (or `ray up cluster.yaml`) and check the address",
        ) from None
    use_token_auth()
    probe_gcs(resolved, shown)
    return resolved


def use_token_auth() -> None:
    """Send this machine's Ray token when it has one.

    Ray 2.60 sends its token to an explicit address only when ``RAY_AUTH_MODE=token`` is
    set in the environment (``address=auto`` turns it on by itself). An explicit
    ``RAY_AUTH_MODE`` from the user is left alone.
    """
    if "RAY_AUTH_MODE" in os.environ:
        return
    if AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
        os.environ["RAY_AUTH_MODE"] = "token"
        Config.initialize("")  # Ray caches its config: let this process see token mode


# Runs in a child process: the GCS client retries for up to a minute and prints C++
# warnings on stderr; a subprocess bounds the wait and keeps them off the user's screen.
_PROBE = """
import sys
from ray._raylet import InnerGcsClient
from ray.exceptions import AuthenticationError
try:
    InnerGcsClient.standalone(sys.argv[1], None, 5000)
except AuthenticationError as exc:
    print(exc.message)
    sys.exit(3)
except Exception as exc:
    print(exc)
    sys.exit(4)
"""


def probe_gcs(resolved: str, address: str) -> None:
    try:
        probe = subprocess.run(
            [sys.executable, "-c", _PROBE, resolved],
            capture_output=True,
            text=True,
            timeout=GCS_PROBE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise _bad_address(
            f"{address} accepts connections but its Ray GCS did not answer within "
            f"{GCS_PROBE_TIMEOUT_S:g}s; is it a Ray head (port 6379 by default)?",
        ) from None
    reason = (probe.stdout.strip().splitlines() or [""])[-1]
    if probe.returncode == 3:
        raise _bad_address(
            f"the Ray cluster at {address} rejected this machine's auth token ({reason}); "
            "copy the head's ~/.ray/auth_token here or set RAY_AUTH_TOKEN to it",
        )
    if probe.returncode != 0:
        raise _bad_address(
            f"{address} is not a Ray head that answers ({reason or probe.stderr.strip()[-200:]}); "
            "check the address and port (6379 by default)",
        )


# ---- storage every node can reach ---------------------------------------------------------
def shared_storage(storage_path: Any) -> str:
    """The cluster's storage as an absolute path or URI (checked before connecting)."""
    text = str(storage_path or "").strip()
    if not text:
        raise ConfigError(
            "cluster.storage_path",
            "required with cluster=remote; a folder every node mounts (NFS) or a URI "
            "(s3://bucket/sweeps), e.g. cluster.storage_path=/shared/sweeps",
        )
    if "://" not in text and not os.path.isabs(os.path.expanduser(text)):
        raise ConfigError(
            "cluster.storage_path",
            f"{text!r} is relative, so each node would read its own folder; give an absolute "
            "path on a shared filesystem (/shared/sweeps) or a URI (s3://bucket/sweeps)",
        )
    return os.path.expanduser(text)


def check_storage_shared(storage: str) -> None:
    """The driver writes a marker; a task on every alive node must read it back.

    Checkpoints are written by trials on their node and read by the driver and by the
    node a failed trial is retried on: a node-local folder would lose them silently.
    """
    token = uuid.uuid4().hex
    marker = f"{storage.rstrip('/')}/.sweep-check-{token}"
    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(marker)  # what Ray Tune itself uses
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as out:
            out.write(token.encode())
    except OSError as exc:
        raise ConfigError(
            "cluster.storage_path", f"cannot write to {storage}: {exc}; check the path"
        ) from None
    try:
        nodes = alive_nodes()
        read = ray.remote(num_cpus=0, max_retries=0)(read_marker)
        pins = [NodeAffinitySchedulingStrategy(node["NodeID"], soft=False) for node in nodes]
        refs = [read.options(scheduling_strategy=pin).remote(marker) for pin in pins]
        seen = ray.get(refs, timeout=STORAGE_CHECK_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        raise ConfigError(
            "cluster.storage_path",
            f"nodes did not report within {STORAGE_CHECK_TIMEOUT_S:g}s whether they can "
            f"read {storage}; is the cluster healthy (`ray status`)?",
        ) from None
    finally:
        with contextlib.suppress(Exception):  # best effort: a leftover marker is a few bytes
            fs.delete_file(path)
    blind = [node for node, text in zip(nodes, seen, strict=True) if text != token]
    if blind:
        names = ", ".join(f"{n['NodeManagerAddress']} ({n['NodeID'][:8]})" for n in blind)
        raise ConfigError(
            "cluster.storage_path",
            f"{storage} is not shared: {len(blind)} of {len(nodes)} nodes cannot read what "
            f"this driver wrote there ({names}); use a folder every node mounts (NFS) "
            "or a URI such as s3://bucket/sweeps",
        )


def read_marker(uri: str) -> str:
    """Runs as a Ray task on one node: the marker's text, or why it could not be read."""
    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(uri)
        with fs.open_input_stream(path) as stream:
            return bytes(stream.read()).decode()
    except Exception as exc:  # any failure means "this node cannot see it"
        return f"{type(exc).__name__}: {exc}"


# ---- resources -----------------------------------------------------------------------------
def alive_nodes() -> list[dict[str, Any]]:
    return [node for node in ray.nodes() if node.get("Alive")]


@dataclass(frozen=True)
class NodeType:
    """A worker type the autoscaler can launch (``available_node_types`` of its config)."""

    name: str
    resources: dict[str, float]  # {}: the cloud provider fills them in at launch
    max_workers: int


def node_types(path: str | None) -> list[NodeType]:
    """The worker types in the autoscaler's config at ``path`` (``cluster.autoscaler_config``;
    on a head brought up by ``ray up``: ~/ray_bootstrap_config.yaml) that may have a node.
    No such file: none (a cluster started by hand does not autoscale)."""
    file = Path(path).expanduser() if path else None
    if file is None or not file.is_file():
        return []
    try:
        config = yaml.safe_load(file.read_text()) or {}  # JSON is YAML too
        ceiling = int(config.get("max_workers", 0))
        head = config.get("head_node_type")
        types = [
            NodeType(
                str(name),
                {str(k): float(v) for k, v in (spec.get("resources") or {}).items()},
                int(spec.get("max_workers", ceiling)),
            )
            for name, spec in (config.get("available_node_types") or {}).items()
            if name != head
        ]
    except (yaml.YAMLError, AttributeError, TypeError, ValueError) as exc:
        reason = str(exc).splitlines()[0]
        raise ConfigError(
            "cluster.autoscaler_config",
            f"{file}: not a cluster launcher config ({reason}); fix it, or set "
            "cluster.autoscaler_config=null",
        ) from None
    return [t for t in types if t.max_workers > 0]


def check_resources(
    settings: Settings, nodes: list[dict[str, float]], types: Sequence[NodeType] = ()
) -> str | None:
    """A trial runs on one node: it must fit on one that is up (``nodes`` holds each
    node's resources, e.g. ``{"CPU": 8, "GPU": 1}``), not just in the cluster's total, or
    on one of the ``types`` the autoscaler can launch. Returns the line that says a node
    will be launched for it, if that is how it fits."""
    need = {"CPU": settings.cpus_per_trial, "GPU": settings.gpus_per_trial}
    workers = settings.workers_per_trial
    if workers > 1 and not types:  # a worker group needs all of its workers at once
        for key, name in (("CPU", "cpu"), ("GPU", "gpu")):
            total = sum(node.get(key, 0.0) for node in nodes)
            if need[key] and workers * need[key] > total:
                raise ConfigError(
                    "resources.workers",
                    f"{workers} workers per trial × {need[key]:g} {key} each need "
                    f"{workers * need[key]:g} {key}s, but the cluster has {total:g}; set "
                    f"resources.workers<={int(total // need[key])} or lower resources.{name}",
                )
    if any(_fits(node, need) for node in nodes):
        return None
    amount = f"{need['CPU']:g} CPU" + (f", {need['GPU']:g} GPU" if need["GPU"] else "")
    for kind in types:
        if _fits(kind.resources, need):
            return (
                f"No node that is up fits a trial ({amount}): the autoscaler adds "
                f"{kind.name} nodes for them (at most {kind.max_workers})."
            )
    for kind in types:
        if not kind.resources:  # cannot be ruled out: the cloud may give it what is needed
            return (
                f"No node that is up fits a trial ({amount}); the autoscaler may add "
                f"{kind.name} nodes (their resources are known once launched), or trials wait."
            )
    sizes = [*nodes, *(kind.resources for kind in types)]
    cpus = max((n.get("CPU", 0.0) for n in sizes), default=0.0)
    gpus = max((n.get("GPU", 0.0) for n in sizes), default=0.0)
    where = "the cluster has" if len(sizes) <= 1 else "the largest node has"
    if types:
        where = "the largest node, up or launchable, has"
    if settings.cpus_per_trial > cpus:
        raise ConfigError(
            "resources.cpu",
            f"{settings.cpus_per_trial:g} CPUs per trial, but {where} {cpus:g}; "
            f"set resources.cpu<={cpus:g}",
        )
    if settings.gpus_per_trial > gpus:
        raise ConfigError(
            "resources.gpu",
            f"{settings.gpus_per_trial:g} GPUs per trial, but {where} {gpus:g}; "
            "set resources.gpu=0 or add a GPU node",
        )
    raise ConfigError(
        "resources",
        f"{amount} per trial fits no single node (the CPUs and GPUs are on different "
        "nodes); lower resources.cpu, or add a node with both",
    )


def _fits(resources: dict[str, float], need: dict[str, float]) -> bool:
    return all(resources.get(key, 0.0) >= amount for key, amount in need.items() if amount)
