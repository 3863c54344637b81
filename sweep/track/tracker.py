"""The sweep's MLflow runs: one parent run per sweep, a nested run per stage of a staged
sweep, one nested child run per trial.

Writes from Tune's callbacks go through one background thread, in order, so a slow
tracking server never stalls Ray's event loop. Child runs are found again by their
``sweep.trial_id`` tag, so a retried trial or a resumed sweep continues its runs instead
of duplicating them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import queue
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

from sweep.track import tags as tag

# MLflow's own limits per log_batch call.
MAX_PARAMS_PER_BATCH = 100
MAX_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 5000
RUNNING = RunStatus.to_string(RunStatus.RUNNING)


class Writer:
    """Runs MLflow calls on one background thread, in submission order."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Callable[[], object] | None] = queue.Queue()
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._loop, name="mlflow-writer", daemon=True)
        self._thread.start()

    def submit(self, call: Callable[[], object]) -> None:
        self._queue.put(call)

    def flush(self) -> None:
        """Block until everything submitted so far is written."""
        self._queue.join()

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        while True:
            call = self._queue.get()
            try:
                if call is None:
                    return
                call()
            except Exception as exc:  # keep the sweep alive; report at the end
                self.errors.append(f"{type(exc).__name__}: {exc}")
            finally:
                self._queue.task_done()


class Tracker:
    """The sweep's MLflow experiment, parent run, stage runs and child runs."""

    def __init__(self, uri: str, experiment_name: str) -> None:
        self.uri = uri
        # Opening a new SQLite file creates its schema: two sweeps started at once would
        # both migrate it, and one would fail. One at a time, then.
        with _store_lock(uri):
            _new_sqlite_from_template(uri)
            self._client = MlflowClient(tracking_uri=uri)
            experiment = self._client.get_experiment_by_name(experiment_name)
            self.created_experiment = experiment is None
            self.experiment_id = (
                self._client.create_experiment(
                    experiment_name, artifact_location(uri, experiment_name)
                )
                if experiment is None
                else experiment.experiment_id
            )
        self.writer = Writer()
        self.parent_run_id = ""
        # Trials nest under the parent, or under a stage run (a refinement round or a
        # scientific value, see sweep/stages.py) with the stage's tags.
        self._trials_parent = ""
        self._trial_tags: dict[str, str] = {}
        self._child_runs: dict[str, str] = {}
        # A parent this process created has under it only runs this process created: no
        # trial run to search for, and each one's last step is known (every lookup is a
        # query, and trivial trials at scale are bound by the driver's CPU).
        self._parent_is_new = False
        self._new_runs: dict[str, int] = {}  # run id → the last step this process logged
        self._source: dict[str, str] = {}
        self._inputs: list[DatasetInput] = []

    def record_provenance(self, command: str, commit: str | None, data: Mapping[str, Any]) -> None:
        """Every run created from now on names the command and commit it came from (the
        runs table's Source column) and the data it trained and validated on (the Dataset
        column): ``data`` is the composed config's data section."""
        self._source = {tag.SOURCE_NAME: command, tag.SOURCE_TYPE: "LOCAL"}
        if commit:
            self._source[tag.GIT_COMMIT] = commit
        self._inputs = [_data_input(data, split) for split in ("training", "validation")]

    # ---- parent run -------------------------------------------------------------------
    def start_parent(
        self, run_name: str, sweep_dir: Path, tags: Mapping[str, str], params: Mapping[str, Any]
    ) -> str:
        """``params``: the composed config, flattened to dotted keys."""
        self.parent_run_id = self._create(run_name, {tag.SWEEP_DIR: str(sweep_dir), **tags}, params)
        self._parent_is_new = True
        return self.parent_run_id

    def resume_parent(self, run_id: str) -> None:
        self.parent_run_id = run_id
        self._client.update_run(run_id, status=RUNNING)

    def log_artifact(
        self, path: Path, run_id: str | None = None, artifact_path: str | None = None
    ) -> None:
        self._client.log_artifact(run_id or self.parent_run_id, str(path), artifact_path)

    def set_tags(self, tags: Mapping[str, Any], run_id: str | None = None) -> None:
        items = [RunTag(k, _text(v, MAX_TAG_LENGTH)) for k, v in tags.items()]
        for start in range(0, len(items), MAX_TAGS_PER_BATCH):
            batch = items[start : start + MAX_TAGS_PER_BATCH]
            self._client.log_batch(run_id or self.parent_run_id, tags=batch)

    def log_metrics(
        self,
        metrics: Mapping[str, float],
        step: int = 0,
        run_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> None:
        """``tags`` go in the same write as the metrics (one store transaction each: at
        many short trials the store's writes bound the driver)."""
        if tags and len(tags) > MAX_TAGS_PER_BATCH:
            self.set_tags(tags, run_id)
            tags = None
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        notes = [RunTag(k, _text(v, MAX_TAG_LENGTH)) for k, v in (tags or {}).items()]
        for start in range(0, max(len(items), 1), MAX_METRICS_PER_BATCH):
            batch = items[start : start + MAX_METRICS_PER_BATCH]
            if batch or notes:
                self._client.log_batch(run_id or self.parent_run_id, metrics=batch, tags=notes)
            notes = []
        if run_id in self._new_runs:
            self._new_runs[run_id] = max(self._new_runs[run_id], step)

    def end_run(self, status: str, run_id: str | None = None) -> None:
        """FINISHED, FAILED or KILLED: the parent run, or a stage run."""
        self._client.set_terminated(run_id or self.parent_run_id, status=status)

    # ---- stage runs: rounds and scientific values, between the parent and its trials ---
    def stage_run(
        self,
        slug: str,
        label: str,
        tags: Mapping[str, str],
        params: Mapping[str, Any],
        reopen: bool = True,
    ) -> str:
        """Get-or-create the nested run of a stage under the parent; ``slug`` (letters,
        digits, ``._-``) finds it again on resume. ``reopen``: mark it RUNNING again (not
        for a stage that finished before, which is only read back)."""
        run_id = self._find(tag.STAGE, slug, self.parent_run_id)
        if run_id is None:
            tags = {tag.PARENT: self.parent_run_id, tag.STAGE: slug, **tags}
            return self._create(label, tags, params)
        if reopen:
            self._client.update_run(run_id, status=RUNNING)
        return run_id

    def nest_trials_under(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Trial runs opened from now on nest under ``run_id`` and carry ``tags``. Flush the
        writer first: queued writes read this when they run."""
        self._trials_parent = run_id
        self._trial_tags = dict(tags)

    # ---- child runs (called on the writer thread) -------------------------------------
    def child_run(self, trial_id: str) -> str | None:
        """The child run of ``trial_id`` under the current stage, if one exists."""
        parent = self._trials_parent or self.parent_run_id
        run_id = self._child_runs.get(trial_id)
        if run_id is None and not self._parent_is_new:  # a resumed sweep's run, if any
            run_id = self._find(tag.TRIAL_ID, trial_id, parent)
        if run_id is not None:
            self._child_runs[trial_id] = run_id
        return run_id

    def open_child(self, trial_id: str, run_name: str, params: Mapping[str, Any]) -> str:
        """Get-or-create the trial's child run and mark it RUNNING."""
        run_id = self.child_run(trial_id)
        if run_id is not None:
            self._client.update_run(run_id, status=RUNNING)
            return run_id
        parent = self._trials_parent or self.parent_run_id
        tags = {tag.PARENT: parent, tag.TRIAL_ID: trial_id, **self._trial_tags}
        self._child_runs[trial_id] = self._create(run_name, tags, params)
        return self._child_runs[trial_id]

    def close_child(
        self, trial_id: str, status: str, tags: Mapping[str, Any], error: str | None = None
    ) -> None:
        if (run_id := self.child_run(trial_id)) is not None:
            self.set_tags(tags, run_id)
            if error:
                self._client.log_text(run_id, error, "error.txt")
            self.end_run(status, run_id)

    def drop_child(self, trial_id: str) -> None:
        """Remove a trial's run: the trial never trained (the time budget was spent)."""
        if (run_id := self.child_run(trial_id)) is not None:
            self._delete(self._client.get_run(run_id))
            self._child_runs.pop(trial_id, None)
            self._new_runs.pop(run_id, None)

    def last_step(self, run_id: str, metric: str) -> int:
        """The last step of ``metric`` logged on a run (0 if none)."""
        if run_id in self._new_runs:  # every step of it went through log_metrics above
            return self._new_runs[run_id]
        history = self._client.get_metric_history(run_id, metric)
        return max((m.step for m in history), default=0)

    # ---- the whole sweep ----------------------------------------------------------------
    def sweep_runs(self) -> list[Any]:
        """Every run under the parent: stage runs, and trial runs at either depth."""
        runs = self._client.search_runs([self.experiment_id], self._under(self.parent_run_id))
        stages = [r.info.run_id for r in runs if tag.TRIAL_ID not in r.data.tags]
        for stage in stages:
            runs += self._client.search_runs([self.experiment_id], self._under(stage))
        return runs

    def kill_open_runs(self, reason: str) -> None:
        """An interrupted sweep: every run still RUNNING ends KILLED, the parent too."""
        for run in self.sweep_runs():
            if run.info.status == RUNNING:
                if tag.TRIAL_ID in run.data.tags:
                    self.set_tags({tag.END_REASON: reason}, run.info.run_id)
                self.end_run("KILLED", run.info.run_id)
        self.end_run("KILLED")

    def close_stale_children(self, endings: Mapping[str, tuple[str, str]]) -> None:
        """A driver killed between a trial's end and its MLflow update left the run
        RUNNING; ``endings``: trial id → (end reason, MLflow status), as Tune recorded."""
        for run in self.sweep_runs():
            trial_id = run.data.tags.get(tag.TRIAL_ID)
            if run.info.status == RUNNING and trial_id in endings:
                reason, status = endings[trial_id]
                self.set_tags({tag.END_REASON: reason}, run.info.run_id)
                self.end_run(status, run.info.run_id)

    def tag_trials(self, trial_tags: Mapping[str, Mapping[str, Any]]) -> None:
        """Tags on trial runs, at whichever depth they nest; ``trial_tags``: trial id → tags."""
        for run in self.sweep_runs():
            trial_id = run.data.tags.get(tag.TRIAL_ID)
            if trial_id in trial_tags:
                self.set_tags(trial_tags[trial_id], run.info.run_id)

    def discard(self, keep_parent: bool) -> None:
        """Remove the sweep's runs: it produced nothing usable. The parent of a resumed
        sweep stays, as FAILED; a new sweep's experiment goes too when it made it. A SQLite
        store forgets them for good, artifacts included; a tracking server keeps them as
        deleted (MLflow's REST API deletes no further)."""
        runs = self.sweep_runs()
        if keep_parent:
            self.end_run("FAILED")
        else:
            runs.append(self._client.get_run(self.parent_run_id))
        for run in runs:
            self._delete(run)
        store = self._client._tracking_client.store
        if self.created_experiment and not keep_parent:
            location = self._client.get_experiment(self.experiment_id).artifact_location
            self._client.delete_experiment(self.experiment_id)
            if hasattr(store, "_hard_delete_experiment"):
                store._hard_delete_experiment(self.experiment_id)
                _remove_local(location, up=0)

    def _delete(self, run: Any) -> None:
        store = self._client._tracking_client.store  # private: the only hard delete there is
        if run.info.status == RUNNING:  # a server keeps it: not as if it still ran
            self.end_run("KILLED", run.info.run_id)
        self._client.delete_run(run.info.run_id)
        if hasattr(store, "_hard_delete_run"):
            store._hard_delete_run(run.info.run_id)
            _remove_local(run.info.artifact_uri, up=1)  # <root>/<exp>/<run>/artifacts

    def _create(self, run_name: str, tags: Mapping[str, str], params: Mapping[str, Any]) -> str:
        run_tags = {**self._source, **tags}
        run = self._client.create_run(self.experiment_id, run_name=run_name, tags=run_tags)
        run_id: str = run.info.run_id
        self._new_runs[run_id] = 0
        if self._inputs:
            self._client.log_inputs(run_id, datasets=self._inputs)
        items = [Param(k, _text(v, MAX_PARAM_LENGTH)) for k, v in params.items()]
        for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self._client.log_batch(run_id, params=items[start : start + MAX_PARAMS_PER_BATCH])
        return run_id

    def _find(self, key: str, value: str, parent: str) -> str | None:
        """The run tagged ``key`` = ``value`` under ``parent``, if one exists."""
        found = self._client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{key}` = '{value}' and {self._under(parent)}",
            max_results=1,
        )
        return found[0].info.run_id if found else None

    def _under(self, run_id: str) -> str:
        return f"tags.`{tag.PARENT}` = '{run_id}'"


def download(uri: str, run_id: str, name: str, into: str) -> Path | None:
    """The file ``name`` the run ``run_id`` holds, copied into the folder ``into``; None
    when the store has no such run, or the run no such file."""
    from mlflow.exceptions import MlflowException

    try:
        return Path(MlflowClient(uri).download_artifacts(run_id, name, into))
    except MlflowException:
        return None


def artifact_location(uri: str, experiment_name: str) -> str | None:
    """A new experiment's artifact folder on a SQLite store: ``mlruns/<experiment>`` beside
    the database file. MLflow's default, ``./mlruns`` of the folder the command runs in,
    scatters one store's artifacts over every folder it is used from. A server picks its
    own (None)."""
    store = _sqlite_folder(uri)
    if store is None:
        return None
    folder = store.resolve() / "mlruns"
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", experiment_name)
    if safe != experiment_name:  # one folder per name: a discarded experiment removes it
        safe += "-" + hashlib.sha256(experiment_name.encode()).hexdigest()[:8]
    return str(folder / safe)


def _sqlite_folder(uri: str) -> Path | None:
    """The folder of a SQLite store's database file; None for any other store."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///")).parent


def _new_sqlite_from_template(uri: str) -> None:
    """Start a new SQLite store as a copy of an empty one, made once per MLflow version in
    the user's cache (``$XDG_CACHE_HOME/sweep``). MLflow builds a new file's schema by
    running every migration since its first: ~1.5 s of CPU that, on two cores, delays the
    first trial by ~1 s. MLflow adds its Default experiment on opening the copy, as it
    would on its own file. Where the cache cannot be written, MLflow builds the schema."""
    path = Path(uri.removeprefix("sqlite:///"))
    if not uri.startswith("sqlite:///") or "?" in uri or path.exists():
        return
    import mlflow
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    try:  # no home folder (RuntimeError): no cache
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sweep"
    except RuntimeError:
        return
    template = cache / f"mlflow-{mlflow.__version__}.db"
    building = template.with_name(f".{template.name}.{os.getpid()}")
    copying = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        if not template.exists():
            cache.mkdir(parents=True, exist_ok=True)
            engine = sqlalchemy.create_engine(f"sqlite:///{building}")
            try:
                _initialize_tables(engine)  # what MLflow runs on a new file: no rows but its own
            finally:
                engine.dispose()
            os.replace(building, template)  # whole or not there, whoever builds it too
        shutil.copyfile(template, copying)
        os.replace(copying, path)
    except (OSError, sqlalchemy.exc.SQLAlchemyError):  # MLflow builds the schema itself
        for left in (building, copying):
            with contextlib.suppress(OSError):
                left.unlink(missing_ok=True)


def _remove_local(uri: str, up: int) -> None:
    """Delete a local artifact folder (or its parent ``up`` levels above); not a remote one."""
    scheme = urlsplit(uri).scheme
    if scheme not in ("", "file"):
        return
    path = Path(urlsplit(uri).path if scheme else uri)
    shutil.rmtree(path.parents[up - 1] if up else path, ignore_errors=True)


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """An exclusive lock on a SQLite store's folder (no lock file left behind)."""
    store = _sqlite_folder(uri)
    if store is None:
        yield
        return
    folder = os.open(store, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)  # closing releases the lock


def _data_input(data: Mapping[str, Any], context: str) -> DatasetInput:
    """A DataModule, as MLflow knows a dataset: built in code from its config section, so
    the config (target and arguments) is its source, and a hash of it with the split is its
    digest: two runs show the same digest exactly when they saw the same examples."""
    config = {k: v for k, v in data.items() if k != "name"}
    source = json.dumps(config, sort_keys=True, default=str)
    target = str(data.get("_target_", "data")).rsplit(".", 1)[-1]
    name = str(data.get("name") or target)
    digest = hashlib.sha256(f"{source}|{context}".encode()).hexdigest()[:8]
    profile = json.dumps({"split": context, "datamodule": data.get("_target_")})
    short = {"training": "train", "validation": "val"}[context]
    dataset = Dataset(f"{name}-{short}", digest, "code", source, profile=profile)
    return DatasetInput(dataset, [InputTag("mlflow.data.context", context)])


def _text(value: Any, limit: int) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
