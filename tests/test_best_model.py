"""The best trial's model in MLflow: logged on the parent run, loadable with
``mlflow.pytorch``, predicting what its checkpoint predicts; registered under
``register_model=<name>`` with the parent run as its source; and a model that cannot be
logged is a warning, never a failed sweep."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import mlflow
import mlflow.pytorch
import pytest
import ray
import torch
import yaml
from mlflow.tracking import MlflowClient

from sweep.config.settings import load_settings
from sweep.config.space import apply_values, portable_config
from sweep.report import model as best_model
from sweep.run.trial import CHECKPOINT_FILE, build
from sweep.track.tracker import Tracker
from tests.conftest import run_sweep, sweep_folders


@pytest.mark.slow
def test_the_best_model_is_registered_and_predicts_like_its_checkpoint(tmp_path: Path) -> None:
    proc = run_sweep(tmp_path, "num_samples=2", "trainer.max_epochs=2", "register_model=digits_mlp")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == "", proc.stderr
    assert "(registered: models:/digits_mlp/1)" in proc.stdout
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("mlp_digits")
    parent = next(
        r
        for r in client.search_runs([experiment.experiment_id])
        if "mlflow.parentRunId" not in r.data.tags
    )
    assert parent.info.status == "FINISHED"  # logging the model left the run to the sweep
    version = client.get_model_version("digits_mlp", "1")
    assert version.run_id == parent.info.run_id

    mlflow.set_tracking_uri(uri)
    info = mlflow.models.get_model_info("models:/digits_mlp/1")
    assert info.signature is not None and info.saved_input_example_info is not None
    logged = mlflow.pytorch.load_model("models:/digits_mlp/1")

    # The checkpoint the summary names, rebuilt from best.yaml as the user would.
    folder = sweep_folders(tmp_path)[-1]
    cfg = yaml.safe_load((folder / "best.yaml").read_text())
    checkpoint = next(
        line.split()[-1]
        for line in proc.stdout.splitlines()
        if line.strip().startswith("checkpoint")
    )
    model, datamodule = build(cfg)
    state = torch.load(Path(checkpoint) / CHECKPOINT_FILE, weights_only=False)
    model.load_state_dict(state["state_dict"])
    model.eval()
    inputs = torch.as_tensor(best_model.input_example(datamodule))
    with torch.no_grad():
        torch.testing.assert_close(logged(inputs), model(inputs))


def a_trial_worker(logger: best_model.WarmLogger, fork: bool = True) -> None:
    """A process with torch and Lightning imported, as a trial's worker has them, that
    asks ``logger`` at its start (with ``fork=False``: is chosen, then ends, forking
    nothing), and ends once the driver's side holds the connection."""
    assert logger.address is not None and logger.address.startswith("\0")
    if fork:
        ask = "fork_logger(address, sys.argv[2:], None)"
    else:
        ask = "c = socket.socket(socket.AF_UNIX); c.connect(address); assert c.recv(1) == b'1'"
    code = (
        "import socket, sys, lightning\n"
        "from sweep.report.model import fork_logger\n"
        f"address = chr(0) + sys.argv[1]\n{ask}"
    )
    name = logger.address[1:]  # an abstract name: a NUL, which no argument can hold, first
    subprocess.run([sys.executable, "-c", code, name, *logger.targets], check=True, timeout=120)
    deadline = time.monotonic() + 30
    while logger.fork is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert logger.fork is not None


def parent_run(tmp_path: Path, composed) -> tuple[str, str, dict]:
    """A real SQLite store with a sweep's parent run, and the config a trial gets."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_id = Tracker(uri, "exp").start_parent("sweep now", tmp_path, {}, {})
    raw = composed()
    load_settings(raw)  # names the sweep, as the driver does before taking the config
    return uri, run_id, apply_values(portable_config(raw), {})  # as a trial gets it


def test_a_copy_of_a_trial_s_worker_logs_the_model_without_ray(tmp_path: Path, composed) -> None:
    """The logger the driver uses on its own machine: a fork of the first trial's worker,
    which outlives that worker, logs the model the driver names, and answers; no Ray."""
    uri, run_id, cfg = parent_run(tmp_path, composed)
    model, datamodule = build(cfg)
    (tmp_path / "ckpt").mkdir()
    torch.save({"state_dict": model.state_dict()}, tmp_path / "ckpt" / CHECKPOINT_FILE)
    logger = best_model.WarmLogger(cfg, uri)
    a_trial_worker(logger)  # forks its copy, then ends
    where, warning = best_model.publish(cfg, str(tmp_path / "ckpt"), uri, run_id, None, logger)()
    assert warning is None and where.startswith("models:/m-"), (where, warning)
    assert not ray.is_initialized()
    mlflow.set_tracking_uri(uri)
    logged = mlflow.pytorch.load_model(where)
    inputs = torch.as_tensor(best_model.input_example(datamodule))
    with torch.no_grad():
        torch.testing.assert_close(logged(inputs), model.eval()(inputs))
    assert MlflowClient(uri).get_run(run_id).info.status == "RUNNING"  # the sweep ends it
    # What the copy cannot log, it says why, as the actor would.
    logger = best_model.WarmLogger(cfg, uri)
    a_trial_worker(logger)
    where, warning = best_model.publish(cfg, str(tmp_path / "gone"), uri, run_id, None, logger)()
    assert where == "" and not ray.is_initialized()
    assert warning is not None
    assert warning.startswith("the best model was not logged to MLflow (FileNotFoundError: ")


def test_a_model_that_cannot_be_logged_is_a_warning(tmp_path: Path, composed) -> None:
    """``publish`` on a checkpoint that is not there, with the copy that was to log it
    gone: the Ray actor takes over, and the result is a warning naming why, nothing
    raised, no model on the run, and the run still open for the sweep to end."""
    uri, run_id, cfg = parent_run(tmp_path, composed)
    logger = best_model.WarmLogger(cfg, uri)
    a_trial_worker(logger, fork=False)
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        wait = best_model.publish(cfg, str(tmp_path / "gone"), uri, run_id, "digits", logger)
        where, warning = wait()
    finally:
        ray.shutdown()
    assert where == ""
    assert warning is not None
    assert warning.startswith("the best model was not logged to MLflow (FileNotFoundError: ")
    client = MlflowClient(uri)
    assert client.get_run(run_id).info.status == "RUNNING"
    assert client.search_registered_models() == []
