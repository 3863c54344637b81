"""Faults inside trials, injected for real (tests/examples/faulty): a trial that raises once
is retried from its checkpoint; one that always raises ends FAILED with its error in
MLflow; a NaN loss ends the trial as diverged; a trial whose process is SIGKILLed (as by
the OOM killer) is retried like a raised error. The sweep goes on through all of them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, Sweep, run_sweep

pytestmark = pytest.mark.slow

FAULTY = REPO / "tests" / "examples" / "faulty"
EPOCHS = 4


@pytest.fixture(scope="module")
def fault_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    proc = run_sweep(
        FAULTY,
        "--config-dir",
        "faulty_conf",
        "model=faulty",  # one trial per fault: none, raise_once, raise_always, nan, kill_once
        "num_samples=1",
        f"trainer.max_epochs={EPOCHS}",
        "model.fault_epoch=2",
        f"model.marker_dir={tmp}/markers",
        "max_failures=1",
        "metric=val_loss",  # NaN for the diverged trial: ASHA and the ranking must cope
        "mode=min",
        "scheduler.grace_period=2",
        f"output_dir={tmp}/sweeps",
        f"tracking.uri=sqlite:///{tmp}/mlflow.db",
    )
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("faulty_digits").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.data.params["model.fault"]: r for r in runs if r is not parent}
    (folder,) = (tmp / "sweeps" / "faulty_digits").iterdir()
    return proc, client, parent, children, folder


def steps(client: MlflowClient, run, key: str = "val_loss") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run.info.run_id, key))


def tune_epochs(folder: Path, fault: str) -> list[int]:
    """Epochs in the order Tune received them, from the trial's own result log."""
    for params in (folder / "tune").glob("train_*/params.json"):
        if json.loads(params.read_text())["model.fault"] == fault:
            lines = (params.parent / "result.json").read_text().splitlines()
            return [int(json.loads(line)["epoch"]) for line in lines if line.strip()]
    raise AssertionError(f"no trial folder for {fault}")


def test_the_sweep_goes_on_and_says_what_failed(fault_sweep) -> None:
    proc, _, parent, children, _ = fault_sweep
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Sweep faulty_digits: 5 trials" in proc.stdout
    assert "retry 1 from its last checkpoint" in proc.stderr
    assert "no retries left, the sweep goes on" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert parent.info.status == "FINISHED"
    assert sorted(children) == sorted(["none", "raise_once", "raise_always", "nan", "kill_once"])
    assert "RUNNING" not in {c.info.status for c in children.values()}


def test_raise_once_resumes_from_its_checkpoint(fault_sweep) -> None:
    _, client, _, children, folder = fault_sweep
    run = children["raise_once"]
    assert run.info.status == "FINISHED"
    assert run.data.tags["sweep.end_reason"] in ("completed", "stopped_early")
    assert run.data.tags["sweep.retries"] == "1"
    assert "InjectedFault: injected fault at epoch 2" in run.data.tags["sweep.last_error"]
    # The retry continued at epoch 2 from the epoch-1 checkpoint: no epoch ran twice.
    epochs = tune_epochs(folder, "raise_once")
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) >= 2, epochs
    assert steps(client, run) == epochs  # one child run, continuous steps


def test_exhausted_retries_mark_the_run_failed_with_its_error(fault_sweep) -> None:
    _, client, _, children, folder = fault_sweep
    run = children["raise_always"]
    assert run.info.status == "FAILED"
    assert run.data.tags["sweep.end_reason"] == "error"
    assert "InjectedFault: injected fault at epoch 2" in run.data.tags["sweep.error"]
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert "error.txt" in artifacts
    text = Path(client.download_artifacts(run.info.run_id, "error.txt")).read_text()
    assert "faulty_models/mlp.py" in text and "InjectedFault" in text  # the stack
    assert "\x1b[" not in text + run.data.tags["sweep.error"]  # plain text, no colours
    assert steps(client, run) == [1]
    table = pd.read_csv(folder / "results.csv")
    assert "error" in set(table["end_reason"])


def test_nan_loss_is_diverged_not_an_error(fault_sweep) -> None:
    _, client, _, children, folder = fault_sweep
    run = children["nan"]
    assert run.info.status == "FINISHED"
    assert run.data.tags["sweep.end_reason"] == "diverged"
    assert "sweep.retries" not in run.data.tags
    assert steps(client, run) == [1, 2]  # stopped at the first NaN epoch
    table = pd.read_csv(folder / "results.csv", keep_default_na=False)  # the fault "nan"
    row = table[table["model.fault"] == "nan"].iloc[0]
    assert row["end_reason"] == "diverged"
    assert table.iloc[0]["end_reason"] != "diverged"  # the best trial is a healthy one


def test_a_trial_killed_by_the_os_is_retried(fault_sweep) -> None:
    _, client, _, children, folder = fault_sweep
    run = children["kill_once"]
    assert run.info.status == "FINISHED"
    assert run.data.tags["sweep.retries"] == "1"
    assert run.data.tags["sweep.last_error"]  # Ray's word for the dead worker
    epochs = tune_epochs(folder, "kill_once")
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) >= 2, epochs
    assert steps(client, run) == epochs


def test_two_sweeps_started_together_on_a_new_store_both_finish(tmp_path) -> None:
    """Two sweeps launched at once, one MLflow SQLite file that does not exist yet."""
    common = ["num_samples=1", "trainer.max_epochs=2", f"tracking.uri=sqlite:///{tmp_path}/m.db"]
    sweeps = []
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        args = [f"name={name}", f"output_dir={tmp_path}/sweeps", *common]
        sweeps.append(Sweep(tmp_path / name, args, cwd=tmp_path / name))
    for sweep in sweeps:
        code, out, err = sweep.finish()
        assert code == 0, out + err
    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    for name in ("first", "second"):
        runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
        assert {r.info.status for r in runs} == {"FINISHED"} and len(runs) == 2
