"""Model code written elsewhere, for real: a package in lightning-hydra-template's style
(tests/examples/lht: a nested `_target_` network, `_partial_` optimizer and scheduler kept
by save_hyperparameters, metrics named `val/acc`, configs without `name:`), installed from
its own folder. What works for our models must work for it: a lost worker is retried from
its checkpoint, a killed driver resumes, nothing of a killed sweep stays alive, and its
best model loads back from MLflow."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import mlflow.pytorch
import pandas as pd
import psutil
import pytest
import torch
from hydra import compose, initialize_config_module
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf, open_dict

from sweep.config import optuna_sweeper
from sweep.config.settings import load_settings
from sweep.errors import ConfigError
from tests.conftest import REPO, Sweep, reports_in, run_sweep

pytestmark = pytest.mark.slow

LHT = REPO / "tests" / "examples" / "lht"
NAME = "digits_digits"  # no `name:` in its configs: named after its classes
EPOCHS = 8


@pytest.fixture(scope="module", autouse=True)
def lht_installed() -> None:
    """The outside package, installed as its users install it (once; fast, no deps)."""
    if importlib.util.find_spec("lht_client") is None:
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps"]
        subprocess.run([*pip, "--no-build-isolation", "-e", str(LHT)], check=True)


def args(tmp: Path, *extra: str) -> list[str]:
    return [
        "--config-dir",
        "configs",
        "model=digits",
        "data=digits",
        "search_space=digits",
        "metric=val/acc",
        "num_samples=2",
        f"trainer.max_epochs={EPOCHS}",
        "scheduler=fifo",
        "data.batch_size=8",  # slower epochs: a kill finds trials mid-flight
        f"output_dir={tmp}/sweeps",
        f"tracking.uri=sqlite:///{tmp}/mlflow.db",
        *extra,
    ]


def results(tmp: Path) -> dict[str, list[dict]]:
    """Each trial's reports so far (Tune's result.json), by trial id."""
    out = {}
    for path in (tmp / "sweeps" / NAME).glob("*/tune/train_*/result.json"):
        lines = reports_in(path)
        if lines:
            out[lines[0]["trial_id"]] = lines
    return out


def test_a_lost_worker_and_a_killed_driver_resume_an_outside_model(tmp_path: Path) -> None:
    sweep = Sweep(tmp_path, args(tmp_path), LHT)
    # A trial's worker dies (as under the OOM killer) after its second epoch's checkpoint.
    sweep.wait(lambda: any(len(r) >= 2 for r in results(tmp_path).values()))
    victim, reports = next((t, r) for t, r in results(tmp_path).items() if len(r) >= 2)
    os.kill(reports[-1]["pid"], signal.SIGKILL)
    # Its retry loads that checkpoint (the pickled network and partial optimizer in it).
    # While the trial restarts, Tune copies its result.json from storage onto itself
    # (JsonLoggerCallback._restore_from_remote: here the same file): briefly empty.
    sweep.wait(lambda: len(results(tmp_path).get(victim, [])) > len(reports) + 1)
    # Then the driver is killed outright, trials mid-flight: all it started must go too.
    ray_processes = psutil.Process(sweep.proc.pid).children(recursive=True)
    assert any("raylet" in p.name() for p in ray_processes), ray_processes
    os.kill(sweep.proc.pid, signal.SIGKILL)
    sweep.proc.wait(timeout=30)
    _, alive = psutil.wait_procs(ray_processes, timeout=30)
    assert not alive, [f"{p.pid} {p.name()}" for p in alive]

    proc = run_sweep(LHT, *args(tmp_path, "resume=true"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Resuming sweep" in proc.stdout and "Best: trial" in proc.stdout
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name(NAME).experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2 and len(runs) == 3
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["sweep.end_reason"] == "completed"
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val/acc")]
        assert sorted(steps) == list(range(1, EPOCHS + 1))
    retried = next(c for c in children if c.data.tags["sweep.trial_id"] == victim)
    assert retried.data.tags["sweep.retries"] == "1"
    for reports in results(tmp_path).values():  # every trial to its last epoch, no restart
        epochs = [int(r["epoch"]) for r in reports]
        assert epochs[-1] == EPOCHS and epochs.count(1) == 1, epochs
    # Its best model (a nested network, a partial optimizer in its hparams) is in MLflow.
    model_uri = next(line.split()[1] for line in proc.stdout.splitlines() if "  model  " in line)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    logged = mlflow.pytorch.load_model(model_uri)
    assert logged(torch.zeros(3, 64)).shape == (3, 10)


def test_a_model_that_cannot_be_built_stops_the_sweep_in_one_line(tmp_path: Path) -> None:
    """An error in building the model recurs in every trial and retry: the first one stops
    the sweep with one line naming the key, and leaves nothing behind."""
    proc = run_sweep(LHT, *args(tmp_path, "+model.net.width=3"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: model: "), proc.stderr
    assert "unexpected keyword argument 'width'" in lines[-1]
    assert lines[-1].endswith("; fix the model config")
    assert "retry" not in proc.stderr and "Traceback" not in proc.stderr
    assert list((tmp_path / "sweeps" / NAME).iterdir()) == []
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert client.get_experiment_by_name(NAME) is None


# ---- a Hydra Optuna sweeper file, as the template writes hparams_search/*.yaml ----------
OPTUNA_FILE = ["--config-dir", "configs", "model=digits", "data=digits"]


def composed_with_file(*overrides: str) -> tuple[DictConfig, dict]:
    """The composed config and its ``hydra.sweeper``, as `sweep --config-dir configs` sees them."""
    searchpath = f"hydra.searchpath=[file://{LHT / 'configs'}]"
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[searchpath, *OPTUNA_FILE[2:], "hparams_search=digits_optuna", *overrides],
            return_hydra_config=True,
        )
    sweeper = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
    with open_dict(cfg):
        del cfg["hydra"]
    assert isinstance(sweeper, dict)
    return cfg, sweeper


def test_a_hydra_optuna_sweeper_file_becomes_the_sweeps_space_and_settings() -> None:
    cfg, sweeper = composed_with_file()
    notices = optuna_sweeper.apply(cfg, sweeper, given={"model", "data", "hparams_search"})
    settings = load_settings(cfg)
    dims = {d.key: d for d in settings.dims}
    assert (dims["model.optimizer.lr"].type, dims["model.optimizer.lr"].low) == ("loguniform", 1e-4)
    assert dims["model.optimizer.lr"].high == 0.1
    assert dims["data.batch_size"].values == (32, 64, 128)
    lin2 = dims["model.net.lin2_size"]  # range(32, 128, 32): Optuna's IntDistribution, 128 in
    assert (lin2.type, lin2.low, lin2.high, lin2.q) == ("qrandint", 32, 128, 32)
    decay = dims["model.optimizer.weight_decay"]
    assert (decay.type, decay.low, decay.high) == ("uniform", 0.0, 0.001)
    assert len(dims) == 5  # the file's params are the whole space
    assert (settings.metric, settings.mode, settings.num_samples) == ("val/acc", "max", 20)
    assert (settings.searcher.name, settings.searcher.n_startup_trials) == ("tpe", 10)
    assert settings.seed == 1234
    assert notices == [
        "hydra.sweeper.n_jobs: not used here; trials run in parallel on Ray, as resources "
        "allow (max_concurrent caps them)"
    ]
    # What the command line sets wins over the file.
    cfg, sweeper = composed_with_file("num_samples=4", "searcher=random")
    optuna_sweeper.apply(cfg, sweeper, given={"num_samples", "searcher"})
    settings = load_settings(cfg)
    assert (settings.num_samples, settings.searcher.name) == (4, "random")


@pytest.mark.parametrize(
    "override,key,words",
    [
        ("hydra.sweeper.direction=[maximize,minimize]", "hydra.sweeper.direction", "one objective"),
        ("+hydra.sweeper.params.lr='choice(32'", "hydra.sweeper.params.lr", "is not a sweep"),
    ],
)  # fmt: skip
def test_what_a_sweep_cannot_read_is_one_line(override: str, key: str, words: str) -> None:
    cfg, sweeper = composed_with_file(override)
    with pytest.raises(ConfigError) as error:
        optuna_sweeper.apply(cfg, sweeper, given=set())
    assert error.value.key == key and words in str(error.value)


def test_the_template_s_optuna_file_runs_unchanged_on_ray(tmp_path: Path) -> None:
    proc = run_sweep(
        LHT,
        *OPTUNA_FILE,
        "hparams_search=digits_optuna",
        "hydra.sweeper.n_trials=3",
        "trainer.max_epochs=2",
        "best_model=false",
        f"output_dir={tmp_path}/sweeps",
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == "", proc.stderr
    assert proc.stdout.startswith("hydra.sweeper.n_jobs: not used here")
    assert "3 trials × ≤2 epochs, tpe search, ASHA" in proc.stdout
    (folder,) = (tmp_path / "sweeps" / NAME).iterdir()
    table = pd.read_csv(folder / "results.csv")
    assert len(table) == 3 and table["best_val/acc"].notna().all()
    assert table["model.optimizer.lr"].between(1e-4, 0.1).all()
    assert set(table["model.net.lin2_size"]) <= {32, 64, 96, 128}
    assert set(table["data.batch_size"]) <= {32, 64, 128}
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name(NAME)
    runs = client.search_runs([experiment.experiment_id], "tags.`sweep.trial_id` != ''")
    assert len(runs) == 3 and all("val/acc" in r.data.metrics for r in runs)
    assert {r.data.params["model.net.lin2_size"] for r in runs} <= {"32", "64", "96", "128"}


def test_an_outside_model_s_metrics_make_a_pareto_front(tmp_path: Path) -> None:
    """Two of the template's metrics (``val/acc`` up, ``val/loss`` down) as objectives: the
    front is computed from its names, and a front config re-trains its nested model."""
    sweep = args(tmp_path, "metric=[val/acc,val/loss]", "mode=[max,min]", "searcher=tpe")
    sweep = [a for a in sweep if a != "metric=val/acc" and not a.startswith("trainer.")]
    proc = run_sweep(LHT, *sweep, "trainer.max_epochs=2", "num_samples=4", "best_model=false")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Pareto front (val/acc max, val/loss min):" in proc.stdout, proc.stdout
    (folder,) = (tmp_path / "sweeps" / NAME).iterdir()
    table = pd.read_csv(folder / "results.csv")
    assert table["val/loss"].notna().all() and table["pareto_front"].any()
    first = min(int(n) for n in table.loc[table["pareto_front"], "trial"])
    retrain = run_sweep(
        LHT,
        "--config-dir",
        str(folder / "front"),
        "--config-name",
        f"trial-{first:03d}",
        "single_trial=true",
    )
    assert retrain.returncode == 0, retrain.stdout + retrain.stderr
    # The same config, not bit for bit the same run: a trial's torch uses resources.cpu
    # threads, this process all of them.
    accuracy = float(table.loc[table["trial"] == first, "best_val/acc"].iloc[0])
    last = retrain.stdout.strip().splitlines()[-1]
    assert last.startswith("best val/acc: "), retrain.stdout
    assert abs(float(last.split()[2]) - accuracy) < 0.02, (last, accuracy)
