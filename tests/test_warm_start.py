"""``searcher.warm_start``: an earlier sweep's finished trials seed TPE as evaluated points.
The reading and space check against a results.csv and an MLflow parent run (no Ray), and
a real warm-started sweep from a real sweep's folder."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from sweep.config.settings import load_settings
from sweep.errors import ConfigError
from sweep.run import warm_start
from sweep.track.tracker import Tracker
from tests.conftest import run_sweep, sweep_folders


def test_trials_outside_the_space_or_without_a_result_are_dropped_and_counted(
    tmp_path: Path, composed
) -> None:
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    pd.DataFrame(
        {
            "trial": [0, 1, 2, 3],
            "best_val_acc": [0.95, 0.90, 0.97, math.nan],
            "model.lr": [1e-3, 5e-3, 0.5, 1e-3],  # 0.5: above this space's high edge
            "model.hidden": [128, 64, 256, 128],
            "model.dropout": [0.1, 0.2, 0.3, 0.1],
        }
    ).to_csv(earlier / "results.csv", index=False)
    settings = load_settings(composed("searcher=tpe", f"searcher.warm_start={earlier}"))
    warm = warm_start.load(settings)
    assert warm.known.points == (
        {"model.lr": 1e-3, "model.hidden": 128, "model.dropout": 0.1},
        {"model.lr": 5e-3, "model.hidden": 64, "model.dropout": 0.2},
    )
    assert warm.known.rewards == (0.95, 0.90)
    assert (warm.known.outside, warm.known.silent) == (1, 1)
    assert warm.notice == (
        f"Warm start: tpe begins with 2 evaluated trials of {earlier}; "
        "dropped 1 outside this space, 1 without a result"
    )
    # A choice value this space does not have is outside too (trial 0's hidden=128).
    narrower = composed(
        "searcher=tpe", f"searcher.warm_start={earlier}", "search_space.model.hidden.values=[64]"
    )
    assert warm_start.load(load_settings(narrower)).known.outside == 2


def test_an_mlflow_parent_run_names_the_earlier_sweep(tmp_path: Path, composed) -> None:
    """The results.csv attached to a sweep's parent run, read back through the store."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri, "mlp_digits")
    run_id = tracker.start_parent("sweep earlier", tmp_path, {}, {})
    table = tmp_path / "results.csv"
    row = {"best_val_acc": 0.9, "model.lr": 1e-3, "model.hidden": 64, "model.dropout": 0.1}
    pd.DataFrame([row]).to_csv(table, index=False)
    tracker.log_artifact(table)
    overrides = ("searcher=tpe", f"searcher.warm_start={run_id}", f"tracking.uri={uri}")
    warm = warm_start.load(load_settings(composed(*overrides)))
    assert warm.known.points == ({"model.lr": 1e-3, "model.hidden": 64, "model.dropout": 0.1},)
    assert warm.source == run_id
    other = composed("searcher=tpe", f"searcher.warm_start={'0' * 32}", f"tracking.uri={uri}")
    with pytest.raises(ConfigError, match=r"no results\.csv on MLflow run 0000"):
        warm_start.load(load_settings(other))


@pytest.mark.slow
def test_a_sweep_warm_starts_from_another_sweeps_folder(tmp_path: Path) -> None:
    quick = ["trainer.max_epochs=2", "best_model=false"]  # the model: test_best_model.py
    first = run_sweep(tmp_path, "searcher=tpe", "num_samples=4", *quick)
    assert first.returncode == 0, first.stdout + first.stderr
    earlier = pd.read_csv(sweep_folders(tmp_path)[0] / "results.csv")
    folder = sweep_folders(tmp_path)[0]
    # A high edge that leaves exactly the trial with the largest learning rate outside.
    rates = sorted(earlier["model.lr"])
    high = (rates[-1] + rates[-2]) / 2
    warm = run_sweep(
        tmp_path,
        "searcher=tpe",
        "num_samples=2",
        *quick,
        f"searcher.warm_start={folder}",
        f"search_space.model.lr.high={high}",
    )
    assert warm.returncode == 0, warm.stdout + warm.stderr
    assert warm.stderr == "", warm.stderr
    assert (
        f"Warm start: tpe begins with 3 evaluated trials of {folder}; dropped 1 outside this space"
    ) in warm.stdout
    # Nothing re-ran: two new trials, at points of their own (not the earlier random start).
    later = pd.read_csv(sweep_folders(tmp_path)[1] / "results.csv")
    assert len(later) == 2
    assert not set(later["model.lr"]) & set(earlier["model.lr"])
