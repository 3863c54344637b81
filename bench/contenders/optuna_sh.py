"""Optuna doing the same search: the fixed points enqueued, a successive-halving pruner with
the same rungs as ASHA, two worker processes (one per CPU) sharing a journal file."""

from __future__ import annotations

import multiprocessing
import sys
from typing import Any

import optuna

N_WORKERS = 2


def study(spec: dict[str, Any], journal: str) -> optuna.Study:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(journal))
    return optuna.create_study(
        study_name="bench",
        storage=storage,
        direction="maximize",
        load_if_exists=True,
        pruner=optuna.pruners.SuccessiveHalvingPruner(
            min_resource=spec["grace_period"],
            reduction_factor=spec["reduction_factor"],
            min_early_stopping_rate=0,
        ),
    )


def suggest(trial: optuna.Trial, key: str, kind: str, args: list) -> Any:
    if kind == "choice":
        return trial.suggest_categorical(key, args)
    return trial.suggest_float(key, args[0], args[1], log=kind == "loguniform")


def worker(spec_path: str, journal: str) -> None:
    import lightning as L

    from bench.contenders.common import build, load_spec, trainer

    spec = load_spec(spec_path)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = spec["space"]

    class Pruning(L.Callback):
        def __init__(self, trial: optuna.Trial) -> None:
            self.trial = trial

        def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
            self.trial.report(float(trainer.callback_metrics["val_acc"]), trainer.current_epoch + 1)
            if self.trial.should_prune():
                raise optuna.TrialPruned()

    def objective(trial: optuna.Trial) -> float:
        if not trial.user_attrs.get("fixed"):
            raise optuna.TrialPruned()  # lost the race for the last enqueued point
        point = {key: suggest(trial, key, kind, args) for key, (kind, args) in space.items()}
        model, data = build(spec, point)
        fit = trainer(spec, [Pruning(trial)])
        fit.fit(model, datamodule=data)
        return float(fit.callback_metrics["val_acc"])

    s = study(spec, journal)
    while s.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
        s.optimize(objective, n_trials=1)


def main(spec_path: str) -> None:
    import tempfile

    from bench.contenders.common import load_spec

    spec = load_spec(spec_path)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    journal = tempfile.mktemp(suffix=".journal")
    s = study(spec, journal)
    for point in spec["points"]:
        s.enqueue_trial(point, user_attrs={"fixed": True})
    procs = [
        multiprocessing.Process(target=worker, args=(spec_path, journal)) for _ in range(N_WORKERS)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    sys.exit(max(p.exitcode or 0 for p in procs))


if __name__ == "__main__":
    main(sys.argv[1])
