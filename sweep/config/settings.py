"""A typed view of the composed config, validated before anything is started or written:
every mistake found raises :class:`ConfigError` naming the key, the bad value and the fix."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from sweep.config.space import Dimension, fixed_points, parse_space
from sweep.errors import ConfigError

LOCAL = "local"  # cluster.address of an embedded Ray
SEARCHERS = ("random", "quasi_random", "tpe", "bohb")
BOHB_HYPERBAND = "bohb_hyperband"  # the scheduler searcher=bohb brings in place of ASHA
POPULATION = ("pbt", "pb2")  # schedulers that copy and perturb trials instead of stopping them
NAME = re.compile(r"[\w.-]+")
_ABSENT = object()


@dataclass(frozen=True)
class Scheduler:
    """``conf/scheduler/``: ASHA (stops poor trials at rungs) or FIFO (no early stopping)."""

    name: str
    grace_period: int = 1  # epochs every trial gets before ASHA may stop it
    reduction_factor: float = 3.0  # η: ASHA keeps the best 1/η at each rung
    # An extended sweep's earlier trials, each as its (epoch, metric) reports: ASHA's rungs
    # start from their values, so a new trial is judged against the whole sweep.
    earlier: tuple[tuple[tuple[int, float], ...], ...] = ()
    # pbt (conf/scheduler/pbt.yaml): exploit/explore every interval epochs.
    perturbation_interval: int = 2
    quantile_fraction: float = 0.25
    resample_probability: float = 0.25
    synch: bool = True


@dataclass(frozen=True)
class Searcher:
    """``conf/searcher/``: how points are proposed."""

    name: str
    points: list[Any] | None = None  # configs tried first, nested like the search space
    n_startup_trials: int = 8  # tpe: random trials before its model kicks in
    warm_start: str | None = None  # tpe: an earlier sweep's folder or MLflow parent run id
    # Filled in by preflight from warm_start (sweep/run/warm_start.py): its trials as
    # (point as the searcher sees it, best metric), and the line that says what was kept.
    evaluated: tuple[tuple[dict[str, Any], float], ...] = ()
    warm_notice: str = ""
    drawn: int = 0  # an extended sweep: trials its earlier parts drew (they are not redrawn)


@dataclass(frozen=True)
class Cluster:
    """``conf/cluster/``: an embedded Ray (``address: local``) or a running cluster."""

    address: str = LOCAL
    num_cpus: int | None = None  # local: CPUs Ray may use (None: all)
    num_gpus: int | None = None
    storage_path: str | None = None  # where trial checkpoints go (shared on a cluster)
    # remote: the cluster launcher config the autoscaler runs with (node types it can add)
    autoscaler_config: str | None = None

    @property
    def is_local(self) -> bool:
        return self.address == LOCAL


@dataclass(frozen=True)
class Settings:
    """The sweep's own knobs (the model/data/trainer sections go to trials as they are)."""

    name: str
    metric: str  # the first objective: ASHA, checkpoints, the progress line and "best" use it
    mode: str
    num_samples: int
    seed: int
    max_concurrent: int | None
    max_failures: int
    cpus_per_trial: float
    gpus_per_trial: float
    max_epochs: int
    scheduler: Scheduler
    searcher: Searcher
    tracking_uri: str
    cluster: Cluster
    output_dir: Path
    resume: bool | str
    single_trial: bool
    verbose: int
    dims: tuple[Dimension, ...]
    refine_rounds: int = 0  # coarse-to-fine rounds after the first (sweep/practice/refine.py)
    probe: str | None = None  # "batch_size": measure throughput instead of sweeping
    best_model: bool = True  # log the best trial's model to the parent run (report/model.py)
    register_model: str | None = None  # ... and register it in the Model Registry as this
    trial_offset: int = 0  # an extension's trials are numbered after the earlier parts' trials
    time_budget: float | None = None  # seconds: no trial starts after that; running ones end
    # metric=[a,b] mode=[max,min]: every objective as (metric, mode), the first one first.
    objectives: tuple[tuple[str, str], ...] = ()
    # resources.workers: DDP workers per trial (each with cpus_/gpus_per_trial), placed so.
    workers_per_trial: int = 1
    worker_placement: str = "PACK"

    @property
    def metrics(self) -> tuple[str, ...]:
        """Every metric the trials must report: the objectives, or the one metric."""
        return tuple(m for m, _ in self.objectives) or (self.metric,)

    @property
    def several_objectives(self) -> bool:
        """A Pareto front is sought rather than one best value."""
        return len(self.objectives) > 1

    @property
    def staged(self) -> bool:
        """Several stages (refinement rounds, scientific values) rather than one."""
        return bool(self.refine_rounds) or any(d.role == "scientific" for d in self.dims)


def load_settings(cfg: DictConfig) -> Settings:
    """Validate ``cfg`` and return its typed view; raises ConfigError on the first mistake."""
    _default_names(cfg)
    _check_required(cfg)
    raw = _plain(cfg)
    objectives = _check_objectives(raw["metric"], raw["mode"])
    metric, mode = objectives[0]
    num_samples = _integer(raw, "num_samples", minimum=1)
    max_epochs = _integer(raw["trainer"], "max_epochs", minimum=1, prefix="trainer.")
    max_failures = _integer(raw, "max_failures", minimum=0)
    cpus = _number(raw["resources"], "cpu", prefix="resources.")
    gpus = _number(raw["resources"], "gpu", prefix="resources.")
    if cpus <= 0:
        raise ConfigError("resources.cpu", f"{cpus} must be positive, e.g. resources.cpu=1")
    if gpus < 0:
        raise ConfigError("resources.gpu", f"{gpus} must be 0 or more, e.g. resources.gpu=0.5")
    if gpus > 1 and gpus != int(gpus):
        raise ConfigError("resources.gpu", f"{gpus}: above 1 a trial needs whole GPUs")
    workers, placement = _check_workers(raw["resources"])
    max_concurrent = raw.get("max_concurrent")
    if max_concurrent is not None:
        max_concurrent = _integer(raw, "max_concurrent", minimum=1)
    dims = tuple(parse_space(raw.get("search_space")))
    _check_targets(cfg, dims)
    scheduler = _check_scheduler(raw["scheduler"], max_epochs)
    searcher = _check_searcher(raw["searcher"], dims)
    if scheduler.name in POPULATION and searcher.name != "random":
        raise ConfigError(
            "searcher",
            f"{searcher.name}: {scheduler.name} draws its population at random and then "
            f"perturbs it; use searcher=random with scheduler={scheduler.name}",
        )
    if scheduler.name in POPULATION and workers > 1:
        raise ConfigError(
            "scheduler",
            f"{scheduler.name} copies checkpoints between trials, which multi-worker trials "
            "do not take; use scheduler=asha with resources.workers>1",
        )
    if scheduler.name in POPULATION and not any(d.is_continuous and not d.when for d in dims):
        raise ConfigError(
            "scheduler",
            f"{scheduler.name} perturbs the continuous dimensions of the space (lr, dropout, "
            "...) and this space has none; add one, e.g. search_space.model.lr",
        )
    conditional = [d.key for d in dims if d.when]
    if conditional and searcher.name in ("tpe", "bohb"):
        raise ConfigError(
            f"search_space.{conditional[0]}.when",
            f"{searcher.name} samples every key in every trial and would learn from values a "
            "trial never used; conditional dimensions need searcher=random or quasi_random",
        )
    if len(objectives) > 1:
        _check_several_objectives(raw, dims, scheduler, searcher)
    if searcher.name == "bohb":  # BOHB's model learns from the budgets its HyperBand sets
        if scheduler.name == "fifo":
            raise ConfigError(
                "scheduler", "fifo: searcher=bohb brings its own HyperBand scheduler; drop it"
            )
        scheduler = Scheduler(BOHB_HYPERBAND, reduction_factor=scheduler.reduction_factor)
    return Settings(
        name=_check_name(raw["name"]),
        metric=metric,
        mode=mode,
        num_samples=num_samples,
        seed=_integer(raw, "seed"),
        max_concurrent=max_concurrent,
        max_failures=max_failures,
        cpus_per_trial=cpus,
        gpus_per_trial=gpus,
        max_epochs=max_epochs,
        scheduler=scheduler,
        searcher=searcher,
        tracking_uri=_check_tracking_uri(str(raw["tracking"]["uri"])),
        cluster=_cluster(raw["cluster"]),
        output_dir=Path(raw["output_dir"]).expanduser().absolute(),
        resume=raw.get("resume", False),
        single_trial=bool(raw.get("single_trial", False)),
        verbose=int(raw.get("verbose", 0)),
        dims=dims,
        refine_rounds=_integer(raw, "refine_rounds", minimum=0) if "refine_rounds" in raw else 0,
        probe=_check_probe(raw.get("probe")),
        **_check_best_model(raw.get("best_model", True), raw.get("register_model")),
        time_budget=_check_time_budget(raw.get("time_budget")),
        objectives=objectives if len(objectives) > 1 else (),
        workers_per_trial=workers,
        worker_placement=placement,
    )


def _check_workers(resources: dict[str, Any]) -> tuple[int, str]:
    """``resources.workers`` and ``resources.placement``."""
    workers = (
        _integer(resources, "workers", minimum=1, prefix="resources.")
        if "workers" in resources
        else 1
    )
    placement = str(resources.get("placement", "PACK")).upper()
    if placement not in ("PACK", "SPREAD"):
        raise ConfigError(
            "resources.placement",
            f"{resources.get('placement')!r} is not PACK or SPREAD; PACK keeps a trial's "
            "workers on few nodes, SPREAD puts them on different nodes",
        )
    return workers, placement


def _check_objectives(metric: Any, mode: Any) -> tuple[tuple[str, str], ...]:
    """``metric``/``mode``: one name and direction, or equal-length lists of them."""
    metrics = metric if isinstance(metric, list) else [metric]
    modes = mode if isinstance(mode, list) else [mode]
    for name in metrics:
        if not isinstance(name, str) or not name:
            raise ConfigError("metric", f"{name!r} is not a metric name; e.g. metric=val_acc")
    if not metrics:
        raise ConfigError("metric", "[] names no metric; e.g. metric=val_acc")
    for direction in modes:
        if direction not in ("min", "max"):
            raise ConfigError("mode", f"{direction!r} is not min or max; set mode=max or mode=min")
    if len(set(metrics)) < len(metrics):
        raise ConfigError("metric", f"{metrics} names a metric twice; list each objective once")
    if len(modes) != len(metrics):
        example = ",".join(["max"] * len(metrics))
        raise ConfigError(
            "mode",
            f"{mode!r} gives {len(modes)} direction(s) for {len(metrics)} metric(s); give one "
            f"per metric, in the same order, e.g. mode=[{example}]",
        )
    return tuple(zip(metrics, modes, strict=True))


def _check_several_objectives(
    raw: dict[str, Any], dims: tuple[Dimension, ...], scheduler: Scheduler, searcher: Searcher
) -> None:
    """What cannot rank trials by a Pareto front: each names the key that conflicts."""
    why = "ranks trials by one metric"
    if raw.get("refine_rounds"):
        raise ConfigError(
            "refine_rounds", f"refinement {why}; use refine_rounds=0 with metric=[...]"
        )
    scientific = [d.key for d in dims if d.role == "scientific"]
    if scientific:
        raise ConfigError(
            f"search_space.{scientific[0]}.role",
            f"a scientific comparison {why}; compare on one metric, or drop the role",
        )
    if scheduler.name in POPULATION:
        raise ConfigError(
            "scheduler", f"{scheduler.name} copies trials by one metric; use scheduler=asha or fifo"
        )
    if searcher.name == "bohb":
        raise ConfigError(
            "searcher", "bohb models one metric; use searcher=tpe (multi-objective), or random"
        )
    if searcher.warm_start:
        raise ConfigError(
            "searcher.warm_start",
            "a warm start gives tpe one value per earlier trial; drop it with metric=[...]",
        )


def _default_names(cfg: DictConfig) -> None:
    """``name: ${model.name}_${data.name}`` with model or data configs written elsewhere,
    which have no ``name:``: the class's name stands in (DigitsLitModule → digits)."""
    for section in ("model", "data"):
        node = cfg.get(section)
        if isinstance(node, DictConfig) and "name" not in node:
            target = str(node.get("_target_") or section).rsplit(".", 1)[-1]
            name = re.sub(r"(Lit)?(Data)?Module$", "", target).lower() or section
            with open_dict(node):
                node.name = name


def _check_name(name: Any) -> str:
    """The name becomes a folder under output_dir and an MLflow experiment: one word."""
    text = str(name)
    if not NAME.fullmatch(text) or text in (".", ".."):
        raise ConfigError(
            "name",
            f"{text!r} is not a folder name inside output_dir; use letters, digits, '.', "
            "'_' and '-', e.g. name=my_sweep",
        )
    return text


def _plain(cfg: DictConfig) -> dict[str, Any]:
    """Resolve the sweep's own sections; a missing required value becomes a ConfigError."""
    out: dict[str, Any] = {}
    for key in cfg:
        try:
            value = cfg[key]
            if isinstance(value, (DictConfig, ListConfig)):
                value = OmegaConf.to_container(value, resolve=True)
            out[str(key)] = value
        except Exception as exc:  # omegaconf's MissingMandatoryValue, InterpolationResolutionError
            full_key = getattr(exc, "full_key", None)
            reason = (
                f"{full_key} is required (???); set it on the command line, e.g. {full_key}=..."
                if type(exc).__name__ == "MissingMandatoryValue"
                else str(exc).splitlines()[0]
            )
            raise ConfigError(str(key), reason) from None
    return out


def _check_required(cfg: DictConfig) -> None:
    """Values left ``???`` by a config group (``data=tabular`` needs a path)."""
    key = min((k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra.")), default=None)
    if key is not None:
        raise ConfigError(key, f"is required (???) and not set; add {key}=<value> to the command")


def _integer(
    section: dict[str, Any], key: str, minimum: int | None = None, prefix: str = ""
) -> int:
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(
            prefix + key, f"{value!r} is not a whole number; e.g. {prefix}{key}={minimum or 1}"
        )
    if minimum is not None and value < minimum:
        raise ConfigError(prefix + key, f"{value} is below {minimum}; set {prefix}{key}>={minimum}")
    return value


def _number(section: dict[str, Any], key: str, prefix: str = "") -> float:
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(prefix + key, f"{value!r} is not a number; e.g. {prefix}{key}=1")
    return float(value)


def _check_targets(cfg: DictConfig, dims: tuple[Dimension, ...]) -> None:
    """Each dimension must set a key that exists, so a typo cannot tune nothing silently."""
    for dim in dims:
        current = OmegaConf.select(cfg, dim.key, default=_ABSENT, throw_on_missing=False)
        if dim.key.split(".")[0] == "search_space" or current is _ABSENT:
            raise ConfigError(
                f"search_space.{dim.key}",
                f"tunes {dim.key}, which is not a key of the config; fix the name, or add the "
                f"key first with +{dim.key}=<default>",
            )
        kind = _kind(current)
        for value in dim.values:  # a choice replaces the value: a str for an int is a typo
            if kind and value is not None and _kind(value) != kind:
                raise ConfigError(
                    f"search_space.{dim.key}.values",
                    f"{value!r} is a {_kind(value)}, but {dim.key} is a {kind} ({current!r}); "
                    f"list {kind}s only",
                )


def _kind(value: Any) -> str | None:
    """What a config value is, as far as a choice must match it (None: anything goes)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "string" if isinstance(value, str) else None


def _cluster(section: dict[str, Any]) -> Cluster:
    known = {f.name for f in fields(Cluster)}
    return Cluster(**{k: v for k, v in section.items() if k in known and v is not None})


def _check_scheduler(section: dict[str, Any], max_epochs: int) -> Scheduler:
    name = section.get("name")
    if name not in ("asha", "fifo", *POPULATION):
        raise ConfigError(
            "scheduler", f"unknown scheduler {name!r}; use scheduler=asha, fifo, pbt or pb2"
        )
    if name in POPULATION:
        return _check_pbt(section, max_epochs)
    if name != "asha":
        return Scheduler(str(name))
    grace = _integer(section, "grace_period", minimum=1, prefix="scheduler.")
    if grace > max_epochs:
        raise ConfigError(
            "scheduler.grace_period",
            f"{grace} exceeds trainer.max_epochs ({max_epochs}); lower it or raise max_epochs",
        )
    factor = _number(section, "reduction_factor", prefix="scheduler.")
    if factor <= 1:
        raise ConfigError("scheduler.reduction_factor", f"{factor} must be above 1, e.g. 3")
    return Scheduler(str(name), grace, factor)


def _check_pbt(section: dict[str, Any], max_epochs: int) -> Scheduler:
    interval = _integer(section, "perturbation_interval", minimum=1, prefix="scheduler.")
    if interval >= max_epochs:
        raise ConfigError(
            "scheduler.perturbation_interval",
            f"{interval} leaves no perturbation before trainer.max_epochs ({max_epochs}); lower it",
        )
    fraction = _number(section, "quantile_fraction", prefix="scheduler.")
    if not 0 < fraction <= 0.5:
        raise ConfigError("scheduler.quantile_fraction", f"{fraction} must be in (0, 0.5]")
    resample = _number(
        {"resample_probability": 0.25, **section}, "resample_probability", prefix="scheduler."
    )
    if not 0 <= resample <= 1:
        raise ConfigError("scheduler.resample_probability", f"{resample} must be in [0, 1]")
    return Scheduler(
        str(section["name"]),
        perturbation_interval=interval,
        quantile_fraction=fraction,
        resample_probability=resample,
        synch=bool(section.get("synch", True)),
    )


def _check_searcher(section: dict[str, Any], dims: tuple[Dimension, ...]) -> Searcher:
    name = section.get("name")
    if name not in SEARCHERS:
        raise ConfigError(
            "searcher", f"unknown searcher {name!r}; use one of {', '.join(SEARCHERS)}"
        )
    # A scientific grid runs as one sub-sweep per value (sweep/stages.py), not a Tune grid.
    grids = [d.key for d in dims if d.type == "grid" and d.role != "scientific"]
    if grids and name != "random":
        raise ConfigError(
            f"search_space.{grids[0]}",
            f"grid dimensions run every value and only work with searcher=random, not {name}; "
            f"use type: choice, or searcher=random",
        )
    points = section.get("points")
    fixed_points(list(dims), points)  # validated here, before anything starts
    warm = section.get("warm_start") or None
    if warm is not None and not isinstance(warm, str):
        raise ConfigError("searcher.warm_start", f"{warm!r} is not a sweep folder or run id")
    if "n_startup_trials" not in section:
        return Searcher(str(name), points, warm_start=warm)
    startup = _integer(section, "n_startup_trials", minimum=0, prefix="searcher.")
    return Searcher(str(name), points, startup, warm_start=warm)


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


def _check_time_budget(budget: Any) -> float | None:
    """``2h``, ``30m``, ``90s``, ``1h30m`` → seconds."""
    if budget in (None, ""):
        return None
    match = _DURATION.fullmatch(str(budget).strip().lower())
    if match is None or not any(match.groups()):
        raise ConfigError(
            "time_budget",
            f"{budget!r} is not a duration; write hours, minutes or seconds, e.g. "
            "time_budget=2h, 30m, 90s or 1h30m",
        )
    hours, minutes, seconds = (float(g or 0) for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise ConfigError("time_budget", f"{budget!r} leaves no time; e.g. time_budget=30m")
    return total


def _check_best_model(log: Any, register_as: Any) -> dict[str, Any]:
    if not isinstance(log, bool):
        raise ConfigError("best_model", f"{log!r} is not true or false; e.g. best_model=false")
    if register_as in (None, ""):
        return {"best_model": log, "register_model": None}
    if not isinstance(register_as, str) or not re.fullmatch(r"[A-Za-z0-9][\w.-]*", register_as):
        raise ConfigError(
            "register_model",
            f"{register_as!r} is not a model name; use letters, digits, '_', '.', '-'"
            ", e.g. register_model=digits_mlp",
        )
    if not log:
        raise ConfigError("register_model", "needs best_model=true: only a logged model registers")
    return {"best_model": log, "register_model": register_as}


def _check_probe(probe: Any) -> str | None:
    if probe in (None, False, "", "none"):
        return None
    if probe != "batch_size":
        raise ConfigError("probe", f"unknown probe {probe!r}; use probe=batch_size")
    return str(probe)


def _check_tracking_uri(uri: str) -> str:
    scheme = uri.split(":", 1)[0] if ":" in uri else ""
    if scheme in ("", "file"):
        raise ConfigError(
            "tracking.uri",
            f"{uri!r}: MLflow's file store is deprecated; use sqlite:////abs/path/mlflow.db "
            "or http://host:5000",
        )
    if scheme not in ("sqlite", "http", "https", "postgresql", "mysql", "databricks"):
        raise ConfigError("tracking.uri", f"{uri!r}: unsupported scheme {scheme!r}")
    if scheme == "sqlite":
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_absolute():  # the driver's cwd, not whichever folder resolves it later
            uri = f"sqlite:///{path.absolute()}"
    return uri
