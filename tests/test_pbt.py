"""Population Based Training with real Ray, Lightning and MLflow: after an exploit a trial
trains with its perturbed learning rate, not the one Lightning restores with the copied
checkpoint's optimizer (ray-project/ray#36660), and its one MLflow run tags the change."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from ray.tune.schedulers.pb2 import PB2

from sweep.config.settings import load_settings
from sweep.errors import ConfigError
from sweep.run.tuner import make_scheduler
from tests.conftest import run_sweep, sweep_folders


def test_pbt_needs_random_draws_and_a_continuous_dimension(composed) -> None:
    assert load_settings(composed("scheduler=pbt")).scheduler.perturbation_interval == 2
    with pytest.raises(ConfigError) as error:
        load_settings(composed("scheduler=pbt", "searcher=tpe"))
    assert error.value.key == "searcher" and "use searcher=random" in str(error.value)
    with pytest.raises(ConfigError) as error:
        load_settings(composed("scheduler=pbt", "search_space=none"))
    assert error.value.key == "scheduler" and "has none" in str(error.value)


def test_pb2_moves_each_continuous_dimension_within_its_range(composed) -> None:
    scheduler = make_scheduler(load_settings(composed("scheduler=pb2", "trainer.max_epochs=6")))
    assert isinstance(scheduler, PB2)
    # lr and dropout move; hidden (a width) does not.
    assert scheduler._hyperparam_bounds == {"model.lr": [1e-4, 0.03], "model.dropout": [0.0, 0.4]}


@pytest.mark.parametrize("name", ["pbt", "pb2"])
def test_a_population_scheduler_pickles_and_loads_as_itself(composed, name: str) -> None:
    """The Tuner pickles its scheduler (tune/tuner.pkl, which a resume reads): the classes
    of sweep/run/population.py load by name, pb2's too, which is built on first use."""
    scheduler = make_scheduler(load_settings(composed(f"scheduler={name}", "trainer.max_epochs=6")))
    copy = pickle.loads(pickle.dumps(scheduler))
    assert type(copy) is type(scheduler) and type(copy).__module__ == "sweep.run.population"


def population_sweep(tmp_path: Path, scheduler: str, epochs: int) -> tuple[Path, pd.DataFrame]:
    proc = run_sweep(
        tmp_path,
        f"scheduler={scheduler}",
        "scheduler.quantile_fraction=0.5",  # synchronous, every 2 epochs: 2 of 4 copy
        "num_samples=4",
        f"trainer.max_epochs={epochs}",
        "search_space.model.lr.low=1e-5",
        "search_space.model.lr.high=0.3",
        "best_model=false",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == "", proc.stderr
    assert f"4 trials × ≤{epochs} epochs, random search, {scheduler.upper()}" in proc.stdout
    (folder,) = sweep_folders(tmp_path)
    table = pd.read_csv(folder / "results.csv").set_index("trial_id")
    assert len(table) == 4 and (table["epochs"] == epochs).all()
    return folder, table


def test_a_pb2_sweep_copies_with_values_from_its_bandit(tmp_path: Path) -> None:
    folder, table = population_sweep(tmp_path, "pb2", epochs=4)
    assert table["model.lr"].between(1e-5, 0.3).all()
    each_trial_trained_with_its_final_values(tmp_path, folder, table, epochs=4)


def test_after_an_exploit_the_optimizer_uses_the_perturbed_learning_rate(tmp_path: Path) -> None:
    folder, table = population_sweep(tmp_path, "pbt", epochs=6)
    each_trial_trained_with_its_final_values(tmp_path, folder, table, epochs=6)


def each_trial_trained_with_its_final_values(
    tmp_path: Path, folder: Path, table: pd.DataFrame, epochs: int
) -> None:
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    parent = json.loads((folder / "state.json").read_text())["parent_run_id"]
    runs = client.search_runs(
        [client.get_experiment_by_name("mlp_digits").experiment_id],
        f"tags.mlflow.parentRunId = '{parent}'",
    )
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    changed = 0
    for run in runs:
        history = client.get_metric_history(run.info.run_id, "optimizer_lr")
        assert [m.step for m in history] == list(range(1, epochs + 1))  # one run, every epoch
        final_lr = table.loc[run.data.tags["sweep.trial_id"], "model.lr"]
        # The last epoch trained with the trial's final config, copied and moved or not
        # (without the fix: the donor's rate, restored with its optimizer).
        assert history[-1].value == pytest.approx(final_lr, rel=1e-6)
        changes = [k for k in run.data.tags if k.startswith("sweep.config_at_epoch_")]
        changed += bool(changes)
        if changes:
            assert "lr=" in run.data.tags[changes[0]]
    assert changed >= 1  # the bottom half copied the top half at least once
