"""Tuning practice on real sweeps with known answers (real Ray, Lightning, MLflow).

``sweep``: optimizer is scientific, the learning rate a nuisance dimension in [1e-4, 3e-3],
one refinement round. Adam beats SGD at such small learning rates on digits, and both
optimizers' best learning rates lie above the range (SGD's far above).
``refined``: Adam alone in [1e-3, 0.3], whose optimum lies inside: refinement narrows.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import run_sweep, sweep_folders

pytestmark = pytest.mark.slow

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ARGS = [
    "num_samples=6",
    "trainer.max_epochs=2",
    "scheduler=fifo",
    "searcher=quasi_random",
    "refine_rounds=1",
    "search_space.model.lr.high=3e-3",
    "~search_space.model.hidden",
    "~search_space.model.dropout",
    "+search_space.model.optimizer={type: choice, values: [adam, sgd], role: scientific}",
    "best_model=false",  # not the subject here (~6 s a sweep); tests/test_best_model.py
]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("practice")
    proc = run_sweep(cwd, *ARGS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (folder,) = sweep_folders(cwd)
    client = MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mlp_digits")
    runs = client.search_runs([experiment.experiment_id])
    return proc.stdout, folder, client, runs


def parent_of(runs):
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return parent


def stage_runs(runs):
    parent = parent_of(runs)
    return {
        r.data.tags["sweep.stage"]: r
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }


def lr_range(stage_run) -> tuple[float, float]:
    text = stage_run.data.params["search_space.model.lr"]  # "loguniform [0.0001, 0.003]"
    low, high = text.split("[")[1].rstrip("]").split(",")
    return float(low), float(high)


def test_every_scientific_value_runs_with_the_same_budget_and_nuisance_points(sweep) -> None:
    out, folder, _, _ = sweep
    table = pd.read_csv(folder / "results.csv")
    assert sorted(table["stage"].unique()) == [
        "optimizer=adam · round 1/2",
        "optimizer=adam · round 2/2",
        "optimizer=sgd · round 1/2",
        "optimizer=sgd · round 2/2",
    ]
    assert table.groupby("stage").size().tolist() == [6, 6, 6, 6]
    first = table[table["stage"].str.endswith("round 1/2")]
    adam = sorted(first[first["model.optimizer"] == "adam"]["model.lr"])
    sgd = sorted(first[first["model.optimizer"] == "sgd"]["model.lr"])
    assert adam == pytest.approx(sgd), "same searcher seed: same learning rates per value"
    assert "notice: quasi_random with num_samples=6" in out


def test_comparison_finds_the_better_optimizer(sweep) -> None:
    out, folder, _, _ = sweep
    assert "Scientific comparison of model.optimizer" in out
    assert "optimizer=adam wins by" in out
    checks = json.loads((folder / "checks.json").read_text())
    values = checks["scientific"]["values"]
    assert [v["value"] for v in values] == ["optimizer=adam", "optimizer=sgd"]
    assert values[0]["best"] > values[1]["best"] and checks["scientific"]["clear"]


def test_boundary_warning_for_sgd_learning_rate_with_override(sweep) -> None:
    out, folder, _, runs = sweep
    checks = json.loads((folder / "checks.json").read_text())
    sgd = [w for w in checks["boundary_warnings"] if w["group"] == "optimizer=sgd"]
    assert [(w["key"], w["edge"]) for w in sgd] == [("model.lr", "high")]
    override = sgd[0]["override"]
    assert override.startswith("search_space.model.lr.high=")
    assert float(override.split("=")[1]) > 3e-3
    assert "warning: model.lr (optimizer=sgd): the best trials crowd the high edge" in out
    assert override in out
    tags = parent_of(runs).data.tags
    assert "crowd the high edge" in tags["sweep.boundary.model.lr.high optimizer_sgd"]


def best_per_stage(folder: Path) -> dict[str, float]:
    table = pd.read_csv(folder / "results.csv")
    return table.groupby("stage")["best_val_acc"].max().to_dict()


def test_refinement_extends_a_flagged_edge_and_improves(sweep) -> None:
    """Both optimizers' best learning rates crowd 3e-3: round 2 searches beyond it."""
    out, folder, _, runs = sweep
    stages = stage_runs(runs)
    assert lr_range(stages["optimizer-adam_r1"]) == pytest.approx((1e-4, 3e-3))
    for value in ("adam", "sgd"):
        low, high = lr_range(stages[f"optimizer-{value}_r2"])
        assert low >= 1e-4 and high > 3e-3
    best = best_per_stage(folder)
    assert best["optimizer=sgd · round 2/2"] > best["optimizer=sgd · round 1/2"] + 0.1
    assert best["optimizer=adam · round 2/2"] >= best["optimizer=adam · round 1/2"] - 0.01
    assert "Coarse to fine" in out and "optimizer=sgd · round 2/2" in out


@pytest.fixture(scope="module")
def refined(tmp_path_factory):
    """Adam alone, learning rate in [1e-3, 0.3]: its 2-epoch optimum (about 1e-2) is inside."""
    cwd = tmp_path_factory.mktemp("refine")
    proc = run_sweep(
        cwd,
        "num_samples=6",
        "trainer.max_epochs=2",
        "scheduler=fifo",
        "refine_rounds=1",
        "search_space.model.lr.low=1e-3",
        "search_space.model.lr.high=0.3",
        "~search_space.model.hidden",
        "~search_space.model.dropout",
        "best_model=false",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (folder,) = sweep_folders(cwd)
    client = MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("mlp_digits").experiment_id])
    return proc.stdout, folder, runs


def test_refinement_narrows_around_an_inside_optimum(refined) -> None:
    out, folder, runs = refined
    stages = stage_runs(runs)
    round1, round2 = lr_range(stages["r1"]), lr_range(stages["r2"])
    assert round1 == pytest.approx((1e-3, 0.3))
    table = pd.read_csv(folder / "results.csv")
    first = table[table["stage"] == "round 1/2"].sort_values("best_val_acc")
    # round 2 searches a narrower log range, inside the first, holding round 1's best, and
    # leaves out the learning rates that wrecked training (val_acc under 0.5 at 0.1 and up)
    assert math.log10(round2[1] / round2[0]) < math.log10(round1[1] / round1[0])
    assert round1[0] <= round2[0] <= first.iloc[-1]["model.lr"] <= round2[1] <= round1[1]
    wrecked = first[first["best_val_acc"] < 0.5]["model.lr"]
    assert len(wrecked) and round2[1] < wrecked.min()
    # ... and matches or improves round 1's best
    best = best_per_stage(folder)
    assert best["round 2/2"] >= best["round 1/2"] - 0.01
    assert "Search-space boundaries" not in out, "the optimum is inside: no warning"
    assert json.loads((folder / "checks.json").read_text())["boundary_warnings"] == []


def test_trials_nest_under_their_stage_runs(sweep) -> None:
    _, _, _, runs = sweep
    stages = stage_runs(runs)
    assert len(stages) == 4 and {r.info.status for r in stages.values()} == {"FINISHED"}
    for slug, stage in stages.items():
        trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == stage.info.run_id]
        assert len(trials) == 6
        assert {t.data.tags["sweep.stage"] for t in trials} == {slug}
        assert "best_val_acc" in stage.data.metrics


def test_plots_are_valid_pngs_attached_to_the_parent_run(sweep) -> None:
    _, folder, client, runs = sweep
    names = ["metric_vs_params.png", "learning_curves.png", "isolation.png"]
    for name in names:
        path = Path(folder) / "plots" / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        image = matplotlib.image.imread(path)
        assert image.shape[0] > 100 and image.shape[1] > 100
    attached = {a.path for a in client.list_artifacts(parent_of(runs).info.run_id, "plots")}
    assert attached == {f"plots/{name}" for name in names}
