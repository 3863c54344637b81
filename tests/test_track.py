"""The tracker against a real SQLite store, without Ray: the run model a sweep writes
(parent, stage runs, child runs), found again by tags, closed the way interrupts and
resumes need."""

from __future__ import annotations

import ast
import contextlib
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from sweep.track import tags
from sweep.track.tracker import MAX_TAGS_PER_BATCH, Tracker, download


@pytest.fixture
def store(tmp_path: Path) -> tuple[Tracker, MlflowClient]:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri, "exp")
    tracker.start_parent("sweep now", tmp_path, {tags.SEED: "0"}, {"model.lr": 0.01})
    return tracker, MlflowClient(uri)


def test_parent_run_holds_params_tags_and_the_folder(store, tmp_path: Path) -> None:
    tracker, client = store
    parent = client.get_run(tracker.parent_run_id)
    assert parent.data.params == {"model.lr": "0.01"}
    assert parent.data.tags[tags.SWEEP_DIR] == str(tmp_path)
    assert parent.data.tags[tags.SEED] == "0"
    assert parent.info.status == "RUNNING"
    # A second tracker on the same store reuses the experiment.
    assert Tracker(tracker.uri, "exp").experiment_id == tracker.experiment_id


def test_a_trial_run_is_found_again_not_duplicated(store) -> None:
    tracker, client = store
    first = tracker.open_child("t1", "trial 001", {"model.lr": 0.02})
    tracker.close_child("t1", "KILLED", {tags.END_REASON: "killed"})
    again = Tracker(tracker.uri, "exp")  # a resumed driver: nothing cached
    again.resume_parent(tracker.parent_run_id)
    assert again.child_run("t1") == first
    assert again.open_child("t1", "trial 001", {"model.lr": 0.02}) == first
    run = client.get_run(first)
    assert run.info.status == "RUNNING"
    assert run.data.tags[tags.PARENT] == tracker.parent_run_id
    assert run.data.tags[tags.TRIAL_ID] == "t1"
    assert len(tracker.sweep_runs()) == 1


def test_closing_a_failed_trial_keeps_its_traceback(store) -> None:
    tracker, client = store
    run_id = tracker.open_child("t1", "trial 001", {})
    tracker.close_child("t1", "FAILED", {tags.END_REASON: "error"}, error="Traceback ...\nBoom")
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags[tags.END_REASON] == "error"
    assert [a.path for a in client.list_artifacts(run_id)] == ["error.txt"]


def test_metrics_steps_are_read_back(store) -> None:
    """The driver that made a run knows its last step without asking the store; a resumed
    driver reads the same from the store, and both match what MLflow holds."""
    tracker, client = store
    run_id = tracker.open_child("t1", "trial 001", {})
    assert tracker.last_step(run_id, "val_acc") == 0
    for step in (1, 2, 3):
        tracker.log_metrics({"val_acc": 0.5 + step / 10}, step=step, run_id=run_id)
    assert tracker.last_step(run_id, "val_acc") == 3
    history = client.get_metric_history(run_id, "val_acc")
    assert sorted(m.step for m in history) == [1, 2, 3]
    resumed = Tracker(tracker.uri, "exp")
    resumed.resume_parent(tracker.parent_run_id)
    assert resumed.child_run("t1") == run_id
    assert resumed.last_step(run_id, "val_acc") == 3
    resumed.log_metrics({"val_acc": 0.9}, step=4, run_id=run_id)
    assert resumed.last_step(run_id, "val_acc") == 4
    # A trial the new sweep never opened has no run, whoever asks.
    assert tracker.child_run("t2") is None and resumed.child_run("t2") is None


def test_tags_ride_with_an_epochs_metrics(store) -> None:
    """An epoch's tags (where the trial runs) are written with its metrics, in one batch;
    without metrics they are still written, and more than a batch holds are all kept."""
    tracker, client = store
    run_id = tracker.open_child("t1", "trial 001", {})
    where = {tags.NODE: "host-a", tags.DEVICE: "cpu"}
    tracker.log_metrics({"val_acc": 0.7, "val_loss": 0.4}, step=1, run_id=run_id, tags=where)
    tracker.log_metrics({}, step=2, run_id=run_id, tags={"sweep.note": "only a tag"})
    many = {f"sweep.k{i:03d}": str(i) for i in range(MAX_TAGS_PER_BATCH + 5)}
    tracker.log_metrics({"val_acc": 0.8}, step=3, run_id=run_id, tags=many)
    run = client.get_run(run_id)
    assert run.data.metrics == {"val_acc": 0.8, "val_loss": 0.4}
    assert {k: run.data.tags[k] for k in where} == where
    assert run.data.tags["sweep.note"] == "only a tag"
    assert all(run.data.tags[k] == v for k, v in many.items())
    assert sorted(m.step for m in client.get_metric_history(run_id, "val_acc")) == [1, 3]


def test_stage_runs_nest_trials_and_a_finished_stage_is_not_reopened(store) -> None:
    tracker, client = store
    stage = tracker.stage_run("r1", "round 1/2", {tags.ROUND: "1"}, {"search_space.x": "[0, 1]"})
    tracker.nest_trials_under(stage, {tags.STAGE: "r1"})
    trial = tracker.open_child("t1", "trial 001", {})
    assert client.get_run(trial).data.tags[tags.PARENT] == stage
    assert client.get_run(trial).data.tags[tags.STAGE] == "r1"
    tracker.end_run("FINISHED", stage)
    assert tracker.stage_run("r1", "round 1/2", {}, {}, reopen=False) == stage
    assert client.get_run(stage).info.status == "FINISHED"
    assert tracker.stage_run("r1", "round 1/2", {}, {}) == stage  # resumed: RUNNING again
    assert client.get_run(stage).info.status == "RUNNING"


def test_an_interrupt_kills_every_open_run_at_any_depth(store) -> None:
    tracker, client = store
    direct = tracker.open_child("t0", "trial 000", {})
    tracker.close_child("t0", "FINISHED", {tags.END_REASON: "completed"})
    stage = tracker.stage_run("r1", "round 1/2", {}, {})
    tracker.nest_trials_under(stage, {tags.STAGE: "r1"})
    nested = tracker.open_child("t1", "trial 001", {})
    tracker.kill_open_runs("killed")
    assert client.get_run(direct).info.status == "FINISHED"  # what ended stays as it ended
    assert client.get_run(nested).info.status == "KILLED"
    assert client.get_run(nested).data.tags[tags.END_REASON] == "killed"
    assert client.get_run(stage).info.status == "KILLED"
    assert tags.END_REASON not in client.get_run(stage).data.tags
    assert client.get_run(tracker.parent_run_id).info.status == "KILLED"


def test_stale_trial_runs_are_closed_as_tune_recorded_them(store) -> None:
    tracker, client = store
    stale = tracker.open_child("t1", "trial 001", {})
    other = tracker.open_child("t2", "trial 002", {})
    tracker.close_stale_children({"t1": ("stopped_early", "FINISHED")})
    assert client.get_run(stale).info.status == "FINISHED"
    assert client.get_run(stale).data.tags[tags.END_REASON] == "stopped_early"
    assert client.get_run(other).info.status == "RUNNING"  # Tune knows nothing of it


def test_discard_leaves_nothing_of_a_new_sweep_and_keeps_a_resumed_parent(
    store, tmp_path: Path
) -> None:
    tracker, client = store
    child = tracker.open_child("t1", "trial 001", {})
    (tmp_path / "table.csv").write_text("a\n1\n")
    tracker.log_artifact(tmp_path / "table.csv", run_id=child)
    artifacts = Path(client.get_run(child).info.artifact_uri)
    assert (artifacts / "table.csv").is_file()
    tracker.discard(keep_parent=True)  # a resumed sweep: its parent stays, FAILED
    with pytest.raises(MlflowException):
        client.get_run(child)  # gone for good, not soft-deleted
    assert not artifacts.parent.exists()
    assert client.get_run(tracker.parent_run_id).info.status == "FAILED"
    tracker.discard(keep_parent=False)  # a new sweep: its experiment goes too
    with pytest.raises(MlflowException):
        client.get_run(tracker.parent_run_id)
    assert client.get_experiment_by_name("exp") is None


def test_two_trackers_open_a_new_store_at_once(tmp_path: Path) -> None:
    """Two sweeps started together on a SQLite file that does not exist yet."""
    uri = f"sqlite:///{tmp_path}/new.db"
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda name: Tracker(uri, name), ["one", "two"])
    assert {a.experiment_id, b.experiment_id} == {"1", "2"}


def test_writer_runs_calls_in_order_and_keeps_errors(store) -> None:
    tracker, _ = store
    seen: list[int] = []
    for i in range(5):
        tracker.writer.submit(lambda i=i: seen.append(i))
    tracker.writer.submit(lambda: 1 / 0)
    tracker.writer.flush()
    assert seen == [0, 1, 2, 3, 4]
    assert tracker.writer.errors == ["ZeroDivisionError: division by zero"]


def test_runs_name_their_source_and_the_data_they_saw(store) -> None:
    """The runs table's Source and Dataset columns: the command and commit, and one input
    per split, whose digest changes exactly when the examples would."""
    tracker, client = store
    data = {"_target_": "models.digits.DigitsDataModule", "name": "digits", "seed": 0}
    tracker.record_provenance("sweep num_samples=4", "abc123", data)
    child = client.get_run(tracker.open_child("t1", "trial 001", {}))
    assert child.data.tags[tags.SOURCE_NAME] == "sweep num_samples=4"
    assert child.data.tags[tags.SOURCE_TYPE] == "LOCAL"
    assert child.data.tags[tags.GIT_COMMIT] == "abc123"
    inputs = {i.tags[0].value: i.dataset for i in child.inputs.dataset_inputs}
    assert sorted(inputs) == ["training", "validation"]
    assert inputs["training"].name == "digits-train"
    assert '"_target_": "models.digits.DigitsDataModule"' in inputs["training"].source
    assert inputs["training"].digest != inputs["validation"].digest
    # Another seed splits the examples differently: another digest.
    tracker.record_provenance("sweep seed=1", None, {**data, "seed": 1})
    other = client.get_run(tracker.open_child("t2", "trial 002", {}))
    assert tags.GIT_COMMIT not in other.data.tags
    digests = {i.tags[0].value: i.dataset.digest for i in other.inputs.dataset_inputs}
    assert digests["training"] != inputs["training"].digest


def test_artifacts_go_beside_the_sqlite_file_whatever_folder_the_sweep_runs_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    tracker = Tracker(f"sqlite:///{tmp_path}/store/mlflow.db", "my sweep/1")
    tracker.start_parent("sweep now", tmp_path, {}, {})
    (tmp_path / "table.csv").write_text("a\n1\n")
    tracker.log_artifact(tmp_path / "table.csv")
    tracker.writer.close()
    (folder,) = (tmp_path / "store" / "mlruns").iterdir()
    assert folder.name.startswith("my_sweep_1-")  # one folder per name, safe on any disk
    assert list(folder.glob("*/artifacts/table.csv"))
    assert list((tmp_path / "elsewhere").iterdir()) == []  # not ./mlruns of the folder


def schema(path: Path) -> list[tuple]:
    """A SQLite file's tables, indexes and triggers as created (each one's lines sorted:
    MLflow's own migrations list a table's constraints in an order that changes with the
    process's hash seed), and its Alembic revision."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        made = db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
        revision = db.execute("SELECT * FROM alembic_version").fetchall()
    lines = [
        (kind, name, sorted(line.strip().rstrip(",").strip() for line in (sql or "").split("\n")))
        for kind, name, sql in made
    ]
    return [*lines, *revision]


def test_a_new_store_is_a_copy_of_mlflow_s_own_empty_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new SQLite store starts as a copy of an empty one made once in the user's cache
    (sweep/track/tracker.py): the same schema MLflow builds, the same Default experiment,
    and a store that takes runs."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # MLflow puts the Default experiment's artifacts under it
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    copied = Tracker(f"sqlite:///{tmp_path}/a/mlflow.db", "exp")
    (template,) = (tmp_path / "cache" / "sweep").glob("mlflow-*.db")
    made = template.stat().st_mtime_ns
    own = MlflowClient(f"sqlite:///{tmp_path}/b/mlflow.db")  # MLflow builds this one itself
    assert schema(tmp_path / "a" / "mlflow.db") == schema(tmp_path / "b" / "mlflow.db")
    default, mlflow_s = copied._client.get_experiment("0"), own.get_experiment("0")
    assert (default.name, default.artifact_location) == ("Default", mlflow_s.artifact_location)

    copied.start_parent("sweep now", tmp_path, {}, {"model.lr": 0.01})
    run = MlflowClient(copied.uri).get_run(copied.parent_run_id)
    assert run.data.params == {"model.lr": "0.01"}
    # The next new store copies the same template; nothing is left beside either.
    (tmp_path / "c").mkdir()
    Tracker(f"sqlite:///{tmp_path}/c/mlflow.db", "exp")
    assert template.stat().st_mtime_ns == made
    assert sorted(p.name for p in template.parent.iterdir()) == [template.name]
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["mlflow.db"]


def test_a_cache_that_cannot_be_written_leaves_the_schema_to_mlflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cache").write_text("a file, not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "store").mkdir()
    tracker = Tracker(f"sqlite:///{tmp_path}/store/mlflow.db", "exp")
    tracker.start_parent("sweep now", tmp_path, {}, {})
    assert MlflowClient(tracker.uri).get_run(tracker.parent_run_id).info.status == "RUNNING"
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["mlflow.db"]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_only_the_tracking_package_imports_mlflow() -> None:
    """Every MLflow call and tag name lives in sweep/track/: a module elsewhere that
    imports mlflow (even inside a function) is a second way into the store."""
    sweep = Path(__file__).resolve().parent.parent / "sweep"
    outside = {
        str(path.relative_to(sweep))
        for path in sweep.rglob("*.py")
        if path.parent.name != "track"
        and any(name.split(".")[0] == "mlflow" for name in imported_modules(path))
    }
    assert outside == set()
    assert "mlflow" in imported_modules(sweep / "track" / "model.py")  # the scan sees inside


def test_a_run_s_file_comes_back_or_none(store, tmp_path: Path) -> None:
    """How a warm start reads an earlier sweep's results.csv from its parent run."""
    tracker, _ = store
    (tmp_path / "results.csv").write_text("model.lr,val_acc\n0.01,0.9\n")
    tracker.log_artifact(tmp_path / "results.csv")
    into = tmp_path / "into"
    into.mkdir()
    got = download(tracker.uri, tracker.parent_run_id, "results.csv", str(into))
    assert got is not None and got.read_text() == "model.lr,val_acc\n0.01,0.9\n"
    assert download(tracker.uri, tracker.parent_run_id, "best.yaml", str(into)) is None
    assert download(tracker.uri, "0" * 32, "results.csv", str(into)) is None
