"""Searchers and the notices printed before a sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from ray.tune.schedulers import HyperBandForBOHB

from sweep.config.settings import load_settings
from sweep.errors import ConfigError
from sweep.practice.advice import before_sweep
from sweep.run.tuner import make_scheduler, make_searcher
from tests.conftest import run_sweep, sweep_folders


def suggestions(settings, n: int = 8) -> list[dict]:
    from sweep.run.tuner import param_space

    searcher = make_searcher(settings)
    searcher.set_search_properties(settings.metric, settings.mode, param_space(list(settings.dims)))
    return [searcher.suggest(f"trial_{i}") for i in range(n)]


def test_quasi_random_is_reproducible_from_the_seed(composed) -> None:
    first = suggestions(load_settings(composed("searcher=quasi_random", "seed=3")))
    again = suggestions(load_settings(composed("searcher=quasi_random", "seed=3")))
    other = suggestions(load_settings(composed("searcher=quasi_random", "seed=4")))
    assert first == again
    assert first != other
    assert len({point["model.lr"] for point in first}) == 8


def test_quasi_random_notice_when_not_a_power_of_two(composed) -> None:
    (notice,) = before_sweep(load_settings(composed("searcher=quasi_random", "num_samples=12")))
    assert "num_samples=12" in notice and "num_samples=8 or 16" in notice
    assert before_sweep(load_settings(composed("searcher=quasi_random", "num_samples=16"))) == []
    assert before_sweep(load_settings(composed("searcher=random", "num_samples=12"))) == []


def test_batch_size_in_the_search_space_gets_a_notice(composed) -> None:
    settings = load_settings(
        composed("+search_space.data.batch_size={type: choice, values: [32, 64, 128]}")
    )
    (notice,) = before_sweep(settings)
    assert "data.batch_size is in the search space" in notice
    assert "sweep probe=batch_size" in notice


def test_bohb_brings_its_hyperband_and_proposes_points_in_the_space(composed) -> None:
    settings = load_settings(composed("searcher=bohb", "trainer.max_epochs=9"))
    scheduler = make_scheduler(settings)
    assert isinstance(scheduler, HyperBandForBOHB) and scheduler._max_t_attr == 9
    points = suggestions(settings, 4)
    assert len({p["model.lr"] for p in points}) == 4
    assert all(
        1e-4 <= p["model.lr"] <= 3e-2 and p["model.hidden"] in (64, 128, 256) for p in points
    )
    with pytest.raises(ConfigError) as error:
        load_settings(composed("searcher=bohb", "scheduler=fifo"))
    assert error.value.key == "scheduler" and "brings its own HyperBand" in str(error.value)


def test_a_bohb_sweep_runs_with_real_ray_and_mlflow(tmp_path: Path) -> None:
    proc = run_sweep(
        tmp_path, "searcher=bohb", "num_samples=6", "trainer.max_epochs=9", "best_model=false"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == "", proc.stderr
    assert "6 trials × ≤9 epochs, bohb search, HyperBand" in proc.stdout
    (folder,) = sweep_folders(tmp_path)
    table = pd.read_csv(folder / "results.csv")
    assert len(table) == 6 and table["best_val_acc"].notna().all()
    # HyperBand ended some trials at its first budget and trained others further.
    assert (table["epochs"] < 9).any() and (table["epochs"] > 1).any()
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    parent = json.loads((folder / "state.json").read_text())["parent_run_id"]
    assert "BOHB's HyperBand" in client.get_run(parent).data.tags["mlflow.note.content"]
    runs = client.search_runs(
        [client.get_experiment_by_name("mlp_digits").experiment_id],
        f"tags.mlflow.parentRunId = '{parent}'",
    )
    assert len(runs) == 6 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:  # a paused and resumed trial logs each epoch once, in order
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
        assert steps == list(range(1, len(steps) + 1))
