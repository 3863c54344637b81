"""One trial: config → DataModule + LightningModule → a quiet ``Trainer.fit``.

The same :func:`fit` runs under Ray Tune (:func:`train`, reporting every epoch with a
checkpoint) and alone in this process (:func:`run_single`, for debugging a model before
sweeping it). Trials receive plain Python data only, never Hydra objects.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import ray
import torch
from hydra.utils import get_class, instantiate
from ray import tune

from sweep.config.space import Dimension, apply_values, config_values
from sweep.quiet import silence
from sweep.run.outcome import BUDGET_SPENT, DEVICE_KEY, NODE_ID_KEY, TRAINED_WITH
from sweep.run.usage import EpochUsage
from sweep.run.workers import Workers

CHECKPOINT_FILE = "model.ckpt"
# Beside each checkpoint the sweep writes: its SHA-256, so that only the sweep's own files
# are loaded with pickling allowed (Lightning users' hyperparameters hold nn.Modules and
# functools.partial optimizers, which torch's safe loading refuses).
DIGEST_FILE = "model.ckpt.sha256"
VALUES_FILE = "values.json"  # the config values the checkpoint was trained with
# Keys in model/data config groups that describe the group instead of configuring the object.
METADATA_KEYS = ("name",)


class SetupError(RuntimeError):
    """Building the model or the data failed: the config is wrong, and a retry would fail
    the same way. The message starts with the config section (``model: ...``)."""


def build(cfg: Mapping[str, Any]) -> tuple[L.LightningModule, L.LightningDataModule]:
    """Instantiate the DataModule, then the model with the shape arguments it accepts."""
    try:
        datamodule = build_datamodule(cfg["data"])
        datamodule.prepare_data()
        datamodule.setup("fit")
    except Exception as exc:
        raise SetupError(f"data: {one_line(exc)}") from exc
    try:
        model_cfg = _constructor_args(cfg["model"])
        # The DataModule's shape hints that the model's ``__init__`` names and the config
        # didn't set (a ``**kwargs`` catch-all does not count: it usually forwards to a parent).
        params = inspect.signature(get_class(model_cfg["_target_"])).parameters
        shape = getattr(datamodule, "model_kwargs", {})
        extra = {k: v for k, v in shape.items() if k in params and k not in model_cfg}
        model = instantiate(model_cfg, **extra)
    except Exception as exc:
        raise SetupError(f"model: {one_line(exc)}") from exc
    return model, datamodule


def one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def build_datamodule(data_cfg: Mapping[str, Any]) -> L.LightningDataModule:
    return instantiate(_constructor_args(data_cfg))


def _constructor_args(section: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in section.items() if k not in METADATA_KEYS}


def fit(
    cfg: Mapping[str, Any],
    callbacks: list[L.Callback],
    ckpt_path: Path | None = None,
    trusted: bool = False,
    verbose: int = 0,
    distributed: bool = False,
) -> L.Trainer:
    """Train ``cfg``'s model on its data; resumes from ``ckpt_path`` when given, with
    pickled objects allowed in it when ``trusted`` (the sweep wrote it). ``distributed``:
    this process is one worker of a Ray Train worker group (DDP over all of them)."""
    silence(verbose)
    L.seed_everything(int(cfg.get("seed", 0)), workers=True, verbose=False)
    model, datamodule = build(cfg)
    if distributed:
        from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, prepare_trainer

        ddp = {"strategy": RayDDPStrategy(), "plugins": [RayLightningEnvironment()]}
        trainer = prepare_trainer(make_trainer(cfg["trainer"], callbacks, verbose, **ddp))
    else:
        trainer = make_trainer(cfg["trainer"], callbacks, verbose)
    weights_only = False if trusted else None  # None: torch's safe default
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=weights_only)
    return trainer


def make_trainer(
    trainer_cfg: Mapping[str, Any], callbacks: list[L.Callback], verbose: int = 0, **limits: Any
) -> L.Trainer:
    """A quiet Lightning Trainer on one device; ``limits`` (``max_steps``, ...) override."""
    options: dict[str, Any] = {
        "max_epochs": int(trainer_cfg["max_epochs"]),
        "accelerator": trainer_cfg.get("accelerator", "auto"),
        "devices": "auto" if "strategy" in limits else 1,  # DDP: Ray gives each worker its own
        "gradient_clip_val": trainer_cfg.get("gradient_clip_val"),
        "deterministic": bool(trainer_cfg.get("deterministic", False)),
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": verbose >= 2,
        "enable_model_summary": verbose >= 2,
        "num_sanity_val_steps": 0,
        "callbacks": callbacks,
    }
    return L.Trainer(**{**options, **limits})


def epoch_metrics(trainer: L.Trainer) -> dict[str, float]:
    """This epoch's logged metrics (train and validation) plus ``epoch`` (1-based) and
    ``diverged`` (1.0 when a logged loss is NaN or infinite)."""
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    losses = [v for k, v in metrics.items() if "loss" in k]
    metrics["diverged"] = float(any(not math.isfinite(v) for v in losses))
    metrics["epoch"] = float(trainer.current_epoch + 1)
    return metrics


class TuneReporter(L.Callback):
    """Reports every epoch's metrics to Tune with a checkpoint, after validation.

    ASHA may stop the trial inside ``tune.report`` (it exits the process), so nothing
    that must happen at a trial's end lives after ``fit``: the driver handles endings.
    With a time budget, each report says whether it is spent (the driver's stopper acts).
    Each checkpoint holds the config values it was trained with (:data:`VALUES_FILE`).
    """

    def __init__(
        self,
        values: Mapping[str, Any],
        deadline: float | None = None,
        population: bool = False,
    ) -> None:
        self.values = dict(values)
        self.deadline = deadline
        # pbt, pb2: each epoch says which values it trained with, and the optimizer's rate.
        self.population = population
        self.usage: EpochUsage | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.usage = EpochUsage()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        result = self.epoch_result(trainer, pl_module)
        with tempfile.TemporaryDirectory() as folder:
            self.save(trainer, Path(folder))
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(folder))

    def epoch_result(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """The epoch's metrics, what the process used, and where it ran."""
        result: dict[str, Any] = epoch_metrics(trainer)
        if self.usage is not None:
            result.update(self.usage.sample(pl_module.device))
        result[NODE_ID_KEY] = ray.get_runtime_context().get_node_id()
        result[DEVICE_KEY] = str(pl_module.device)
        if self.deadline is not None:
            result[BUDGET_SPENT] = time.time() >= self.deadline
        if self.population:
            numbers = {k: v for k, v in self.values.items() if isinstance(v, (int, float))}
            result.update({f"{TRAINED_WITH}{k}": float(v) for k, v in numbers.items()})
            if trainer.optimizers:
                result["optimizer_lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        return result

    def save(self, trainer: L.Trainer, folder: Path) -> None:
        """The checkpoint, its digest and the values it was trained with, in ``folder``.
        Under DDP every worker calls it and only rank 0 writes (Lightning's rule)."""
        path = folder / CHECKPOINT_FILE
        trainer.save_checkpoint(path)
        if trainer.is_global_zero:
            (folder / DIGEST_FILE).write_text(_sha256(path))
            (folder / VALUES_FILE).write_text(json.dumps(self.values, default=str))


class WorkerReporter(TuneReporter):
    """:class:`TuneReporter` for a worker of a multi-worker trial: every worker reports
    each epoch to Ray Train, rank 0 with the checkpoint (written once); Ray Train hands
    rank 0's report to Tune (ASHA, the driver's callbacks) once per epoch."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import ray.train

        result = self.epoch_result(trainer, pl_module)
        with tempfile.TemporaryDirectory() as folder:
            self.save(trainer, Path(folder))
            checkpoint = ray.train.Checkpoint.from_directory(folder)
            ray.train.report(result, checkpoint=checkpoint if trainer.is_global_zero else None)


class ConfiguredOptimizer(L.Callback):
    """A trial restored from a checkpoint trained with other values (pbt: another trial's,
    perturbed): Lightning restores the optimizer's state *and* its hyperparameters, so the
    old learning rate would silently win over the new one (ray-project/ray#36660). After the
    restore, every param group takes the hyperparameters the module configures now
    (``configure_optimizers`` with the new config); the state (moments, momentum) stays."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        fresh = _optimizers(pl_module.configure_optimizers())
        for restored, new in zip(trainer.optimizers, fresh, strict=False):
            for group, new_group in zip(restored.param_groups, new.param_groups, strict=False):
                group.update({k: v for k, v in new_group.items() if k != "params"})


def _optimizers(configured: Any) -> list[torch.optim.Optimizer]:
    """The optimizers in whatever ``configure_optimizers`` returned (one, a list, a dict
    with ``optimizer``, or (optimizers, schedulers))."""
    if isinstance(configured, torch.optim.Optimizer):
        return [configured]
    if isinstance(configured, dict):
        return _optimizers(configured.get("optimizer"))
    if isinstance(configured, (list, tuple)):
        if len(configured) == 2 and isinstance(configured[0], (list, tuple)):
            return _optimizers(configured[0])  # ([optimizers], [schedulers])
        return [opt for item in configured for opt in _optimizers(item)]
    return []


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def written_by_sweep(folder: Path) -> bool:
    """The checkpoint in ``folder`` is the one this sweep wrote there, unchanged."""
    digest = folder / DIGEST_FILE
    return digest.is_file() and digest.read_text() == _sha256(folder / CHECKPOINT_FILE)


def train(
    config: dict[str, Any],
    base: dict[str, Any],
    dims: tuple[Dimension, ...],
    cpus: float,
    verbose: int = 0,
    deadline: float | None = None,
    population: bool = False,
    workers: Workers | None = None,
    on_start: Callable[[], None] | None = None,
) -> None:
    """Ray Tune function trainable: ``config`` holds this trial's sampled point.
    ``on_start`` runs first, before anything of the trial's (the best model's logger may
    fork this worker there: sweep/report/model.py)."""
    if on_start is not None:
        on_start()
    if workers is not None:
        train_workers(config, base, dims, workers, verbose, deadline)
        return
    checkpoint = tune.get_checkpoint()
    if checkpoint is None and deadline is not None and time.time() >= deadline:
        return  # the sweep's time budget was spent before this trial began: it never trains
    # One trial per CPU by default: more torch threads than CPUs only adds contention.
    torch.set_num_threads(max(1, int(cpus)))
    values = config_values(list(dims), config)
    cfg = apply_values(base, values)
    callbacks: list[L.Callback] = [TuneReporter(values, deadline, population)]
    fit_resuming(cfg, values, callbacks, checkpoint, verbose)


def fit_resuming(
    cfg: Mapping[str, Any],
    values: Mapping[str, Any],
    callbacks: list[L.Callback],
    checkpoint: Any,
    verbose: int,
    distributed: bool = False,
) -> None:
    """Train, from ``checkpoint`` (Tune's or Ray Train's) when there is one. A checkpoint
    trained with other values (pbt copied it) gets the new ones into its optimizer."""
    if checkpoint is None:
        fit(cfg, callbacks, verbose=verbose, distributed=distributed)
        return
    with checkpoint.as_directory() as folder:
        ckpt = Path(folder) / CHECKPOINT_FILE
        trained_with = Path(folder) / VALUES_FILE
        if trained_with.is_file() and json.loads(trained_with.read_text()) != values:
            callbacks.append(ConfiguredOptimizer())
        trusted = written_by_sweep(Path(folder))
        fit(cfg, callbacks, ckpt, trusted=trusted, verbose=verbose, distributed=distributed)


def train_workers(
    config: dict[str, Any],
    base: dict[str, Any],
    dims: tuple[Dimension, ...],
    workers: Workers,
    verbose: int,
    deadline: float | None,
) -> None:
    """The Tune trial of a multi-worker trial: it starts a Ray Train ``TorchTrainer`` of
    ``workers.count`` DDP workers and waits for it; Ray Train forwards rank 0's reports to
    this trial. Its run is named after the trial, so a retried or resumed trial finds its
    checkpoints again (Ray Train reads its run's state back), as does a worker group that
    Ray Train restarts after losing a node."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    values = config_values(list(dims), config)
    trainer = TorchTrainer(
        _worker,
        train_loop_config={
            "cfg": apply_values(base, values),
            "values": values,
            "cpus": workers.cpus,
            "verbose": verbose,
            "deadline": deadline,
        },
        scaling_config=ScalingConfig(
            num_workers=workers.count,
            use_gpu=workers.gpus > 0,
            resources_per_worker={
                "CPU": workers.cpus,
                **({"GPU": workers.gpus} if workers.gpus else {}),
            },
            placement_strategy=workers.placement,
        ),
        run_config=RunConfig(
            name=f"train-{tune.get_context().get_trial_id()}",
            storage_path=workers.storage,
            callbacks=[TuneReportCallback()],  # type: ignore[list-item]  # a Train V2 callback
            failure_config=FailureConfig(max_failures=workers.max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=1,  # plus the latest, which Ray Train keeps to resume from
                checkpoint_score_attribute=workers.metric,
                checkpoint_score_order=workers.mode,
            ),
        ),
    )
    trainer.fit()


def _worker(loop: dict[str, Any]) -> None:
    """One DDP worker: trains, resuming from the trial's last checkpoint if it has one."""
    import ray.train

    torch.set_num_threads(max(1, int(loop["cpus"])))
    cfg, values, verbose = loop["cfg"], loop["values"], loop["verbose"]
    callbacks: list[L.Callback] = [WorkerReporter(values, loop["deadline"])]
    fit_resuming(cfg, values, callbacks, ray.train.get_checkpoint(), verbose, distributed=True)


class PrintReporter(L.Callback):
    """Prints one line of metrics per epoch, for the single-trial mode."""

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = epoch_metrics(trainer)
        self.history.append(metrics)
        shown = "  ".join(
            f"{k}={v:.4g}" for k, v in sorted(metrics.items()) if k not in ("epoch", "diverged")
        )
        print(f"epoch {int(metrics['epoch']):>3}  {shown}", flush=True)


def run_single(cfg: Mapping[str, Any], verbose: int = 0) -> list[dict[str, float]]:
    """Train ``cfg`` once in this process, without Ray; returns the per-epoch metrics."""
    reporter = PrintReporter()
    fit(cfg, [reporter], verbose=verbose)
    return reporter.history
