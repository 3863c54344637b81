"""A driver killed just after Tune replaced a trial's checkpoint, for real: Tune's saved
state still names the checkpoint it then deleted. Without the spare, the resumed trial
fails ("does not exist on storage anymore": a CI run hit it in tests/test_interrupt.py);
with it put back, the trial resumes from that checkpoint and finishes. And a kill while
Tune's syncer copied its state leaves that state cut short: without the whole copy a
resume fails; with it put back, the trial finishes. The trial's result logs on the
storage path, older or newer than that state, lose or repeat results on a resume; the
whole copy's logs keep each result once, also when Tune saved between a result and its
checkpoint (the trial resumes from an older checkpoint, or from scratch, and reports that
result again). A real Tune experiment on an embedded Ray; the kill is reproduced by copying
its folder at that moment.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray import tune
from ray.train._internal.checkpoint_manager import _CheckpointManager
from ray.tune.trainable.metadata import _TrainingRunMetadata

from sweep.run.callbacks import DriverCallback
from sweep.run.checkpoints import (
    SPARE_DIR,
    STATE_SAVE_GAP_S,
    WHOLE_STATE_DIR,
    SpareCheckpoints,
    StateSaves,
    WholeState,
    put_back,
)
from tests.conftest import cut_short

pytestmark = pytest.mark.slow
STEPS = 4


def counting(config: dict[str, Any]) -> None:
    """Reports ``STEPS`` steps, each better than the last, each with a checkpoint (so Tune
    deletes the one before); resumes after the step its checkpoint holds."""
    start = 0
    wait_for_a_save(Path(tune.get_context().get_storage().trial_fs_path))
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            start = json.loads((Path(folder) / "step.json").read_text())["step"]
    for step in range(start + 1, STEPS + 1):
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "step.json").write_text(json.dumps({"step": step}))
            tune.report(
                {"score": step, "step": step, "resumed_from": start},
                checkpoint=tune.Checkpoint.from_directory(folder),
            )


def wait_for_a_save(trial: Path) -> None:
    """A test that needs Tune to save while a resumed trial runs and before it reports
    leaves a ``wait`` file in the trial's folder; the driver answers with ``go``."""
    deadline = time.monotonic() + 60
    while (trial / "wait").exists() and not (trial / "go").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no save while {trial.name} ran")
        time.sleep(0.05)


class FolderAtReplace(DriverCallback):
    """Copies the experiment folder as Tune is about to register the checkpoint of a
    step (after SpareCheckpoints linked the latest): what a kill at that moment leaves,
    but for the deletion Tune makes next. A driver callback: Tune does not pickle it
    with the run, so a resumed copy does not copy again."""

    def __init__(self, experiment: Path, copies: dict[int, Path]) -> None:
        self.experiment, self.copies = experiment, copies  # step → where its copy goes

    def on_checkpoint(
        self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any
    ) -> None:
        step = int(Path(checkpoint.path).name.rsplit("_", 1)[-1]) + 1
        if step in self.copies:
            shutil.copytree(self.experiment, self.copies[step])


class WholeAtFirstResult(DriverCallback):
    """Notes which state files the whole copy holds when the first result arrives: by
    then Tune has saved once, in the step that added the trial."""

    def __init__(self, experiment: Path) -> None:
        self.folder = experiment / WHOLE_STATE_DIR
        self.held: list[str] | None = None

    def on_trial_result(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.held is None:
            self.held = (
                sorted(p.name for p in self.folder.glob("*")) if self.folder.exists() else []
            )


def run(experiment: Path, callbacks: list[tune.Callback]) -> tune.ResultGrid:
    tuner = tune.Tuner(
        counting,
        run_config=tune.RunConfig(
            name=experiment.name,
            storage_path=str(experiment.parent),
            callbacks=callbacks,
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute="score", checkpoint_score_order="max"
            ),
            verbose=0,
        ),
    )
    return tuner.fit()


def resume(experiment: Path) -> tune.ResultGrid:
    return tune.Tuner.restore(str(experiment), trainable=counting, resume_errored=False).fit()


@pytest.fixture(scope="module")
def embedded_ray() -> Iterator[None]:
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def killed_at_replace(
    embedded_ray: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, Path]]:
    """The experiment folder as a kill would leave it after Tune's last replace, and the
    experiment as it finished."""
    root = tmp_path_factory.mktemp("spares")
    experiment, copy = root / "exp", root / "copy"
    keepers = [SpareCheckpoints(str(experiment)), WholeState(str(experiment))]
    first = WholeAtFirstResult(experiment)
    # The last replace, and the second (for a trial with steps left after its resume).
    copies = {STEPS: copy, 2: root / "early"}
    results = run(experiment, [*keepers, FolderAtReplace(experiment, copies), first])
    assert not results.errors and results[0].metrics["step"] == STEPS
    (trial,) = [p for p in experiment.iterdir() if p.name.startswith("counting_")]
    # As it finished: only the last (best and latest) checkpoint, and no spare left.
    assert [p.name for p in trial.glob("checkpoint_*")] == [f"checkpoint_{STEPS - 1:06d}"]
    assert not (experiment / SPARE_DIR).exists()
    # Tune's first save, before a trial had a result, was kept whole too.
    assert first.held and any(name.startswith("experiment_state-") for name in first.held)
    # The kill: the copy, less what Tune deleted when it registered the last checkpoint.
    for old in (copy / trial.name).glob("checkpoint_*"):
        if not (trial / old.name).exists():
            shutil.rmtree(old)
    yield copy, trial


def a_copy(killed: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path, str]:
    """(a copy of the killed experiment, its trial folder, the checkpoint its state names)."""
    copy, trial = killed
    # Named for the test: Tune's staging folder (in Ray's session folder, shared by these
    # tests) is named for the experiment and the second it started.
    experiment = tmp_path / tmp_path.name
    shutil.copytree(copy, experiment)
    (state,) = experiment.glob("experiment_state-*.json")
    ((_, runtime),) = json.loads(state.read_text())["trial_data"]
    return (
        experiment,
        experiment / trial.name,
        json.loads(runtime)["last_result"]["checkpoint_dir_name"],
    )


def test_the_saved_state_names_a_deleted_checkpoint_and_a_resume_without_spares_fails(
    killed_at_replace: tuple[Path, Path], tmp_path: Path
) -> None:
    experiment, trial, named = a_copy(killed_at_replace, tmp_path)
    shutil.rmtree(experiment / SPARE_DIR)
    assert not (trial / named).exists()  # the race: named, and gone

    (result,) = resume(experiment)
    assert result.error is not None and "does not exist on storage anymore" in str(result.error)


def test_a_resume_puts_the_spare_back_and_the_trial_finishes_from_it(
    killed_at_replace: tuple[Path, Path], tmp_path: Path
) -> None:
    experiment, trial, named = a_copy(killed_at_replace, tmp_path)
    assert f"{trial.name}/{named}" in put_back(str(experiment))
    assert (trial / named / "step.json").is_file()
    assert not (experiment / SPARE_DIR).exists()  # the spares that were not needed: gone

    (result,) = resume(experiment)
    assert result.error is None
    assert result.metrics["step"] == STEPS
    # It went on from the checkpoint the state named (or the one before, when it was saved
    # mid-save), not from scratch: checkpoint i holds step i + 1.
    assert result.metrics["resumed_from"] in (int(named[-6:]), int(named[-6:]) + 1)


def test_a_state_cut_short_fails_a_resume_without_the_whole_copy(
    killed_at_replace: tuple[Path, Path], tmp_path: Path
) -> None:
    experiment, _, _ = a_copy(killed_at_replace, tmp_path)
    shutil.rmtree(experiment / WHOLE_STATE_DIR)
    assert cut_short(experiment)
    with pytest.raises(ValueError):  # json: "Unterminated string", or whatever the cut hit
        put_back(str(experiment))


def test_a_resume_puts_the_whole_state_back_and_the_trial_finishes(
    killed_at_replace: tuple[Path, Path], tmp_path: Path
) -> None:
    experiment, trial, _ = a_copy(killed_at_replace, tmp_path)
    cut = cut_short(experiment)
    assert sorted(p.name for p in (experiment / WHOLE_STATE_DIR).iterdir() if p.is_file()) == cut
    put_back(str(experiment))
    assert not (experiment / WHOLE_STATE_DIR).exists()
    (state,) = experiment.glob("experiment_state-*.json")
    json.loads(state.read_text())  # whole again (the searcher's is a pickle)

    (result,) = resume(experiment)
    assert result.error is None
    assert result.metrics["step"] == STEPS
    # From the checkpoint the whole state named (as new as the one cut short, or newer),
    # not again from scratch.
    lines = (trial / "result.json").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in lines]
    assert steps.count(1) == 1 and steps[-1] == STEPS, steps


def steps_logged(trial: Path) -> tuple[list[int], list[int]]:
    """The steps in the trial's result.json and progress.csv, in order."""
    lines = (trial / "result.json").read_text().splitlines()
    rows = (trial / "progress.csv").read_text().splitlines()
    at = rows[0].split(",").index("step")
    return [json.loads(line)["step"] for line in lines], [int(r.split(",")[at]) for r in rows[1:]]


def older_logs(trial: Path) -> None:
    """The storage path's logs as a syncer that had not copied them since the first
    result leaves them: the state names later checkpoints."""
    (trial / "result.json").write_text((trial / "result.json").read_text().splitlines()[0] + "\n")
    rows = (trial / "progress.csv").read_text().splitlines(keepends=True)
    (trial / "progress.csv").write_text("".join(rows[:2]))


def test_logs_older_than_the_state_lose_results_without_the_whole_copy(
    killed_at_replace: tuple[Path, Path], tmp_path: Path
) -> None:
    experiment, trial, _ = a_copy(killed_at_replace, tmp_path)
    shutil.rmtree(experiment / WHOLE_STATE_DIR)
    older_logs(trial)
    put_back(str(experiment))  # the spares only
    (result,) = resume(experiment)
    assert result.error is None
    for steps in steps_logged(trial):  # the steps between the first and the state's: lost
        assert steps[0] == 1 and set(range(1, STEPS + 1)) - set(steps), steps


def test_the_whole_copy_keeps_each_result_once_in_the_logs_a_resume_appends_to(
    killed_at_replace: tuple[Path, Path], tmp_path: Path
) -> None:
    experiment, trial, _ = a_copy(killed_at_replace, tmp_path)
    older_logs(trial)
    # A kill between one save's copies: the kept log holds a result the kept state does not
    # (and a line cut short, as a log on the storage path may end).
    kept = experiment / WHOLE_STATE_DIR / trial.name / "result.json"
    last = json.loads(kept.read_text().splitlines()[-1])
    ahead = {**last, "step": 99, "training_iteration": last["training_iteration"] + 1}
    kept.write_text(kept.read_text() + json.dumps(ahead) + '\n{"step": 10')
    put_back(str(experiment))
    results, progress = steps_logged(trial)
    assert 99 not in results and results == progress == list(range(1, len(results) + 1))

    (result,) = resume(experiment)
    assert result.error is None
    assert steps_logged(trial) == (list(range(1, STEPS + 1)), list(range(1, STEPS + 1)))


def saved_between_result_and_checkpoint(experiment: Path, finished: Path, checkpoint: bool) -> int:
    """The kept state and logs as a save between a result and its checkpoint leaves them
    (Tune registers the checkpoint after the result; with one checkpoint kept it saves
    right after each, so a stop often finds this): the trial's last result is one step
    past its latest checkpoint, or its first with ``checkpoint`` false, and its logs hold
    that result. Returns the checkpoint's step (0: none). Written with Tune's own reader
    and writer of the trial's runtime state."""
    (state_file,) = (experiment / WHOLE_STATE_DIR).glob("experiment_state-*.json")
    state = json.loads(state_file.read_text())
    ((trial_json, runtime_json),) = state["trial_data"]
    runtime = _TrainingRunMetadata.from_json_state(runtime_json)
    checkpointed = runtime.checkpoint_manager.latest_checkpoint_result.metrics["step"]
    assert checkpointed < STEPS - 1  # steps left after the one it reports again
    if not checkpoint:
        checkpointed = 0
        config = runtime.checkpoint_manager.checkpoint_config
        runtime.checkpoint_manager = _CheckpointManager(config)  # none registered yet
    results = (finished / "result.json").read_text().splitlines(keepends=True)
    rows = (finished / "progress.csv").read_text().splitlines(keepends=True)
    runtime.last_result = json.loads(results[checkpointed])  # the next step's result
    state["trial_data"] = [[trial_json, runtime.get_json_state()]]
    # And as TUNE_GLOBAL_CHECKPOINT_S=0 saves it: the resumed Tune saves at every step,
    # not every 10 s (a resume reads the period from the state, not the environment).
    state["runner_data"]["_checkpoint_period"] = 0
    state_file.write_text(json.dumps(state))
    kept = experiment / WHOLE_STATE_DIR / finished.name
    (kept / "result.json").write_text("".join(results[: checkpointed + 1]))
    (kept / "progress.csv").write_text("".join(rows[: checkpointed + 2]))  # and the header
    return checkpointed


class FolderWhenCheckpointed(DriverCallback):
    """Lets the trial go on once Tune has saved while it runs (:func:`wait_for_a_save`),
    and copies the experiment folder at the first save whose state names the trial's
    checkpoint of ``step``, once this save's copies are kept: what a kill just after
    that save leaves."""

    def __init__(self, experiment: Path, copy: Path, step: int) -> None:
        self.experiment, self.copy, self.step = experiment, copy, step
        self.trials: list = []
        self.status: str | None = None  # the trial's, when copied

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        self.trials = trials

    def get_state(self) -> None:
        (trial,) = self.trials
        if trial.status == "RUNNING":
            (self.experiment / trial.storage.trial_dir_name / "go").touch()
        latest = trial.run_metadata.checkpoint_manager.latest_checkpoint_result
        if self.status is None and latest is not None and latest.metrics["step"] == self.step:
            shutil.copytree(self.experiment, self.copy)
            self.status = trial.status


@pytest.mark.parametrize("checkpoint", [True, False], ids=["its checkpoint", "no checkpoint"])
def test_a_trial_saved_before_its_checkpoint_registered_logs_each_step_once(
    killed_at_replace: tuple[Path, Path],
    tmp_path: Path,
    checkpoint: bool,
) -> None:
    """A CI run's staged sweep ended with a trial's log lacking its first epoch (a resume
    from scratch, stopped again once it had re-run it); a passing one had a trial's
    second epoch twice (resumed from its first, its log kept to its second)."""
    copy, finished = killed_at_replace
    experiment, trial, _ = a_copy((copy.parent / "early", finished), tmp_path)
    checkpointed = saved_between_result_and_checkpoint(experiment, finished, checkpoint)
    put_back(str(experiment))
    # Cut back to the checkpoint it resumes after: the next step comes again, once.
    assert steps_logged(trial) == (list(range(1, checkpointed + 1)),) * 2

    # The resumed trial reports that step again. A kill just after the save that names
    # its checkpoint must find the step in the kept logs. From scratch, the trial's last
    # result is the saved state's until then: the kept logs followed that, and kept the
    # log as it was before the step when Tune saved between the start and that report.
    (trial / "wait").touch()  # Tune saves while it runs, before it reports
    again = tmp_path / f"{experiment.name}_again"  # a staging folder of its own
    stop_at = FolderWhenCheckpointed(experiment, again, checkpointed + 1)
    tuner = tune.Tuner.restore(str(experiment), trainable=counting, resume_errored=False)
    tuner._local_tuner.get_run_config().callbacks = [WholeState(str(experiment)), stop_at]
    (result,) = tuner.fit()
    assert result.error is None and result.metrics["resumed_from"] == checkpointed
    assert steps_logged(trial) == (list(range(1, STEPS + 1)),) * 2
    assert stop_at.status == "RUNNING"

    (again / trial.name / "wait").unlink()
    put_back(str(again))
    assert steps_logged(again / trial.name) == (list(range(1, checkpointed + 2)),) * 2
    (result,) = resume(again)
    assert result.error is None and result.metrics["resumed_from"] == checkpointed + 1
    assert steps_logged(again / trial.name) == (list(range(1, STEPS + 1)),) * 2


EPOCHS = 12


def epochs(config: dict[str, Any]) -> None:
    """``EPOCHS`` epochs of ~0.1 s, each with a checkpoint (Tune deletes the one before)."""
    for epoch in range(1, EPOCHS + 1):
        time.sleep(0.1)  # the epoch's training
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "epoch.json").write_text(json.dumps({"epoch": epoch}))
            tune.report({"epoch": epoch}, checkpoint=tune.Checkpoint.from_directory(folder))


class CountSaves(DriverCallback):
    """Counts Tune's saves of its experiment state: each asks every callback for its own."""

    def __init__(self) -> None:
        self.saves = 0

    def get_state(self) -> None:
        self.saves += 1


def test_state_saves_for_checkpoints_come_at_most_every_gap(
    embedded_ray: None, tmp_path: Path
) -> None:
    def fit(name: str, paced: StateSaves | None) -> tuple[int, float, tune.ResultGrid]:
        count = CountSaves()
        tuner = tune.Tuner(
            epochs,
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(tmp_path),
                callbacks=[count, *([paced] if paced else [])],
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                verbose=0,
            ),
        )
        started = time.monotonic()
        with paced.in_force() if paced else contextlib.nullcontext():
            results = tuner.fit()
        return count.saves, time.monotonic() - started, results

    tunes_own, _, _ = fit("own", None)
    assert tunes_own >= EPOCHS  # Tune saves after every checkpoint (num_to_keep)
    paced, took, results = fit("paced", StateSaves())
    # At the trial's start and end, the last save, and one a gap while it trains.
    assert paced <= 3 + took / STATE_SAVE_GAP_S < tunes_own, (paced, took, tunes_own)
    (result,) = results
    assert result.error is None and result.metrics["epoch"] == EPOCHS
    # The state saved last is whole and names the trial's last checkpoint.
    (state,) = (tmp_path / "paced").glob("experiment_state-*.json")
    ((_, runtime),) = json.loads(state.read_text())["trial_data"]
    assert json.loads(runtime)["last_result"]["epoch"] == EPOCHS
