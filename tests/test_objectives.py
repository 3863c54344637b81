"""Several objectives (``metric=[val_acc,param_count] mode=[max,min]``): the Pareto front
computed from trials, the searcher that is given every objective, and a real sweep whose
summary, files and MLflow runs show the front."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from sweep.config.settings import Settings, load_settings
from sweep.report.front import dominates, pareto
from sweep.report.results import TrialRow, at_best
from sweep.run.outcome import TrialStopper
from sweep.run.tuner import make_searcher, param_space
from tests.conftest import run_sweep, sweep_folders

GOALS = [("val_acc", "max"), ("param_count", "min")]
TWO = ("metric=[val_acc,param_count]", "mode=[max,min]")


def row(number: int, acc: float, size: float) -> TrialRow:
    return TrialRow(
        trial_id=f"t{number}",
        status="TERMINATED",
        end_reason="completed",
        epochs=3,
        best=acc,
        final=acc,
        values={},
        checkpoint=None,
        first_number=number,
        objectives={"val_acc": acc, "param_count": size},
    )


def numbers(rows: list[TrialRow]) -> list[int]:
    return [r.number for r in rows]


def test_dominance_follows_each_objectives_direction() -> None:
    small_good, big_better = (
        {"val_acc": 0.9, "param_count": 100},
        {"val_acc": 0.95, "param_count": 900},
    )
    assert not dominates(small_good, big_better, GOALS)
    assert not dominates(big_better, small_good, GOALS)
    assert dominates({"val_acc": 0.9, "param_count": 50}, small_good, GOALS)  # smaller, as good
    assert not dominates(small_good, small_good, GOALS)  # equal: neither beats the other
    flipped = [("val_acc", "min"), ("param_count", "max")]
    assert dominates(small_good, {"val_acc": 0.95, "param_count": 50}, flipped)


def test_the_front_keeps_the_undominated_in_the_given_order() -> None:
    rows = [
        row(0, 0.95, 900),  # best accuracy
        row(1, 0.93, 900),  # beaten by 0 (same size, less accurate)
        row(2, 0.90, 100),  # smaller than 0
        row(3, 0.90, 100),  # the same point as 2: both stay
        row(4, 0.50, 20),  # smallest
        row(5, 0.40, 50),  # beaten by 4 on both
        row(6, math.nan, 10),  # never reported val_acc: no point
    ]
    assert numbers(pareto(rows, GOALS)) == [0, 2, 3, 4]
    assert pareto([], GOALS) == []


def test_a_trial_is_the_point_of_its_best_epoch() -> None:
    settings_like = load_settings_for(*TWO)
    history = pd.DataFrame(
        {
            "val_acc": [0.5, 0.9, 0.8],
            "param_count": [7.0, 7.0, 7.0],
            "training_iteration": [1, 2, 3],
        }
    )
    assert at_best(history, settings_like) == {"val_acc": 0.9, "param_count": 7.0}
    assert math.isnan(at_best(history.drop(columns="param_count"), settings_like)["param_count"])
    assert all(math.isnan(v) for v in at_best(None, settings_like).values())


def load_settings_for(*overrides: str) -> Settings:
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="conf", version_base="1.3"):
        return load_settings(compose("config", overrides=list(overrides)))


def test_settings_read_lists_of_metrics_and_directions() -> None:
    settings = load_settings_for(*TWO, "searcher=tpe")
    assert settings.objectives == tuple(GOALS)
    assert (settings.metric, settings.mode) == ("val_acc", "max")  # the first: ASHA's
    assert settings.metrics == ("val_acc", "param_count") and settings.several_objectives
    one = load_settings_for("metric=[val_loss]", "mode=[min]")
    assert (one.metric, one.mode, one.objectives, one.metrics) == (
        "val_loss",
        "min",
        (),
        ("val_loss",),
    )


@pytest.mark.parametrize("searcher", ["tpe", "quasi_random"])
def test_the_searcher_is_given_every_objective(searcher: str) -> None:
    """Tune gets no metric (it takes one); Optuna's study gets a direction per objective."""
    settings = load_settings_for(*TWO, f"searcher={searcher}")
    alg = make_searcher(settings)
    assert alg.set_search_properties(None, None, param_space(list(settings.dims)))
    assert alg.metric == ["val_acc", "param_count"]
    directions = [d.name for d in alg._ot_study.directions]
    assert directions == ["MAXIMIZE", "MINIMIZE"]


def test_every_objective_must_be_reported() -> None:
    stopper = TrialStopper(("val_acc", "param_count"))
    assert not stopper("t", {"epoch": 1, "val_acc": 0.5, "param_count": 10.0})
    assert stopper("t", {"epoch": 1, "val_acc": 0.5, "train_loss": 1.0})
    assert stopper.bad_input is not None
    assert stopper.bad_input[1].startswith("'param_count' is not reported by the model")


def test_a_two_objective_sweep_shows_and_tags_its_front(tmp_path) -> None:
    proc = run_sweep(
        tmp_path,
        "search_space=mlp_size",
        *TWO,
        "searcher=tpe",
        "num_samples=6",
        "trainer.max_epochs=2",
        "best_model=false",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (folder,) = sweep_folders(tmp_path)
    table = pd.read_csv(folder / "results.csv")
    assert len(table) == 6
    # The front in results.csv is exactly the trials no other trial dominates.
    points = {
        int(t.trial): {"val_acc": t.best_val_acc, "param_count": t.param_count}
        for t in table.itertuples()
    }
    expected = {
        n for n, p in points.items() if not any(dominates(q, p, GOALS) for q in points.values())
    }
    front = set(table.loc[table.pareto_front, "trial"].astype(int))
    assert front == expected and front

    # The summary prints it: a heading, then a line per front trial, best accuracy first.
    out = proc.stdout
    heading = f"Pareto front (val_acc max, param_count min): {len(front)} of 6 trials"
    assert heading in out, out
    block = out[out.index(heading) :].splitlines()
    shown = [int(line.split()[0]) for line in block[2 : 2 + len(front)]]
    assert set(shown) == front
    assert [points[n]["val_acc"] for n in shown] == sorted(
        (points[n]["val_acc"] for n in shown), reverse=True
    )

    # One re-runnable config per front trial, and the plot.
    files = sorted(p.name for p in (folder / "front").iterdir())
    assert files == [f"trial-{n:03d}.yaml" for n in sorted(front)]
    assert (folder / "plots" / "pareto_front.png").stat().st_size > 10_000
    retrain = re.search(r"re-train one (sweep .*)", out)
    assert retrain is not None and "--config-dir" in retrain.group(1), out

    # MLflow: each trial says whether it is on the front; the parent lists the front.
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (experiment,) = [e for e in client.search_experiments() if e.name == "mlp_digits"]
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if "sweep.trial_id" in r.data.tags]
    parent = next(r for r in runs if "sweep.trial_id" not in r.data.tags)
    tagged = {
        int(r.info.run_name.split()[1])
        for r in children
        if r.data.tags["sweep.pareto_front"] == "true"
    }
    assert tagged == front
    assert {r.data.tags["sweep.pareto_front"] for r in children} <= {"true", "false"}
    listed = {int(n) for n in parent.data.tags["sweep.front_trials"].split(", ")}
    assert listed == front
    assert "Pareto front" in parent.data.tags["mlflow.note.content"]
    for r in children:  # every trial logged both objectives
        assert {"val_acc", "param_count"} <= set(r.data.metrics)
