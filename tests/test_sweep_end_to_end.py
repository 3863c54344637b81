"""The whole product against real parts: the `sweep` command, an embedded Ray, Lightning
on digits, a SQLite MLflow store. Asserts what the user sees: output, files, runs."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, SMALL, run_sweep, sweep_folders

pytestmark = pytest.mark.slow


def runs_of(cwd: Path, experiment: str) -> tuple[object, list, MlflowClient]:
    client = MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents[0], children, client


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("sweep")
    proc = run_sweep(cwd, *SMALL, "scheduler.reduction_factor=2", "seed=1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return cwd, proc


def test_summary_tells_the_user_what_happened(small_sweep) -> None:
    cwd, proc = small_sweep
    out = proc.stdout
    assert "Sweep mlp_digits: 6 trials" in out
    assert "Best: trial" in out and "val_acc=" in out
    assert f"mlflow ui --backend-store-uri sqlite:///{cwd}/mlflow.db" in out
    assert "6/6 done" in out
    assert "Traceback" not in proc.stderr


def test_mlflow_parent_and_nested_children(small_sweep) -> None:
    cwd, _ = small_sweep
    parent, children, client = runs_of(cwd, "mlp_digits")
    assert parent.info.status == "FINISHED"
    assert parent.data.params["model.hidden"] == "128"
    assert parent.data.params["num_samples"] == "6"
    assert parent.data.tags["sweep.searcher"] == "random"
    assert parent.data.tags["sweep.scheduler"] == "asha"
    assert "best_val_acc" in parent.data.metrics
    assert len(children) == 6
    assert {c.info.status for c in children} == {"FINISHED"}
    reasons = [c.data.tags["sweep.end_reason"] for c in children]
    assert set(reasons) <= {"completed", "stopped_early"}
    assert "stopped_early" in reasons, "ASHA should stop at least one of 6 trials"
    assert len({c.data.tags["sweep.trial_id"] for c in children}) == 6
    for child in children:
        assert set(child.data.params) == {"model.lr", "model.hidden", "model.dropout"}
        assert 1e-4 <= float(child.data.params["model.lr"]) <= 3e-2
        assert child.info.run_name.startswith("trial ")
        history = client.get_metric_history(child.info.run_id, "val_acc")
        steps = sorted(m.step for m in history)
        assert steps == list(range(1, len(steps) + 1)), steps
        assert {"train_loss", "train_acc", "val_loss"} <= set(child.data.metrics)
        stopped = child.data.tags["sweep.end_reason"] == "stopped_early"
        assert (len(steps) < 4) == stopped
        # What the trial's process used, per epoch: the run's System metrics tab.
        cpu = client.get_metric_history(child.info.run_id, "system/trial_cpu_percentage")
        assert sorted(m.step for m in cpu) == steps
        assert all(0 < m.value <= 100 * (os.cpu_count() or 1) for m in cpu), cpu
        memory = child.data.metrics["system/trial_memory_megabytes"]
        assert 100 < memory < 8000, memory  # torch and Lightning are loaded, nothing more
        assert child.data.metrics["system/epoch_seconds"] > 0
        assert child.data.tags["sweep.device"] == "cpu"  # what it trained on (no GPU here)
        # The runs table's Source and Dataset columns.
        assert child.data.tags["mlflow.source.name"].startswith("sweep ")
        names = sorted(i.dataset.name for i in child.inputs.dataset_inputs)
        assert names == ["digits-train", "digits-val"]


def test_results_table_and_best_config_agree_with_mlflow(small_sweep) -> None:
    cwd, _ = small_sweep
    (folder,) = sweep_folders(cwd)
    table = pd.read_csv(folder / "results.csv")
    assert len(table) == 6
    best = table.iloc[0]
    assert best["best_val_acc"] == table["best_val_acc"].max()
    parent, children, _ = runs_of(cwd, "mlp_digits")
    assert math.isclose(parent.data.metrics["best_val_acc"], best["best_val_acc"], rel_tol=1e-6)
    by_trial = {c.data.tags["sweep.trial_id"]: c for c in children}
    child = by_trial[best["trial_id"]]
    assert math.isclose(
        max(
            m.value
            for m in MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}").get_metric_history(
                child.info.run_id, "val_acc"
            )
        ),
        best["best_val_acc"],
        rel_tol=1e-6,
    )
    config = yaml.safe_load((folder / "best.yaml").read_text())
    assert config["search_space"] == {}
    for key in ("lr", "hidden", "dropout"):
        assert math.isclose(float(config["model"][key]), float(best[f"model.{key}"]), rel_tol=1e-9)
        assert math.isclose(
            float(child.data.params[f"model.{key}"]), float(best[f"model.{key}"]), rel_tol=1e-9
        )
    assert Path(best["checkpoint"]).is_dir()
    assert (folder / "config.yaml").is_file()


def test_best_config_re_runs_as_a_single_trial(small_sweep) -> None:
    cwd, _ = small_sweep
    (folder,) = sweep_folders(cwd)
    proc = run_sweep(cwd, "--config-dir", str(folder), "--config-name", "best", "single_trial=true")
    assert proc.returncode == 0, proc.stderr
    assert "epoch   4" in proc.stdout
    # The best epoch's val_acc, not the last one's.
    epochs = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    accs = [float(line.split("val_acc=")[1].split()[0]) for line in epochs]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("best val_acc: "), last
    best = float(last.split()[2])
    assert best > 0.5 and math.isclose(best, max(accs), abs_tol=1e-4)
    assert f"(epoch {accs.index(max(accs)) + 1})" in last


def test_cli_overrides_change_the_sweep(tmp_path) -> None:
    """Switch model, change a bound, add a dimension, remove one and fix it instead."""
    proc = run_sweep(
        tmp_path,
        "model=cnn",
        "num_samples=3",
        "trainer.max_epochs=2",
        "scheduler=fifo",
        "search_space.model.lr.high=0.003",
        "+search_space.model.weight_decay={type: loguniform, low: 1e-6, high: 1e-3}",
        "~search_space.model.channels",
        "model.channels=4",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    parent, children, _ = runs_of(tmp_path, "cnn_digits")
    assert parent.data.params["model.channels"] == "4"
    assert len(children) == 3
    for child in children:
        params = child.data.params
        assert set(params) == {"model.lr", "model.dropout", "model.weight_decay"}
        assert float(params["model.lr"]) <= 0.003
        assert 1e-6 <= float(params["model.weight_decay"]) <= 1e-3
        assert child.data.tags["sweep.end_reason"] == "completed"


def test_bring_your_own_model(tmp_path) -> None:
    """The README's example: a user's package and config folder, this package untouched."""
    example = REPO / "tests" / "examples" / "byo"
    proc = run_sweep(
        example,
        "--config-dir",
        "my_conf",
        "model=softmax",
        "data=wine",
        "num_samples=2",
        "trainer.max_epochs=3",
        f"output_dir={tmp_path}/sweeps",
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Sweep softmax_wine: 2 trials" in proc.stdout
    _, children, _ = runs_of(tmp_path, "softmax_wine")
    assert len(children) == 2 and {c.info.status for c in children} == {"FINISHED"}
    assert max(c.data.metrics["val_acc"] for c in children) > 0.8


CONDITIONAL = [
    "+search_space.model.optimizer={type: choice, values: [adam, sgd]}",
    "+search_space.model.beta1={type: one_minus_log, low: 0.8, high: 0.99, "
    "when: {model.optimizer: sgd}}",
]


def test_a_conditional_dimension_is_sampled_only_where_its_condition_holds(tmp_path) -> None:
    proc = run_sweep(
        tmp_path, *CONDITIONAL, "num_samples=6", "trainer.max_epochs=2", "best_model=false"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == "", proc.stderr
    (folder,) = sweep_folders(tmp_path)
    table = pd.read_csv(folder / "results.csv")
    sgd, adam = table[table["model.optimizer"] == "sgd"], table[table["model.optimizer"] == "adam"]
    assert len(sgd) and len(adam)  # seed 0 draws both
    assert sgd["model.beta1"].between(0.8, 0.99).all() and adam["model.beta1"].isna().all()
    _, children, _ = runs_of(tmp_path, "mlp_digits")
    assert len(children) == 6
    for run in children:  # the key is a param of the trials that sampled it, and only them
        sampled = run.data.params["model.optimizer"] == "sgd"
        assert ("model.beta1" in run.data.params) == sampled, run.data.params
