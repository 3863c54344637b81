"""What a resume reads is never gone and never cut short.

Tune keeps a trial's best checkpoint and its latest (``CheckpointConfig(num_to_keep=1)``)
and deletes the one before as soon as a newer one registers. The experiment state a resume
reads is the copy Tune writes to the storage path after that, in the background: a driver
killed in between (SIGKILL, the OOM killer, a lost machine) left a state naming a deleted
checkpoint, and the resumed trial failed ("Could not recover from checkpoint as it does not
exist on storage anymore").

So before Tune replaces a trial's latest checkpoint, :class:`SpareCheckpoints` links its
files into a spare folder (hard links: no copy, no space while the original is there). A
spare goes once the state Tune saved names a newer checkpoint of the trial; a resume puts
back a spare whose checkpoint is missing (:func:`put_back`).

That copy of the state can also be cut short: Tune rewrites the state in place in the
driver's staging folder while its syncer may still be copying the one before, and the copy
is written in place too (0.2 % of reads during a default sweep failed to parse, and a driver
killed then left a sweep whose resume stopped with "Unterminated string";
bench/SCALING.md). :class:`WholeState` keeps the state as Tune last wrote it, whole, and
:func:`put_back` puts it in place before a resume. The trials' result logs go with it: a
resumed trial appends to its log as copied from the storage path, and the syncer's copy
there may be older than the state (a CI run resumed a trial whose log had lost its first
epoch) or newer (its later epochs come again). A running trial resumes from its latest
checkpoint, which may be older than its last result (saved between the result and its
checkpoint): :func:`put_back` cuts its logs back to that checkpoint, so the results it
reports again are in them once.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.fs
from ray.tune.execution.experiment_state import _ExperimentCheckpointManager
from ray.tune.experiment import Trial
from ray.tune.result import EXPR_PROGRESS_FILE, EXPR_RESULT_FILE
from ray.tune.trainable.metadata import _TrainingRunMetadata

from sweep.folder import write_whole
from sweep.run.callbacks import DriverCallback, Trials

SPARE_DIR = ".replaced-checkpoints"  # in the experiment folder: <trial folder>/<checkpoint>
WHOLE_STATE_DIR = ".whole-state"  # in the experiment folder: Tune's state files, whole
# Tune's result logs in a trial's folder: a resumed trial copies them back from the storage
# path and appends to them (Tune's JSON and CSV logger callbacks).
RESULT_LOGS = (EXPR_RESULT_FILE, EXPR_PROGRESS_FILE)
# The saved state is read again at most this often, or less: reading it (MBs at a thousand
# trials) takes at most 2 % of the driver's time (READS_PER_INTERVAL reads' time apart).
PRUNE_EVERY_S = 5.0
READS_PER_INTERVAL = 50
# Tune's saves of its state forced by trial checkpoints come at most this often while the
# same trials run (StateSaves).
STATE_SAVE_GAP_S = 0.5


def saved_state(experiment: str) -> dict[str, Any] | None:
    """The experiment state a resume of ``experiment`` would read (Tune's newest
    ``experiment_state-*.json`` there), None when there is none. Raises ValueError while
    Tune is writing it (its copy to the storage path is not atomic)."""
    fs, path = pyarrow.fs.FileSystem.from_uri(experiment)
    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(path))
    except FileNotFoundError:
        return None
    states = sorted(f.path for f in infos if f.base_name.startswith("experiment_state"))
    if not states:
        return None
    with fs.open_input_stream(states[-1]) as stream:
        return json.loads(stream.read())


def named_checkpoints(state: dict[str, Any]) -> dict[str, tuple[int, bool]]:
    """Trial folder → (the index of the checkpoint its last saved result names, whether
    the trial had ended). A trial mid-save may be saved with that result but its previous
    checkpoint still the latest: a running trial may resume from either. An ended one
    resumes from none (errored trials are not resumed), or ends at once from its last."""
    named = {}
    for trial_json, runtime_json in state.get("trial_data", []):
        trial, runtime = json.loads(trial_json), json.loads(runtime_json)
        name = (runtime.get("last_result") or {}).get("checkpoint_dir_name")
        if name and trial.get("relative_logdir"):
            ended = trial.get("status") in (Trial.TERMINATED, Trial.ERROR)
            named[trial["relative_logdir"]] = (index(name), ended)
    return named


def index(checkpoint_name: str) -> int:
    """``checkpoint_000004`` → 4 (Tune numbers a trial's checkpoints from 0)."""
    return int(checkpoint_name.rsplit("_", 1)[-1])


def needed_from(named: tuple[int, bool]) -> int:
    """The oldest checkpoint index a resume from this saved state may start from."""
    latest, ended = named
    return latest if ended else latest - 1


class SpareCheckpoints(DriverCallback):
    """Links each trial checkpoint that Tune is about to replace into the spare folder,
    and removes the spares no saved state can still name."""

    def __init__(self, experiment: str) -> None:
        self.experiment = experiment.rstrip("/")
        # The spare folder's filesystem and path there, resolved once (not per checkpoint).
        self.fs, self.root = pyarrow.fs.FileSystem.from_uri(f"{self.experiment}/{SPARE_DIR}")
        self.spares: dict[str, set[str]] = {}  # trial folder → spare checkpoint names
        self._pruned_at = time.monotonic()
        self._interval = PRUNE_EVERY_S

    def on_checkpoint(
        self, iteration: int, trials: Trials, trial: Trial, checkpoint: Any, **info: Any
    ) -> None:
        """Tune calls this before it registers ``checkpoint``, which may delete the latest."""
        latest = trial.checkpoint
        if latest is not None and latest.path != checkpoint.path:
            folder, name = latest.path.rstrip("/").rsplit("/", 2)[-2:]
            if name not in self.spares.setdefault(folder, set()):
                _link_tree(latest.filesystem, latest.path, f"{self.root}/{folder}/{name}")
                self.spares[folder].add(name)
        if self.spares and time.monotonic() - self._pruned_at >= self._interval:
            self.prune()

    def on_experiment_end(self, trials: Trials, **info: Any) -> None:
        """Tune has saved its final state (and waited for it): most spares can go."""
        if self.spares:
            self.prune()

    def prune(self) -> None:
        start = time.monotonic()
        try:
            state = saved_state(self.experiment)
        except (FileNotFoundError, ValueError):  # being written: next time
            state = None
        named = named_checkpoints(state or {})
        self._pruned_at = time.monotonic()
        self._interval = max(PRUNE_EVERY_S, READS_PER_INTERVAL * (self._pruned_at - start))
        for folder, names in self.spares.items():
            if folder not in named:
                continue  # not saved yet: a resume would start it from scratch, or keep it
            for name in [n for n in names if index(n) < needed_from(named[folder])]:
                self.fs.delete_dir(f"{self.root}/{folder}/{name}")
                names.discard(name)
        if self.spares and not any(self.spares.values()):
            self.fs.delete_dir(self.root)  # nothing spare left: no empty folder in the user's sweep
            self.spares.clear()


class StateSaves(DriverCallback):
    """Tune's experiment state saved at most every :data:`STATE_SAVE_GAP_S` for the
    checkpoints of running trials, not after each one.

    With ``CheckpointConfig(num_to_keep)`` Tune forces a save of its state (and a copy to
    the storage path, waiting for the one before) after every trial checkpoint, so that the
    state never names a deleted checkpoint: with two trials of ~70 ms epochs, a save every
    step, ~1.1 s of the driver's CPU in a default sweep (``py-spy``). Here
    :class:`SpareCheckpoints` keeps every checkpoint a saved state names, so the saves for
    checkpoints alone wait for the gap; a resume after a SIGKILL then redoes at most that
    much training, whose epochs MLflow already has and gets once (sweep/run/callbacks.py).
    A trial that started or ended since the last save is saved at the next checkpoint, as
    Tune does: a resume knows every trial that ran."""

    def __init__(self) -> None:
        self.changed = True  # a trial started or ended since the last save

    def on_trial_start(self, iteration: int, trials: Trials, trial: Trial, **info: Any) -> None:
        self.changed = True

    def on_trial_complete(self, iteration: int, trials: Trials, trial: Trial, **info: Any) -> None:
        self.changed = True

    def on_trial_error(self, iteration: int, trials: Trials, trial: Trial, **info: Any) -> None:
        self.changed = True

    @contextlib.contextmanager
    def in_force(self) -> Iterator[None]:
        """Tune's saves of its state are paced as above while this is in force."""
        tunes_own = _ExperimentCheckpointManager.sync_up_experiment_state

        def sync_up(manager: Any, save_fn: Any, force: bool = False, wait: bool = False) -> Any:
            forced_by_checkpoints = manager._should_force_sync_up and not force
            recent = time.monotonic() - manager._last_save_time < STATE_SAVE_GAP_S
            if forced_by_checkpoints and recent and not self.changed:
                return None  # the flag stays: saved at the first step after the gap
            saved_at = manager._last_save_time
            result = tunes_own(manager, save_fn, force=force, wait=wait)
            if manager._last_save_time != saved_at:
                self.changed = False
            return result

        _ExperimentCheckpointManager.sync_up_experiment_state = sync_up  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            _ExperimentCheckpointManager.sync_up_experiment_state = tunes_own  # type: ignore[method-assign]


def put_back(experiment: str) -> list[str]:
    """Before a resume: Tune's state as it last wrote it whole goes back in place; then each
    spare whose checkpoint is missing and that the saved state may name goes back in its
    place, and the other spares are dropped. Returns the spares put back."""
    experiment = experiment.rstrip("/")
    WholeState.put_back(experiment)
    fs, root = pyarrow.fs.FileSystem.from_uri(f"{experiment}/{SPARE_DIR}")
    if fs.get_file_info(root).type != pyarrow.fs.FileType.Directory:
        return []
    named = named_checkpoints(saved_state(experiment) or {})
    restored = []
    for spare in fs.get_file_info(pyarrow.fs.FileSelector(root)):
        folder = spare.base_name
        oldest = needed_from(named[folder]) if folder in named else 0
        for checkpoint in fs.get_file_info(pyarrow.fs.FileSelector(spare.path)):
            original = f"{root.rsplit('/', 1)[0]}/{folder}/{checkpoint.base_name}"
            missing = fs.get_file_info(original).type == pyarrow.fs.FileType.NotFound
            if missing and index(checkpoint.base_name) >= oldest:
                fs.move(checkpoint.path, original)
                restored.append(f"{folder}/{checkpoint.base_name}")
    fs.delete_dir(root)
    return restored


class WholeState(DriverCallback):
    """Copies Tune's state files (the experiment state, the searcher's) from the driver's
    staging folder into the experiment's :data:`WHOLE_STATE_DIR` each time Tune saves them,
    and first each trial's result logs that changed since (into ``<trial folder>/``), each
    file renamed into place: the copies are never cut short, the logs never older than the
    state, and none older than what Tune's syncer copies to the storage path. Object storage
    writes each object whole: there it keeps nothing."""

    def __init__(self, experiment: str) -> None:
        self.folder = _whole_state_folder(experiment)
        self.trials: Trials = []
        # state file, or <trial folder>/<log> → (mtime ns, size) of the copy kept
        self.copied: dict[str, tuple[int, int]] = {}
        self.ended: set[str] = set()  # trials whose logs were copied after they ended

    def on_step_begin(self, iteration: int, trials: Trials, **info: Any) -> None:
        # Tune's own list: the trials it adds in this step are in it when the step saves.
        self.trials = trials

    def get_state(self) -> None:
        """Tune calls this in its save, once it has written (and closed) its state files
        in the staging folder (in Ray's session folder), before its syncer copies them.
        Tune's loggers write in this same thread: no log grows while this copies."""
        storage = self.trials[0].storage if self.trials else None
        if self.folder is None or storage is None:
            return None
        for trial in self.trials:
            store = trial.storage
            if trial.trial_id in self.ended or not (store and store.trial_dir_name):
                continue
            # By the file, not by the trial's last result: a resumed trial reports the
            # results after its checkpoint again, and its last result is the same as
            # the state's until it passes it, while its log grows.
            for log in RESULT_LOGS:
                self._copy_if_changed(
                    os.path.join(store.trial_driver_staging_path, log),
                    f"{self.folder}/{store.trial_dir_name}",
                    log,
                )
            if trial.status in (Trial.TERMINATED, Trial.ERROR):
                self.ended.add(trial.trial_id)  # its logs are whole: no need to look again
        os.makedirs(self.folder, exist_ok=True)
        with os.scandir(storage.experiment_driver_staging_path) as entries:
            files = [e for e in entries if e.is_file() and e.name.endswith((".json", ".pkl"))]
        for entry in files:
            self._copy_if_changed(entry.path, self.folder, entry.name)
        return None

    def _copy_if_changed(self, source: str, folder: str, name: str) -> None:
        try:
            stat = os.stat(source)
        except FileNotFoundError:  # a trial not started yet: no log
            return
        key = f"{folder}/{name}"
        if self.copied.get(key) != (stat.st_mtime_ns, stat.st_size):
            _copy_whole(source, folder, name)
            self.copied[key] = (stat.st_mtime_ns, stat.st_size)

    @staticmethod
    def put_back(experiment: str) -> None:
        """The kept copies replace Tune's files on the storage path: they are as new or
        newer. The resumed Tune downloads them into its staging folder, and this callback
        copies them again before its syncer first writes to the storage path. A log keeps
        no result past the one the trial resumes after (:func:`resumes_after`)."""
        folder = _whole_state_folder(experiment)
        if folder is None or not os.path.isdir(folder):
            return
        path = os.path.dirname(folder)
        for entry in os.scandir(folder):
            if entry.is_dir():  # a trial's logs
                os.makedirs(f"{path}/{entry.name}", exist_ok=True)
                for log in os.listdir(entry.path):
                    if not log.startswith("."):  # a copy the kill cut short was never renamed in
                        os.replace(f"{entry.path}/{log}", f"{path}/{entry.name}/{log}")
            elif not entry.name.startswith("."):
                os.replace(entry.path, f"{path}/{entry.name}")
        shutil.rmtree(folder)
        for trial_json, runtime_json in (saved_state(experiment) or {}).get("trial_data", []):
            trial = json.loads(trial_json)
            last = resumes_after(trial.get("status"), runtime_json)
            if trial.get("relative_logdir") and last is not None:
                _drop_results_after(f"{path}/{trial['relative_logdir']}", last)


def resumes_after(status: str | None, runtime_json: str) -> int | None:
    """The last training iteration a trial's result logs keep, from its saved runtime
    state: all it reported when it ended (it does not run again); when it did not, the
    iteration of its latest checkpoint, which it resumes after and which can be older
    than its last result (a save between the result and the checkpoint); 0 with no
    checkpoint (it starts again). None: it ended before reporting anything."""
    if status in (Trial.TERMINATED, Trial.ERROR):
        return (json.loads(runtime_json).get("last_result") or {}).get("training_iteration")
    # Tune's own reading of the state it wrote (its checkpoint manager is a pickle).
    manager = _TrainingRunMetadata.from_json_state(runtime_json).checkpoint_manager
    latest = manager.latest_checkpoint_result if manager is not None else None
    return 0 if latest is None else int(latest.metrics.get("training_iteration", 0))


def _copy_whole(source: str, folder: str, name: str) -> None:
    """``source`` copied to ``folder/name`` through a hidden partial file renamed into place
    (atomic: a kill leaves the old copy or the new, whole)."""
    os.makedirs(folder, exist_ok=True)
    partial = f"{folder}/.{name}.partial"
    shutil.copyfile(source, partial)
    os.replace(partial, f"{folder}/{name}")


def _drop_results_after(trial_folder: str, last: int) -> None:
    """Removes the results after iteration ``last`` from the trial's result logs (they
    come again when the trial resumes from the state that ends at ``last``), and a last
    line a kill cut short."""
    result, progress = (f"{trial_folder}/{log}" for log in RESULT_LOGS)
    if os.path.isfile(result):
        with open(result) as f:
            lines = [line for line in f if line.strip()]
        kept = [line for line in lines if _iteration_of(line, last + 1) <= last]
        if len(kept) < len(lines):
            write_whole(Path(result), "".join(kept))
    if os.path.isfile(progress):
        with open(progress, newline="") as f:
            header, *rows = list(csv.reader(f)) or [[]]
        if "training_iteration" in header:
            at = header.index("training_iteration")
            whole = [r for r in rows if len(r) == len(header) and r[at].isdigit()]
            kept_rows = [r for r in whole if int(r[at]) <= last]
            if len(kept_rows) < len(rows):
                text = io.StringIO()
                csv.writer(text).writerows([header, *kept_rows])  # Tune's DictWriter dialect
                write_whole(Path(progress), text.getvalue())


def _iteration_of(line: str, otherwise: int) -> int:
    """The result line's training iteration; ``otherwise`` for a line a kill cut short."""
    try:
        return int(json.loads(line).get("training_iteration", 0))
    except ValueError:
        return otherwise


def _whole_state_folder(experiment: str) -> str | None:
    """Where :class:`WholeState` keeps its copies: on a local or mounted disk only."""
    fs, path = pyarrow.fs.FileSystem.from_uri(experiment)
    local = isinstance(fs, pyarrow.fs.LocalFileSystem)
    return f"{path.rstrip('/')}/{WHOLE_STATE_DIR}" if local else None


def _link_tree(fs: pyarrow.fs.FileSystem, source: str, target: str) -> None:
    """``target`` gets ``source``'s files: hard links on a local or mounted disk, copies
    elsewhere (object storage copies on the server)."""
    if isinstance(fs, pyarrow.fs.LocalFileSystem):
        shutil.copytree(source, target, copy_function=_link_or_copy, dirs_exist_ok=True)
        return
    for info in fs.get_file_info(pyarrow.fs.FileSelector(source, recursive=True)):
        if info.type == pyarrow.fs.FileType.File:
            destination = f"{target}/{info.path[len(source) :].lstrip('/')}"
            fs.create_dir(destination.rsplit("/", 1)[0], recursive=True)
            fs.copy_file(info.path, destination)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # a filesystem without hard links
        shutil.copy2(source, target)
