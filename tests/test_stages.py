"""The middle of the flow without starting Ray: stage planning, result collection from
Tune's own Result objects, and the driver's trial callbacks writing to a real SQLite store."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from ray.tune import Checkpoint, Result
from ray.tune.experiment import Trial

from sweep.config.settings import load_settings
from sweep.report.results import collect
from sweep.run.callbacks import Detached, MlflowTrialLogger
from sweep.run.outcome import TrialStopper
from sweep.run.signals import StopSignals
from sweep.stages import Outcome, StageResult, plan
from sweep.track import tags
from sweep.track.tracker import Tracker

SCIENTIFIC = "+search_space.model.hidden.role=scientific"


def test_a_plain_sweep_is_one_stage_under_the_parent(composed) -> None:
    (stage,) = plan(load_settings(composed()))
    assert not stage.nested
    assert stage.tune_dir == "tune" and stage.label == ""


def test_rounds_chain_within_each_scientific_value(composed) -> None:
    settings = load_settings(composed("refine_rounds=1", SCIENTIFIC))
    stages = list(plan(settings))
    assert [s.slug for s in stages] == [
        "hidden-64_r1",
        "hidden-64_r2",
        "hidden-128_r1",
        "hidden-128_r2",
        "hidden-256_r1",
        "hidden-256_r2",
    ]
    assert stages[1].label == "hidden=64 · round 2/2"
    assert all(s.nested and s.tune_dir == f"tune-{s.slug}" for s in stages)
    rounds_only = list(plan(load_settings(composed("refine_rounds=2"))))
    assert [s.label for s in rounds_only] == ["round 1/3", "round 2/3", "round 3/3"]


def _result(tmp: Path, trial_id: str, accs: list[float], error: Exception | None = None) -> Result:
    """What Tune hands back for one trial: its last report, history and checkpoints."""
    folder = tmp / trial_id
    folder.mkdir()
    config = {"model.lr": 0.01, "model.hidden": 64, "model.dropout": 0.1}
    history = pd.DataFrame(
        {"epoch": range(1, len(accs) + 1), "val_acc": accs, "trial_id": trial_id}
    )
    last = {**history.iloc[-1].to_dict(), "config": config} if accs else {"config": config}
    best = int(max(range(len(accs)), key=accs.__getitem__)) if accs else 0
    checkpoints = (
        [(Checkpoint.from_directory(str(folder)), {"val_acc": accs[best]})] if accs else []
    )
    return Result(
        metrics=last,
        checkpoint=checkpoints[0][0] if checkpoints else None,
        error=error,
        path=str(folder),
        metrics_dataframe=history,
        best_checkpoints=checkpoints,
    )


def test_collect_ranks_trials_by_their_best_epoch(composed, tmp_path: Path) -> None:
    settings = load_settings(composed("trainer.max_epochs=3"))
    rows = collect(
        [
            _result(tmp_path, "aaaaa_00000", [0.5, 0.9, 0.8]),  # best 0.9, not its final 0.8
            _result(tmp_path, "aaaaa_00001", [0.6]),  # stopped early
            _result(tmp_path, "aaaaa_00002", [], RuntimeError("boom\nValueError: bad")),
        ],
        settings,
    )
    assert [r.number for r in rows] == [0, 1, 2]
    assert [r.end_reason for r in rows] == ["completed", "stopped_early", "error"]
    assert rows[0].best == 0.9 and rows[0].final == 0.8 and rows[0].epochs == 3
    assert rows[0].checkpoint == str(tmp_path / "aaaaa_00000")
    assert rows[0].values == {"model.lr": 0.01, "model.hidden": 64, "model.dropout": 0.1}
    assert math.isnan(rows[2].best) and rows[2].checkpoint is None
    assert rows[2].error == "ValueError: bad"


def test_outcome_ranks_rows_across_stages(composed, tmp_path: Path) -> None:
    settings = load_settings(composed("trainer.max_epochs=2"))
    low = collect([_result(tmp_path, "bbbbb_00000", [0.4, 0.5])], settings)
    high = collect([_result(tmp_path, "bbbbb_00001", [0.7, 0.6])], settings)
    stages = list(plan(load_settings(composed("refine_rounds=1"))))
    outcome = Outcome([StageResult(stages[0], [], low), StageResult(stages[1], [], high)])
    assert [r.best for r in outcome.rows("max")] == [0.7, 0.5]
    assert [r.best for r in outcome.rows("min")] == [0.5, 0.7]


def test_the_stopper_pickles_as_data_and_names_what_the_model_reports() -> None:
    import pickle

    stopper = pickle.loads(pickle.dumps(TrialStopper(("val_acc",))))
    assert not stopper("t", {"epoch": 1, "val_acc": 0.5})
    assert stopper("t", {"epoch": 1, "val/acc": 0.5, "train_loss": 1.0})
    assert stopper.stop_all()
    assert stopper.bad_input == (
        "metric",
        "'val_acc' is not reported by the model, which reports train_loss, val/acc; "
        "set metric=<one of those> (and mode)",
    )
    assert TrialStopper(("val_acc",))("t", {"epoch": 2, "val_acc": 0.1, "diverged": 1.0})


@pytest.fixture
def logger(composed, tmp_path: Path) -> tuple[MlflowTrialLogger, Tracker, MlflowClient]:
    settings = load_settings(composed("trainer.max_epochs=3"))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri, "exp")
    tracker.start_parent("sweep", tmp_path, {}, {})
    callback = MlflowTrialLogger(
        tracker, settings.dims, settings.max_epochs, StopSignals(), TrialStopper(("val_acc",))
    )
    return callback, tracker, MlflowClient(uri)


def _trial(trial_id: str = "ccccc_00003") -> Trial:
    config = {"model.lr": 0.002, "model.hidden": 128, "model.dropout": 0.25}
    return Trial("train", config=config, trial_id=trial_id, experiment_tag="3_lr=0.002", stub=True)


def test_trial_callbacks_mirror_a_trial_into_its_run(logger) -> None:
    callback, tracker, client = logger
    trial = _trial()
    callback.on_trial_start(0, [trial], trial)
    for epoch in (1, 2, 3):
        result = {"epoch": epoch, "val_acc": 0.5 + epoch / 10, "training_iteration": epoch}
        callback.on_trial_result(0, [trial], trial, {**result, "hostname": "h", "node_id": "n"})
    trial.run_metadata.last_result = {"epoch": 3, "val_acc": 0.8}
    callback.on_trial_complete(0, [trial], trial)
    tracker.writer.flush()
    (run,) = tracker.sweep_runs()
    assert run.info.run_name == "trial 003  lr=2e-3 hidden=128 dropout=0.25"
    assert run.data.params == {"model.lr": "0.002", "model.hidden": "128", "model.dropout": "0.25"}
    assert run.info.status == "FINISHED" and run.data.tags[tags.END_REASON] == "completed"
    assert run.data.tags[tags.NODE_ID] == "n"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
    assert steps == [1, 2, 3]
    assert "epoch" not in run.data.metrics and "training_iteration" not in run.data.metrics


def test_a_resumed_trial_logs_each_step_once(logger) -> None:
    callback, tracker, client = logger
    trial = _trial()
    callback.on_trial_start(0, [trial], trial)
    callback.on_trial_result(0, [trial], trial, {"epoch": 1, "val_acc": 0.5})
    callback.on_trial_result(0, [trial], trial, {"epoch": 2, "val_acc": 0.6})
    tracker.writer.flush()
    # A restored driver: new callbacks; Tune replays epoch 2 from the last saved state.
    again = MlflowTrialLogger(tracker, callback.dims, 3, StopSignals(), callback.stopper)
    again.on_trial_start(0, [trial], trial)
    again.on_trial_result(
        0, [trial], trial, {"epoch": 2, "val_acc": 0.6, "iterations_since_restore": 1}
    )
    again.on_trial_result(0, [trial], trial, {"epoch": 3, "val_acc": 0.7})
    tracker.writer.flush()
    (run,) = tracker.sweep_runs()
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
    assert sorted(steps) == [1, 2, 3]


def test_trials_left_running_at_the_end_are_killed(logger) -> None:
    callback, tracker, _ = logger
    done, cut = _trial("ddddd_00000"), _trial("ddddd_00001")
    for trial in (done, cut):
        callback.on_trial_start(0, [done, cut], trial)
    done.set_status(Trial.TERMINATED)
    cut.set_status(Trial.RUNNING)
    callback.on_experiment_end([done, cut])
    tracker.writer.flush()
    status = {r.data.tags[tags.TRIAL_ID]: r.info.status for r in tracker.sweep_runs()}
    assert status == {"ddddd_00000": "RUNNING", "ddddd_00001": "KILLED"}


def test_driver_callbacks_are_saved_as_nothing(logger) -> None:
    import pickle

    callback, _, _ = logger
    assert type(pickle.loads(pickle.dumps(callback))) is Detached


def test_stop_signals_hand_over_to_tunes_handler_and_notice_when_it_fired() -> None:
    """Without Ray: Tune installs its SIGINT handler before it sets up callbacks, which
    is when the driver hands over; a Ctrl-C in between fires Tune's handler only."""
    import os
    import signal

    fired: list[int] = []

    def tune_handler(signum: int, frame: object) -> None:  # Tune's: note, put the old back
        fired.append(signum)
        signal.signal(signal.SIGINT, previous)

    with StopSignals() as signals:
        signals.defer()
        previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, tune_handler)
        signals.hand_to_tune()  # the usual case: wrapped
        os.kill(os.getpid(), signal.SIGINT)
        assert signals.received == signal.SIGINT and fired == [signal.SIGINT]
    with StopSignals() as signals:
        signals.defer()
        previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, tune_handler)
        os.kill(os.getpid(), signal.SIGINT)  # before the hand-over: Tune's handler alone
        assert signals.received is None and len(fired) == 2
        signals.hand_to_tune()
        assert signals.received == signal.SIGINT  # noticed: the stage counts as stopped
        assert signals.exit_code == 130
