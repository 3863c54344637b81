"""Bad input: every mistake is one line ``error: <key>: <value/what> ... <fix>``, exit code 2,
and nothing started or written (no MLflow store, no sweep folder).

Most cases run the validation in this process (Hydra's compose API + ``driver.run``), which
is what the command does after composing; a few run the real ``sweep`` command, including
Hydra's own composition errors, which the command turns into the same one line."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest

from sweep import driver
from sweep.errors import ConfigError
from tests.conftest import run_sweep

GRID_TPE = ("+search_space.model.layers={type: grid, values: [1, 2]}", "searcher=tpe")

# (overrides, the key the message must start with, words it must contain)
CASES: list[tuple[tuple[str, ...], str, str]] = [
    (
        ("+search_space.model.lr2={type: gaussian, low: 0, high: 1}",),
        "search_space.model.lr2",
        "unknown type 'gaussian'",
    ),
    (("search_space.model.lr.low=0.5",), "search_space.model.lr", "low (0.5) must be below high"),
    (
        ("search_space.model.lr.low=0", "search_space.model.lr.high=0.1"),
        "search_space.model.lr.low",
        "a log scale needs low > 0",
    ),
    (("search_space.model.hidden.values=[]",), "search_space.model.hidden.values", "is empty"),
    (GRID_TPE, "search_space.model.layers", "only work with searcher=random"),
    (
        ("+search_space.model.widht={type: choice, values: [1]}",),
        "search_space.model.widht",
        "not a key of the config",
    ),
    (("num_samples=0",), "num_samples", "below 1"),
    (
        ("scheduler.grace_period=8", "trainer.max_epochs=4"),
        "scheduler.grace_period",
        "exceeds trainer.max_epochs",
    ),
    (("mode=maximize",), "mode", "'maximize' is not min or max"),
    # Several objectives: a direction each, and nothing that ranks trials by one metric.
    (
        ("metric=[val_acc,param_count]",),
        "mode",
        "'max' gives 1 direction(s) for 2 metric(s); give one per metric, in the same order, "
        "e.g. mode=[max,max]",
    ),
    (("metric=[val_acc,val_acc]", "mode=[max,max]"), "metric", "names a metric twice"),
    (("metric=[]",), "metric", "names no metric"),
    (
        ("metric=[val_acc,param_count]", "mode=[max,min]", "refine_rounds=1"),
        "refine_rounds",
        "refinement ranks trials by one metric",
    ),
    (
        ("metric=[val_acc,param_count]", "mode=[max,min]", "searcher=bohb"),
        "searcher",
        "bohb models one metric; use searcher=tpe",
    ),
    (
        ("metric=[val_acc,param_count]", "mode=[max,min]", "scheduler=pbt"),
        "scheduler",
        "pbt copies trials by one metric",
    ),
    (("resources.cpu=64",), "resources.cpu", "64 CPUs per trial, but the cluster has"),
    (
        ("resources.gpu=1", "cluster.num_gpus=0"),
        "resources.gpu",
        "1 GPUs per trial, but the cluster has 0",
    ),
    (("resources.workers=0",), "resources.workers", "0 is below 1"),
    (
        ("resources.workers=3", "cluster.num_cpus=2"),
        "resources.workers",
        "3 workers per trial × 1 CPU each need 3 CPUs, but the cluster has 2; set "
        "resources.workers<=2",
    ),
    (("resources.placement=everywhere",), "resources.placement", "is not PACK or SPREAD"),
    (
        ("resources.workers=2", "scheduler=pbt"),
        "scheduler",
        "pbt copies checkpoints between trials, which multi-worker trials do not take",
    ),
    (("tracking.uri=http://127.0.0.1:9",), "tracking.uri", "unreachable"),
    (("tracking.uri=sqlite:////no/such/folder/mlflow.db",), "tracking.uri", "does not exist"),
    (("tracking.uri=file:./mlruns",), "tracking.uri", "file store is deprecated"),
    (("output_dir=/proc/sweeps",), "output_dir", "cannot write in /proc"),
    (("output_dir=/etc/hostname/sweeps",), "output_dir", "is a file, not a folder"),
    (("data=tabular", "data.path=missing.csv", "data.target=label"), "data.path", "no such file"),
    (
        ("data=tabular", "data.path=table.csv", "data.target=label"),
        "data.target",
        "has no column(s) ['label']; it has ['a', 'b', 'y']",
    ),
    (("data=tabular", "data.target=y"), "data.path", "is required (???) and not set"),
    (("resume=true",), "resume", "no sweep named 'mlp_digits'"),
    (("register_model=a/b",), "register_model", "'a/b' is not a model name"),
    (("best_model=false", "register_model=digits"), "register_model", "needs best_model=true"),
    (("best_model=maybe",), "best_model", "'maybe' is not true or false"),
    (("time_budget=soon",), "time_budget", "'soon' is not a duration"),
    (("time_budget=0m",), "time_budget", "'0m' leaves no time"),
    (("searcher.warm_start=/tmp",), "searcher.warm_start", "random search does not learn"),
    (
        ("searcher=tpe", "searcher.warm_start=nonsense"),
        "searcher.warm_start",
        "'nonsense' is neither a sweep folder nor an MLflow run id",
    ),
    (
        ("searcher=tpe", "searcher.warm_start=0123456789abcdef0123456789abcdef"),
        "searcher.warm_start",
        "no MLflow store at sqlite:///",
    ),
    (("resume=/no/such/sweep",), "resume", "or resume=true for the newest sweep"),
    # Found before Ray starts, not in every trial: imports and the types a choice replaces.
    (
        ("model._target_=nosuch.module.Model",),
        "model._target_",
        "cannot import 'nosuch.module.Model': Are you sure",
    ),
    (
        ("data._target_=models.digits.NoSuchData",),
        "data._target_",
        "cannot import 'models.digits.NoSuchData'",
    ),
    (
        ("search_space.model.hidden.values=[64,abc]",),
        "search_space.model.hidden.values",
        "'abc' is a string, but model.hidden is a number (128); list numbers only",
    ),
    (
        ("+search_space.model.lr.extra=1",),
        "search_space.model.lr.extra",
        "takes low, high (and role, when), not extra; remove it",
    ),
    (
        ("search_space.model.hidden={type: choice, values: null}",),
        "search_space.model.hidden",
        "needs values; e.g. {type: choice, values: [a, b]}",
    ),
    (("name=../../escape",), "name", "not a folder name inside output_dir"),
    (("num_samples=abc",), "num_samples", "'abc' is not a whole number; e.g. num_samples=1"),
    (("trainer.max_epochs=abc",), "trainer.max_epochs", "e.g. trainer.max_epochs=1"),
    (("data=tabular", "data.path=.", "data.target=y"), "data.path", "is a folder, not a table"),
    (
        ("cluster=remote", "cluster.address=127.0.0.1:9", "cluster.storage_path=/tmp/shared"),
        "cluster.address",
        "no Ray head answers at 127.0.0.1:9",
    ),
]


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    (tmp_path / "table.csv").write_text("a,b,y\n1,2,0\n3,4,1\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def assert_nothing_written(cwd: Path) -> None:
    assert sorted(p.name for p in cwd.iterdir()) == ["table.csv"]  # no mlflow.db, no sweeps/


@pytest.mark.parametrize(("overrides", "key", "words"), CASES, ids=[c[1] for c in CASES])
def test_bad_input_is_one_clear_error(composed, workdir, overrides, key, words) -> None:
    with pytest.raises(ConfigError) as caught:
        driver.run(composed(*overrides))
    message = str(caught.value)
    assert message.startswith(f"{key}: "), message
    assert words in message
    assert "\n" not in message
    assert_nothing_written(workdir)


def test_wrong_server_is_not_taken_for_mlflow(composed, workdir) -> None:
    """An HTTP server that is not MLflow (wrong port) is found out in one quick request."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(ConfigError, match=r"is not an MLflow tracking server \(GET /health"):
            driver.run(composed(f"tracking.uri={uri}", "tracking=server"))
    finally:
        server.shutdown()
        server.server_close()  # else an unclosed-socket ResourceWarning (an error in tests)
    assert_nothing_written(workdir)


# The real command: Hydra's errors and ours, as the user sees them.
COMMAND_CASES = [
    (("model=transformer",), "error: model: no option 'transformer'; choose one of: cnn, mlp"),
    (
        ("lr=0.1",),
        "error: lr: not a key of the config; fix the name, or add a new key with +lr=0.1",
    ),
    (("model.lr=[1,",), "error: model.lr=[1,: cannot parse this override"),
    (("~model.zzz",), "error: model.zzz: cannot remove (~) a key the config does not have"),
    (("+model=cnn",), "error: model: the group already has an option; choose it with model="),
    (("num_samples=0",), "error: num_samples: 0 is below 1; set num_samples>=1"),
    (
        ("data=tabular", "data.path=table.csv", "data.target=label"),
        "error: data.target: table.csv has no column(s) ['label']",
    ),
]


@pytest.mark.parametrize(("args", "line"), COMMAND_CASES, ids=[c[0][0] for c in COMMAND_CASES])
def test_the_command_prints_one_line_and_exits_2(tmp_path, args, line) -> None:
    (tmp_path / "table.csv").write_text("a,b,y\n1,2,0\n3,4,1\n")
    proc = run_sweep(tmp_path, *args, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith(line), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stdout == ""
    assert_nothing_written(tmp_path)


def test_a_yaml_mistake_names_the_file_and_line(tmp_path) -> None:
    """Also in a config folder named like Hydra's usual `conf/`, which must not hide ours."""
    broken = tmp_path / "conf" / "model"
    broken.mkdir(parents=True)
    (broken / "mine.yaml").write_text("_target_: models.mlp.MLPClassifier\nlr: [0.1\nhidden: 64\n")
    proc = run_sweep(tmp_path, "--config-dir", "conf", "model=mine", timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith(f"error: {broken / 'mine.yaml'}:3: "), proc.stderr
    assert "fix the YAML there" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conf"]


@pytest.mark.slow
def test_a_metric_the_model_never_logs_stops_at_the_first_report(tmp_path) -> None:
    """Only a trial can tell: the first report ends the sweep, names the metrics that exist,
    and the runs and folder it had opened are removed again."""
    proc = run_sweep(tmp_path, "metric=val_accuracy", "num_samples=2", "trainer.max_epochs=3")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line == (
        "error: metric: 'val_accuracy' is not reported by the model, which reports "
        "param_count, train_acc, train_loss, val_acc, val_loss; set metric=<one of those> "
        "(and mode)"
    )
    assert "Traceback" not in proc.stderr
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("mlp_digits")
    assert experiment is None  # runs, experiment and artifacts gone for good
    assert list((tmp_path / "sweeps" / "mlp_digits").iterdir()) == []
    assert not (tmp_path / "mlruns").exists() or not any((tmp_path / "mlruns").rglob("*.yaml"))
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
