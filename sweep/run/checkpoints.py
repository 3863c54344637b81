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
:func:`put_back` puts it in place before a resume.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any

import pyarrow.fs
from ray.tune.experiment import Trial

from sweep.run.callbacks import DriverCallback, Trials

SPARE_DIR = ".replaced-checkpoints"  # in the experiment folder: <trial folder>/<checkpoint>
WHOLE_STATE_DIR = ".whole-state"  # in the experiment folder: Tune's state files, whole
# The saved state is read again at most this often, or less: reading it (MBs at a thousand
# trials) takes at most 2 % of the driver's time (READS_PER_INTERVAL reads' time apart).
PRUNE_EVERY_S = 5.0
READS_PER_INTERVAL = 50


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
    staging folder into the experiment's :data:`WHOLE_STATE_DIR`, each renamed into place,
    each time Tune saves them: the copies are never cut short, and never older than the
    ones Tune's syncer copies to the same folder. Object storage writes each object whole:
    there it keeps nothing."""

    def __init__(self, experiment: str) -> None:
        self.folder = _whole_state_folder(experiment)
        self.trials: Trials = []
        self.copied: dict[str, tuple[int, int]] = {}  # file → (mtime ns, size) copied

    def on_step_begin(self, iteration: int, trials: Trials, **info: Any) -> None:
        # Tune's own list: the trials it adds in this step are in it when the step saves.
        self.trials = trials

    def get_state(self) -> None:
        """Tune calls this in its save, once it has written (and closed) its state files
        in the staging folder (in Ray's session folder), before its syncer copies them."""
        storage = self.trials[0].storage if self.trials else None
        if self.folder is None or storage is None:
            return None
        os.makedirs(self.folder, exist_ok=True)
        with os.scandir(storage.experiment_driver_staging_path) as entries:
            files = [e for e in entries if e.is_file() and e.name.endswith((".json", ".pkl"))]
        for entry in files:
            stat = entry.stat()
            if self.copied.get(entry.name) != (stat.st_mtime_ns, stat.st_size):
                partial = f"{self.folder}/.{entry.name}.partial"
                shutil.copyfile(entry.path, partial)
                os.replace(partial, f"{self.folder}/{entry.name}")  # atomic: whole or absent
                self.copied[entry.name] = (stat.st_mtime_ns, stat.st_size)
        return None

    @staticmethod
    def put_back(experiment: str) -> None:
        """The kept copies replace Tune's files on the storage path: they are as new or
        newer. The resumed Tune downloads them into its staging folder, and this callback
        copies them again before its syncer first writes to the storage path."""
        folder = _whole_state_folder(experiment)
        if folder is None or not os.path.isdir(folder):
            return
        path = os.path.dirname(folder)
        for name in os.listdir(folder):
            if not name.startswith("."):  # a copy the kill cut short was never renamed in
                os.replace(f"{folder}/{name}", f"{path}/{name}")
        shutil.rmtree(folder)


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
