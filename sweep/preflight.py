"""Every check that runs before anything is started or written, in one place.

Each raises :class:`ConfigError` naming the key, the bad value and the fix (exit 2). The
cheap ones run first: ``check_data`` imports torch and the user's DataModule. A remote
Ray cluster's head is reached here; whether every node sees the shared storage needs a
connection, so that is checked when the driver joins (sweep/run/cluster.py).
"""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

# What instantiate() itself resolves a _target_ with; hydra.utils.get_object also logs.
from hydra._internal.utils import _locate

from sweep.config.settings import Settings
from sweep.config.space import apply_values
from sweep.errors import ConfigError
from sweep.run.cluster import check_resources, reach_head, shared_storage
from sweep.run.trial import build_datamodule

# Seconds to wait for a tracking server's /health before calling it unreachable.
TRACKING_TIMEOUT_S = 5.0


def check(settings: Settings, base: dict[str, Any]) -> Settings:
    """Raise the first mistake found; returns the settings with a remote cluster's head
    address resolved (``auto`` → host:port)."""
    if not settings.single_trial:
        check_writable(settings.output_dir)
        probe_tracking(settings.tracking_uri)
        if settings.cluster.is_local:
            check_resources(settings, [local_resources(settings)])  # before Ray starts
        else:
            shared_storage(settings.cluster.storage_path)  # no connection needed: first
            head = reach_head(settings.cluster.address)
            settings = replace(settings, cluster=replace(settings.cluster, address=head))
    cfg = apply_values(base, {})  # resolved as a whole: `seed: ${seed}` points outside
    for section in ("data", "model"):
        if not (cfg.get(section) or {}).get("_target_"):
            raise ConfigError(f"{section}._target_", "missing; name your Lightning class")
        check_targets(cfg[section], section)
    check_data(cfg["data"])
    return settings


def check_targets(node: Any, path: str) -> None:
    """Every ``_target_`` (nested ones too: a network, a ``_partial_`` optimizer) imports:
    a typo found here costs nothing; found in the trials, it fails every one of them."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            check_targets(item, f"{path}[{i}]")
    if not isinstance(node, dict):
        return
    target = node.get("_target_")
    if isinstance(target, str):
        try:
            _locate(target)
        except Exception as exc:  # ImportError, AttributeError, or the module's own error
            reason = str(exc).strip().splitlines()[-1]  # "Are you sure that ...?"
            raise ConfigError(
                f"{path}._target_",
                f"cannot import {target!r}: {reason} Install its package, or run sweep "
                "from the folder that holds it",
            ) from None
    for key, value in node.items():
        check_targets(value, f"{path}.{key}")


def check_writable(output_dir: Path) -> None:
    """The output folder (or the nearest folder that exists above it) must be writable,
    checked before anything starts so a sweep cannot fail after its first trials."""
    existing = output_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            "output_dir", f"{output_dir}: {existing} is a file, not a folder; choose another path"
        )
    try:  # os.access says yes to root even where writing fails (read-only mounts, /proc)
        os.rmdir(tempfile.mkdtemp(prefix=".sweep-check-", dir=existing))
    except OSError as exc:
        raise ConfigError(
            "output_dir",
            f"{output_dir}: cannot write in {existing} ({exc.strerror}); choose a folder you "
            "can write to, e.g. output_dir=$HOME/sweeps",
        ) from None


def probe_tracking(uri: str) -> None:
    """Fail in seconds, before anything starts, when MLflow cannot be reached: MLflow's
    own client retries an unreachable server for minutes."""
    if uri.startswith("sqlite:"):
        db = Path(uri.removeprefix("sqlite:///"))
        if db.exists() and not db.is_file():
            raise ConfigError("tracking.uri", f"{uri!r}: {db} is not a file; name a .db file")
        if not db.parent.is_dir():
            raise ConfigError(
                "tracking.uri", f"{uri!r}: folder {db.parent} does not exist; create it first"
            )
        if not os.access(db if db.exists() else db.parent, os.W_OK):
            raise ConfigError("tracking.uri", f"{uri!r}: {db} is not writable")
        return
    if not uri.startswith(("http://", "https://")):
        return  # databases and hosted stores: their own client reports errors quickly
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=TRACKING_TIMEOUT_S) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfigError(
            "tracking.uri",
            f"{uri!r} is unreachable ({reason}); start the server "
            "(mlflow server --host 127.0.0.1 --port 5000) or fix the address",
        ) from None
    if status in (401, 403):
        raise ConfigError(
            "tracking.uri",
            f"{uri!r} refused us (HTTP {status}); set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) in the environment",
        )
    if status != 200:
        raise ConfigError(
            "tracking.uri",
            f"{uri!r} is not an MLflow tracking server (GET /health answered HTTP {status}); "
            "check the host and port",
        )


def local_resources(settings: Settings) -> dict[str, float]:
    """What an embedded Ray will have, known without starting it."""
    cpus = settings.cluster.num_cpus or os.cpu_count() or 1
    gpus = settings.cluster.num_gpus
    if gpus is None and settings.gpus_per_trial > 0:
        gpus = torch.cuda.device_count()
    return {"CPU": float(cpus), "GPU": float(gpus or 0)}


def check_data(data: dict[str, Any]) -> None:
    """Let a DataModule with a cheap ``check()`` (file and columns exist) fail fast."""
    if hasattr(_locate(data["_target_"]), "check"):
        try:
            build_datamodule(data).check()  # type: ignore[attr-defined]
        except OSError as exc:
            raise ConfigError("data.path", f"{exc}; point data.path at an existing file") from None
        except (KeyError, ValueError) as exc:
            raise ConfigError(
                "data.target",
                f"{exc.args[0] if exc.args else exc}; fix data.target / data.features",
            ) from None
