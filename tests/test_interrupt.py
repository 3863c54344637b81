"""A plain sweep's driver SIGKILLed mid-sweep, for real (and Tune's state on the storage
path cut short, as a kill during its copy leaves it): the user's command with
``resume=true`` re-runs nothing that finished and duplicates no MLflow run, and resuming a
finished sweep changes nothing. (Stops by SIGINT and SIGTERM in every phase of a sweep:
tests/test_stop_and_resume.py.)"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from sweep.run.checkpoints import SPARE_DIR
from tests.conftest import REPO, SWEEP, cut_short, reports_in, run_sweep

pytestmark = pytest.mark.slow

FAULTY = REPO / "tests" / "examples" / "faulty"
EPOCHS = 5
NAME = "faulty_digits"


def sweep_args(tmp: Path) -> list[str]:
    """Three healthy trials, slowed down (0.4 s per epoch) so a signal finds them running."""
    return [
        "--config-dir",
        "faulty_conf",
        "model=faulty",
        "search_space=mlp",
        "num_samples=3",
        f"trainer.max_epochs={EPOCHS}",
        "scheduler=fifo",
        "model.epoch_sleep=0.4",
        f"output_dir={tmp}/sweeps",
        f"tracking.uri=sqlite:///{tmp}/mlflow.db",
        "best_model=false",  # not the subject here; tests/test_best_model.py
    ]


def start(tmp: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [SWEEP, *sweep_args(tmp)],
        cwd=FAULTY,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: cleaned up by group id below
    )


def epochs_by_trial(tmp: Path) -> dict[str, list[int]]:
    """Epochs each trial reported, in order, from Tune's per-trial result logs."""
    out = {}
    for result in (tmp / "sweeps" / NAME).glob("*/tune/train_*/result.json"):
        lines = reports_in(result)
        if lines:
            out[lines[0]["trial_id"]] = [int(line["epoch"]) for line in lines]
    return out


def wait_until(condition, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the sweep"
        time.sleep(0.2)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=180)
    finally:
        # A SIGKILLed driver cannot stop the Ray processes it started: its group can.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, out, err


def mlflow_runs(tmp: Path) -> tuple[MlflowClient, object, list]:
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name(NAME).experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    return client, parents[0], [r for r in runs if r is not parents[0]]


def interrupt(tmp: Path, signum: int) -> tuple[int, str, str]:
    proc = start(tmp)
    wait_until(lambda: any(epochs_by_trial(tmp).values()))  # a trial is mid-flight
    os.kill(proc.pid, signum)
    return finish(proc)


def assert_cleanly_stopped(tmp: Path, out: str, err: str) -> str:
    """Every run closed, the state saved; returns the printed resume command."""
    assert "Traceback" not in out + err, err
    _, parent, children = mlflow_runs(tmp)
    assert parent.info.status == "KILLED"
    assert children and "RUNNING" not in {c.info.status for c in children}
    killed = [c for c in children if c.info.status == "KILLED"]
    assert killed and {c.data.tags["sweep.end_reason"] for c in killed} == {"killed"}
    (state,) = (tmp / "sweeps" / NAME).glob("*/state.json")
    assert json.loads(state.read_text())["status"] == "interrupted"
    lines = err.strip().splitlines()
    assert lines[-2].strip() == "Interrupted. Resume with:", err
    command = lines[-1].strip()
    assert command.startswith("sweep ") and "resume=" in command
    return command


def assert_resumed_completely(tmp: Path, parent_id: str) -> None:
    client, parent, children = mlflow_runs(tmp)
    assert parent.info.run_id == parent_id and parent.info.status == "FINISHED"
    trial_ids = [c.data.tags["sweep.trial_id"] for c in children]
    assert len(children) == 3 and len(set(trial_ids)) == 3, trial_ids  # no duplicates
    for child in children:
        why = child.data.tags.get("sweep.error", "")
        assert child.info.status == "FINISHED", (child.data.tags["sweep.trial_id"], why)
        assert child.data.tags["sweep.end_reason"] == "completed"
        history = client.get_metric_history(child.info.run_id, "val_acc")
        assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1))
    (folder,) = (tmp / "sweeps" / NAME).iterdir()
    table = pd.read_csv(folder / "results.csv")
    assert len(table) == 3 and set(table["end_reason"]) == {"completed"}
    assert not (folder / "tune" / SPARE_DIR).exists()  # the spare checkpoints went at the end


def test_sigkill_then_resume_reruns_nothing_and_duplicates_nothing(tmp_path) -> None:
    proc = start(tmp_path)

    def one_done_one_running() -> bool:
        epochs = list(epochs_by_trial(tmp_path).values())
        return any(e[-1] == EPOCHS for e in epochs) and any(e[-1] < EPOCHS for e in epochs)

    wait_until(one_done_one_running)
    proc.send_signal(signal.SIGKILL)
    code, _, _ = finish(proc)
    assert code == -signal.SIGKILL
    _, parent, _ = mlflow_runs(tmp_path)
    before = epochs_by_trial(tmp_path)
    done = [t for t, e in before.items() if e[-1] == EPOCHS]
    # The kill may land while Tune's syncer copies its state: that copy is then cut short.
    (experiment,) = (tmp_path / "sweeps" / NAME).glob("*/tune")
    assert cut_short(experiment)

    proc2 = run_sweep(FAULTY, *sweep_args(tmp_path), "resume=true")
    assert proc2.returncode == 0, proc2.stdout + proc2.stderr
    assert "Resuming sweep" in proc2.stdout
    assert_resumed_completely(tmp_path, parent.info.run_id)
    after = epochs_by_trial(tmp_path)
    for trial_id in done:  # finished before the kill: not run again
        assert after[trial_id] == before[trial_id]
    for epochs in after.values():  # each epoch once: none restarted, repeated or lost
        assert epochs == list(range(1, len(epochs) + 1)), epochs

    # Resuming a finished sweep says so and changes nothing.
    _, parent, children = mlflow_runs(tmp_path)
    proc3 = run_sweep(FAULTY, *sweep_args(tmp_path), "resume=true")
    assert proc3.returncode == 0, proc3.stderr
    assert "already finished; nothing to resume" in proc3.stdout
    _, parent_again, children_again = mlflow_runs(tmp_path)
    assert parent_again.info == parent.info
    assert [c.info for c in children_again] == [c.info for c in children]
