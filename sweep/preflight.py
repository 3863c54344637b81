"""Every check that runs before anything is started or written, in one place.

Each raises :class:`ConfigError` naming the key, the bad value and the fix (exit 2). A
``_target_`` is checked by reading its module's source, not by importing it: the user's
model imports torch and Lightning (~5 s), which the driver of a sweep never needs, and a
module is imported only when its source cannot tell. A remote Ray cluster's head is
reached here; whether every node sees the shared storage needs a connection, so that is
checked when the driver joins (sweep/run/cluster.py).
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

# What instantiate() itself resolves a _target_ with; hydra.utils.get_object also logs.
from hydra._internal.utils import _locate

from sweep.config.settings import Settings
from sweep.config.space import apply_values
from sweep.errors import ConfigError
from sweep.run import warm_start
from sweep.run.cluster import check_resources, reach_head, shared_storage

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
    if not settings.single_trial:
        check_extra("searcher", settings.searcher.name, "bohb", ("hpbandster", "ConfigSpace"))
        check_extra("scheduler", settings.scheduler.name, "pb2", ("GPy",))
        if settings.workers_per_trial > 1 and importlib.util.find_spec("aiohttp") is None:
            # Ray Train's clean-up of a stopped trial's workers asks Ray's dashboard.
            raise ConfigError(
                "resources.workers",
                f"{settings.workers_per_trial} workers per trial run through Ray Train, which "
                "needs ray[default] (not installed): pip install -e '.[cluster]' in this "
                "project's folder",
            )
    if settings.searcher.warm_start and not settings.single_trial:
        warm = warm_start.load(settings)
        searcher = replace(
            settings.searcher, evaluated=warm.known.evaluated, warm_notice=warm.notice
        )
        settings = replace(settings, searcher=searcher)
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
    if isinstance(target, str) and not binding(target) and (reason := import_error(target)):
        raise ConfigError(
            f"{path}._target_",
            f"cannot import {target!r}: {reason} Install its package, or run sweep "
            "from the folder that holds it",
        )
    for key, value in node.items():
        check_targets(value, f"{path}.{key}")


def import_error(target: str) -> str | None:
    """Why importing ``target`` fails, as Hydra's instantiate would see it; None if it works."""
    try:
        _locate(target)
    except Exception as exc:  # ImportError, AttributeError, or the module's own error
        return str(exc).strip().splitlines()[-1]  # "Are you sure that ...?"
    return None


def binding(target: str) -> ast.stmt | None:
    """The statement of ``target``'s module that defines its name at the top level (a
    class, a function, an import, an assignment), read from the source without importing
    anything; None when the source cannot tell."""
    module, _, name = target.rpartition(".")
    source = module_source(module) if module else None
    try:
        body = ast.parse(source.read_bytes()).body if source else []
    except (OSError, SyntaxError, ValueError):
        return None  # importing it reports the error in the module's own words
    for stmt in body:
        if isinstance(stmt, ast.ClassDef | ast.FunctionDef) and stmt.name == name:
            return stmt
        bound = [a.asname or a.name for a in getattr(stmt, "names", [])]
        bound += [t.id for t in getattr(stmt, "targets", []) if isinstance(t, ast.Name)]
        if isinstance(stmt, ast.Import | ast.ImportFrom | ast.Assign) and name in bound:
            return stmt
    return None


def has_check(target: str, depth: int = 0) -> bool | None:
    """Whether the DataModule class ``target`` has a ``check()``, its own or a base's, told
    from the sources; None when they cannot tell (a base that is not a plain name)."""
    stmt, (module, _, name) = binding(target) if depth < 8 else None, target.rpartition(".")
    if isinstance(stmt, ast.ImportFrom) and stmt.level == 0:  # imported there from elsewhere
        original = next(a.name for a in stmt.names if (a.asname or a.name) == name)
        return has_check(f"{stmt.module}.{original}", depth + 1)
    if not isinstance(stmt, ast.ClassDef):
        return None
    if any(isinstance(item, ast.FunctionDef) and item.name == "check" for item in stmt.body):
        return True
    for base in stmt.bases:
        if ast.unparse(base).endswith("LightningDataModule"):  # Lightning's own: no check()
            continue
        found = has_check(f"{module}.{base.id}", depth + 1) if isinstance(base, ast.Name) else None
        if found is not False:
            return found
    return False


def module_source(module: str) -> Path | None:
    """The ``.py`` file of ``module``, found without importing it or its packages."""
    top, *rest = module.split(".")
    try:
        spec = importlib.util.find_spec(top)  # a top-level name: nothing is imported
        for i in range(len(rest)):
            locations = spec.submodule_search_locations if spec else None
            if not locations:
                return None
            name = ".".join([top, *rest[: i + 1]])
            spec = importlib.machinery.PathFinder.find_spec(name, list(locations))
    except (ImportError, ValueError):
        return None
    origin = spec.origin if spec else None
    return Path(origin) if origin and origin.endswith(".py") else None


def check_extra(key: str, chosen: str, name: str, modules: tuple[str, ...]) -> None:
    """An optional extra of this project (pyproject.toml) that ``key=name`` needs."""
    if chosen != name:
        return
    if missing := [m for m in modules if importlib.util.find_spec(m) is None]:
        raise ConfigError(
            key,
            f"{name} needs {' and '.join(missing)} (not installed): pip install -e "
            f"'.[{name}]' in this project's folder",
        )


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
        import torch  # only to count GPUs: a CPU sweep's driver never imports it

        gpus = torch.cuda.device_count()
    return {"CPU": float(cpus), "GPU": float(gpus or 0)}


def check_data(data: dict[str, Any]) -> None:
    """Let a DataModule with a cheap ``check()`` (file and columns exist) fail fast."""
    if has_check(data["_target_"]) is False:
        return  # told by the source: nothing to import
    if hasattr(_locate(data["_target_"]), "check"):
        from sweep.run.trial import build_datamodule  # Lightning: this DataModule needs it

        try:
            build_datamodule(data).check()  # type: ignore[attr-defined]
        except OSError as exc:
            raise ConfigError("data.path", f"{exc}; point data.path at an existing file") from None
        except (KeyError, ValueError) as exc:
            raise ConfigError(
                "data.target",
                f"{exc.args[0] if exc.args else exc}; fix data.target / data.features",
            ) from None
