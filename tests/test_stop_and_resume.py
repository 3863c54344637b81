"""Stopping a staged sweep in every phase, for real, and resuming it to the end.

One sweep of two refinement rounds is stopped by SIGINT or SIGTERM at eight moments spread
over its life (start-up, Ray's start, before the first report, mid-trial, between rounds,
round 2's training, the report): each stop exits 130 / 143 with no traceback, leaves no
MLflow run RUNNING, and prints the command that resumes it; the last resume finishes it.
A sweep over scientific values is SIGKILLed in each stage's start-up and training and
resumed each time. Both end with one parent run, one run per stage, every trial once.
"""

from __future__ import annotations

import json
import shlex
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, Sweep, reports_in

pytestmark = pytest.mark.slow

FAULTY = REPO / "tests" / "examples" / "faulty"
NAME = "faulty_digits"
EPOCHS = 3
SAMPLES = 2


def base_args(tmp: Path) -> list[str]:
    """Two slowed-down trials per stage (0.5 s an epoch), so that a signal finds them."""
    return [
        "--config-dir",
        "faulty_conf",
        "model=faulty",
        "search_space=mlp",
        "search_space.model.hidden.values=[32,64]",
        f"num_samples={SAMPLES}",
        f"trainer.max_epochs={EPOCHS}",
        "scheduler=fifo",
        "model.epoch_sleep=0.5",
        f"output_dir={tmp}/sweeps",
        f"tracking.uri=sqlite:///{tmp}/mlflow.db",
    ]


def folder(tmp: Path) -> Path | None:
    found = sorted((tmp / "sweeps" / NAME).glob("*/state.json"))
    return found[-1].parent if found else None


def state(tmp: Path) -> dict:
    path = folder(tmp)
    return json.loads((path / "state.json").read_text()) if path else {}


def epochs(tmp: Path, stage: str) -> dict[str, list[int]]:
    """Epochs each trial of a stage reported, in order, from Tune's result logs."""
    path = folder(tmp)
    out = {}
    for result in path.glob(f"tune-{stage}/train_*/result.json") if path else []:
        lines = reports_in(result)
        if lines:
            out[lines[0]["trial_id"]] = [int(line["epoch"]) for line in lines]
    return out


def training(tmp: Path, stage: str) -> Callable[[], bool]:
    """True once this process has trained an epoch of ``stage`` (beyond earlier runs')."""
    before = sum(map(len, epochs(tmp, stage).values()))
    return lambda: sum(map(len, epochs(tmp, stage).values())) > before


def started(sweep: Sweep, tmp: Path, label: str, stage: str) -> Callable[[], bool]:
    """A stage has printed its label and no trial of it has reported yet."""
    return lambda: label in sweep.out.read_text() and not epochs(tmp, stage)


def runs(tmp: Path) -> list:
    if not (tmp / "mlflow.db").exists():
        return []
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    experiment = client.get_experiment_by_name(NAME)
    return client.search_runs([experiment.experiment_id]) if experiment else []


def assert_stopped(tmp: Path, signum: int, code: int, out: str, err: str) -> list[str] | None:
    """The clean-stop contract; returns the printed resume command's arguments, if any."""
    assert code == 128 + signum, out + err
    assert "Traceback" not in out + err, out + err
    assert "RUNNING" not in {r.info.status for r in runs(tmp)}
    if "nothing is lost" in err:  # the stop came after the sweep had finished
        assert state(tmp)["status"] == "finished"
        return None
    if "Resume with:" not in err:  # before the sweep began: nothing left behind
        assert "nothing to resume" in err and folder(tmp) is None and not runs(tmp), err
        return None
    assert state(tmp)["status"] == "interrupted"
    parents = [r for r in runs(tmp) if "mlflow.parentRunId" not in r.data.tags]
    assert [p.info.status for p in parents] == ["KILLED"]
    command = shlex.split(err.strip().splitlines()[-1])
    assert command[0] == "sweep" and command[-1].startswith("resume=")
    return command[1:]


def assert_complete(tmp: Path, stages: list[str]) -> None:
    """One parent, one run per stage, each trial once with continuous steps, none open."""
    path = folder(tmp)
    assert path is not None and state(tmp)["status"] == "finished"
    assert (path / "results.csv").is_file() and (path / "best.yaml").is_file()
    everything = runs(tmp)
    parents = [r for r in everything if "mlflow.parentRunId" not in r.data.tags]
    assert [p.info.status for p in parents] == ["FINISHED"]
    parent_id = parents[0].info.run_id
    stage_runs = [r for r in everything if r.data.tags.get("mlflow.parentRunId") == parent_id]
    assert sorted(r.data.tags["sweep.stage"] for r in stage_runs) == sorted(stages)
    assert {r.info.status for r in stage_runs} == {"FINISHED"}
    stage_ids = {r.info.run_id for r in stage_runs}
    trials = [r for r in everything if r.data.tags.get("mlflow.parentRunId") in stage_ids]
    assert len(trials) == SAMPLES * len(stages)
    assert len({r.data.tags["sweep.trial_id"] for r in trials}) == len(trials)  # no duplicate
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    for trial in trials:
        assert trial.info.status == "FINISHED", trial.data.tags
        history = client.get_metric_history(trial.info.run_id, "val_acc")
        assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1))
    for stage in stages:  # Tune's logs: each epoch once, none lost to a stop or a restart
        logged = epochs(tmp, stage)
        assert all(e == list(range(1, EPOCHS + 1)) for e in logged.values()), logged
    # The parent run's description leads with the best trial and its point.
    note = parents[0].data.tags["mlflow.note.content"]
    head = note.splitlines()[0]
    assert head.startswith("**Best: trial") and "lr=" in head and "end=" not in head, note


def test_every_phase_of_a_staged_sweep_stops_cleanly_and_resumes(tmp_path: Path) -> None:
    args = [*base_args(tmp_path), "refine_rounds=1"]

    def report_phase() -> bool:  # round 2 trained out: the report runs or is about to
        done = epochs(tmp_path, "r2")
        return len(done) == SAMPLES and all(e[-1] == EPOCHS for e in done.values())

    moments: list[tuple[str, int, Callable[[Sweep], Callable[[], bool]]]] = [
        ("start-up", signal.SIGINT, lambda s: lambda: s.handles(signal.SIGTERM)),
        ("Ray's start", signal.SIGTERM, lambda s: lambda: "Sweep faulty_digits" in s.output()),
        (
            "before the first report",
            signal.SIGINT,
            lambda s: started(s, tmp_path, "round 1/2", "r1"),
        ),
        ("round 1 training", signal.SIGTERM, lambda s: training(tmp_path, "r1")),
        ("between rounds", signal.SIGINT, lambda s: started(s, tmp_path, "round 2/2", "r2")),
        ("round 2 training", signal.SIGINT, lambda s: training(tmp_path, "r2")),
        ("round 2 training again", signal.SIGTERM, lambda s: training(tmp_path, "r2")),
        ("the report", signal.SIGINT, lambda s: report_phase),
    ]
    current = args
    for _moment, signum, when in moments:
        sweep = Sweep(tmp_path, current, FAULTY)
        sweep.wait(when(sweep))
        code, out, err = sweep.stop(signum)
        resume = assert_stopped(tmp_path, signum, code, out, err)
        current = resume or current
    code, out, err = Sweep(tmp_path, current, FAULTY).finish()
    assert code == 0, out + err
    # The report-phase stop may have come just after the sweep had finished.
    assert "Best: trial" in out or "already finished" in out, out
    assert_complete(tmp_path, ["r1", "r2"])


def test_scientific_stages_resume_after_sigkill_in_each_stage(tmp_path: Path) -> None:
    args = [*base_args(tmp_path), "+search_space.model.hidden.role=scientific", "best_model=false"]
    resume = [*args, "resume=true"]
    kills = [
        ("hidden=32", "hidden-32", "start-up"),
        ("hidden=32", "hidden-32", "training"),
        ("hidden=64", "hidden-64", "start-up"),
        ("hidden=64", "hidden-64", "training"),
    ]
    for i, (label, stage, phase) in enumerate(kills):
        sweep = Sweep(tmp_path, args if i == 0 else resume, FAULTY)
        when = started(sweep, tmp_path, label, stage) if phase == "start-up" else None
        sweep.wait(when or training(tmp_path, stage))
        code, _, _ = sweep.stop(signal.SIGKILL)
        assert code == -signal.SIGKILL
    code, out, err = Sweep(tmp_path, resume, FAULTY).finish()
    assert code == 0, out + err
    assert "Resuming sweep" in out and "Best: trial" in out
    assert_complete(tmp_path, ["hidden-32", "hidden-64"])
