"""The best trial's model in MLflow: logged on the parent run, loadable with
``mlflow.pytorch``, predicting what its checkpoint predicts; registered under
``register_model=<name>`` with the parent run as its source; and a model that cannot be
logged is a warning, never a failed sweep."""

from __future__ import annotations

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


def test_a_model_that_cannot_be_logged_is_a_warning(tmp_path: Path, composed) -> None:
    """``publish`` on a checkpoint that is not there: a warning naming why, nothing raised,
    no model on the run, and the run still open for the sweep to end."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri, "exp")
    run_id = tracker.start_parent("sweep now", tmp_path, {}, {})
    raw = composed()
    load_settings(raw)  # names the sweep, as the driver does before taking the config
    cfg = apply_values(portable_config(raw), {})  # as a trial gets it
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        wait = best_model.publish(cfg, str(tmp_path / "gone"), uri, run_id, "digits")
        where, warning = wait()
    finally:
        ray.shutdown()
    assert where == ""
    assert warning is not None
    assert warning.startswith("the best model was not logged to MLflow (FileNotFoundError: ")
    client = MlflowClient(uri)
    assert client.get_run(run_id).info.status == "RUNNING"
    assert client.search_registered_models() == []
