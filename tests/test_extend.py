"""Extending a finished sweep: ``sweep resume=<folder> num_samples=<new total>`` runs only the
new trials, in the same parent run, with the searcher and ASHA continuing from the old ones.

Middle level first (the parts in state.json, ASHA's rungs, the Sobol sequence, no Ray),
then real sweeps: 4 trials, extended to 8, with each learning searcher.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from sweep.config.settings import load_settings
from sweep.errors import ConfigError
from sweep.folder import SweepFolder
from sweep.report.results import TrialRow
from sweep.run import tuner
from sweep.stages import PARTS, Part, continued, extension, parts, plan
from tests.conftest import run_sweep, sweep_folders

SPACE = ["model.lr", "model.hidden", "model.dropout"]


def _row(number: int, values: dict, reports: list[tuple[int, float]]) -> TrialRow:
    history = pd.DataFrame(
        {"training_iteration": [e for e, _ in reports], "val_acc": [v for _, v in reports]}
    )
    best = max((v for _, v in reports), default=math.nan)
    end = "completed" if reports and reports[-1][0] >= 6 else "stopped_early"
    return TrialRow(
        f"t_{number:05d}", "TERMINATED", end, len(reports), best, best, values, None,
        history=history,
    )  # fmt: skip


def test_num_samples_is_the_total_a_resume_brings_the_sweep_to(composed, tmp_path: Path) -> None:
    settings = load_settings(composed("num_samples=4"))
    folder = SweepFolder(tmp_path)
    folder.write_state(**{PARTS: [Part(4, settings.dims).record()]})
    assert extension(settings, folder) is None  # the same command resumes, adds nothing
    more = load_settings(composed("num_samples=10", "search_space.model.lr.high=0.01"))
    added = extension(more, folder)
    assert added is not None and added.trials == 6
    assert added.dims == more.dims  # the extension may search a changed space
    folder.write_state(**{PARTS: [Part(4, settings.dims).record(), added.record()]})
    assert parts(settings, folder) == [Part(4, settings.dims), added]  # read back exactly
    stages = list(plan(settings, parts(settings, folder)))
    assert [(s.label, s.tune_dir, s.nested) for s in stages] == [
        ("part 1", "tune", False),
        ("part 2", "tune-part2", False),
    ]


def test_an_extension_trains_and_ranks_its_trials_like_the_earlier_ones(
    composed, tmp_path: Path
) -> None:
    settings = load_settings(composed("num_samples=4"))
    folder = SweepFolder(tmp_path)
    folder.write_state(**{PARTS: [Part(4, settings.dims).record()]})
    (tmp_path / "config.yaml").write_text(
        "metric: val_acc\nmode: max\ntrainer:\n  max_epochs: 20\n"
    )
    for override, key in [("trainer.max_epochs=30", "trainer.max_epochs"), ("mode=min", "mode")]:
        with pytest.raises(ConfigError) as error:
            extension(load_settings(composed("num_samples=8", override)), folder)
        assert error.value.key == key and "in the sweep being extended" in str(error.value)


def test_a_staged_sweep_is_not_extended(composed, tmp_path: Path) -> None:
    settings = load_settings(composed("num_samples=4", "refine_rounds=1"))
    folder = SweepFolder(tmp_path)
    folder.write_state(**{PARTS: [Part(2, settings.dims).record()]})
    with pytest.raises(ConfigError) as error:
        extension(settings, folder)
    assert error.value.key == "num_samples" and "only a plain sweep grows" in str(error.value)


def test_new_trials_meet_the_rungs_the_earlier_trials_set(composed) -> None:
    settings = load_settings(composed("trainer.max_epochs=6", "scheduler.grace_period=2"))
    earlier = [
        _row(i, {}, [(1, 0.5), (2, score), (3, score)]) for i, score in enumerate([0.8, 0.9, 0.95])
    ]
    extended, _ = continued(settings, earlier)

    def decision(config: object, score: float) -> str:
        scheduler = tuner.make_scheduler(config)  # type: ignore[arg-type]
        scheduler.set_search_properties("val_acc", "max")
        trial = Trial("__fake", trial_id="new", stub=True)
        scheduler.on_trial_add(None, trial)  # type: ignore[arg-type]
        result = {"training_iteration": 2, "val_acc": score}
        return scheduler.on_trial_result(None, trial, result)  # type: ignore[arg-type]

    # Alone on an empty rung every trial goes on; against the earlier trials' epoch-2
    # values (cut-off: the top third) a middling one stops and a good one goes on.
    assert decision(settings, 0.85) == TrialScheduler.CONTINUE
    assert decision(extended, 0.85) == TrialScheduler.STOP
    assert decision(extended, 0.96) == TrialScheduler.CONTINUE


def _suggest(settings: object, count: int, known: int = 0) -> list[dict]:
    """The points a searcher built from ``settings`` proposes, as Tune asks while trials run."""
    searcher = tuner.make_searcher(settings)  # type: ignore[arg-type]
    space = tuner.param_space(list(settings.dims))  # type: ignore[attr-defined]
    searcher.set_search_properties("val_acc", "max", space)
    return [searcher.suggest(f"trial_{known + i}") for i in range(count)]


def test_quasi_random_goes_on_along_its_sobol_sequence(composed) -> None:
    fresh = _suggest(load_settings(composed("searcher=quasi_random", "num_samples=8")), 8)
    first = load_settings(composed("searcher=quasi_random", "num_samples=4"))
    assert _suggest(first, 4) == fresh[:4]
    earlier = [_row(i, point, [(1, 0.5)]) for i, point in enumerate(fresh[:4])]
    extended, how = continued(first, earlier)
    assert _suggest(extended, 4, known=4) == fresh[4:]
    assert "goes on along its Sobol sequence" in how and extended.trial_offset == 4


def _children(tmp: Path, parent: str) -> list:
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    runs = client.search_runs(
        [client.get_experiment_by_name("mlp_digits").experiment_id],
        f"tags.mlflow.parentRunId = '{parent}'",
    )
    return runs


@pytest.mark.parametrize("searcher", ["quasi_random", "tpe"])
def test_a_finished_sweep_grows_from_4_to_8_trials(tmp_path: Path, composed, searcher: str) -> None:
    args = [f"searcher={searcher}", "trainer.max_epochs=2", "best_model=false"]
    first = run_sweep(tmp_path, *args, "num_samples=4")
    assert first.returncode == 0, first.stdout + first.stderr
    (folder,) = sweep_folders(tmp_path)
    before = pd.read_csv(folder / "results.csv").sort_values("trial")
    trial_dirs = sorted(p.name for p in (folder / "tune").iterdir() if p.is_dir())

    # tpe's extension also narrows the space, as after a boundary warning.
    narrow = ["search_space.model.lr.high=0.01"] if searcher == "tpe" else []
    more = run_sweep(tmp_path, *args, "num_samples=8", f"resume={folder}", *narrow)
    assert more.returncode == 0, more.stdout + more.stderr
    assert more.stderr == "", more.stderr
    assert f"Extending sweep {folder}: 4 → 8 trials" in more.stdout
    assert sweep_folders(tmp_path) == [folder]  # the same sweep, not a new one
    # Nothing re-ran: part 1's trials are those of the first run, untouched.
    assert sorted(p.name for p in (folder / "tune").iterdir() if p.is_dir()) == trial_dirs
    after = pd.read_csv(folder / "results.csv").sort_values("trial")
    assert list(after["trial"]) == list(range(8))
    old = after[after["stage"] == "part 1"].drop(columns="stage")
    pd.testing.assert_frame_equal(old.reset_index(drop=True), before.reset_index(drop=True))
    new = after[after["stage"] == "part 2"]
    assert len(new) == 4
    assert not set(new["model.lr"]) & set(before["model.lr"])  # no point drawn again
    # One parent, its 8 trial runs under it, every one closed; best metric over all 8.
    parent = json.loads((folder / "state.json").read_text())["parent_run_id"]
    children = _children(tmp_path, parent)
    assert len(children) == 8 and {r.info.status for r in children} == {"FINISHED"}
    names = sorted(r.info.run_name.split()[1] for r in children)
    assert names == [f"{n:03d}" for n in range(8)]
    run = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(parent)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["best_val_acc"] == pytest.approx(after["best_val_acc"].max())
    assert "**8 trials" in run.data.tags["mlflow.note.content"]
    assert "part 1: trials 0-3, lr in [1e-4, 0.03000]" in more.stdout
    assert "part 2: trials 4-7, lr in [1e-4, " in more.stdout
    if searcher == "quasi_random":  # the Sobol points of a fresh 8-trial sweep
        settings = load_settings(composed(f"searcher={searcher}", "num_samples=8"))
        fresh = pd.DataFrame(_suggest(settings, 8))
        pd.testing.assert_frame_equal(
            after[SPACE].reset_index(drop=True), fresh[SPACE], check_dtype=False
        )
    else:
        inside = int((before["model.lr"] <= 0.01).sum())
        dropped = f"; dropped {4 - inside} outside this space" if inside < 4 else ""
        assert f"tpe learns from the {inside} earlier trials{dropped}" in more.stdout
        assert "part 2: trials 4-7, lr in [1e-4, 0.01000]" in more.stdout
        assert "(space changed)" in more.stdout and (new["model.lr"] <= 0.01).all()
    # The same command again: the sweep has its 8 trials.
    again = run_sweep(tmp_path, *args, "num_samples=8", f"resume={folder}", *narrow)
    assert again.returncode == 0 and "already finished; nothing to resume" in again.stdout


def test_a_time_budget_ends_a_sweep_midway_and_the_printed_command_extends_it(
    tmp_path: Path,
) -> None:
    # Two trials at a time, each ~200 epochs (~20 s here): in 20 s at most 4 of 6 start.
    args = ["trainer.max_epochs=200", "scheduler=fifo", "best_model=false"]
    cut = run_sweep(tmp_path, "num_samples=6", *args, "time_budget=20s")
    assert cut.returncode == 0, cut.stdout + cut.stderr
    assert cut.stderr == "", cut.stderr
    (folder,) = sweep_folders(tmp_path)
    ran = pd.read_csv(folder / "results.csv")
    assert 0 < len(ran) < 6
    ends = ran["end_reason"].value_counts().to_dict()
    # The trials running at the deadline ended at an epoch boundary, their epochs intact.
    assert ends.get("stopped_by_time_budget", 0) >= 1, ends
    assert set(ends) <= {"stopped_by_time_budget", "completed"}
    stopped = ran[ran["end_reason"] == "stopped_by_time_budget"]
    assert (stopped["epochs"] < 200).all() and (stopped["epochs"] >= 1).all()
    assert (
        f"Time budget (20s) spent: {len(ran)} of 6 trials ran, {len(stopped)} stopped by it"
    ) in cut.stdout
    resume = f"sweep num_samples=6 {' '.join(args)} time_budget=20s resume={folder}"
    assert f"Run the other {6 - len(ran)}:  {resume}" in cut.stdout
    # Only trials that trained have runs: one per row, none left RUNNING.
    parent = json.loads((folder / "state.json").read_text())["parent_run_id"]
    children = _children(tmp_path, parent)
    assert len(children) == len(ran) and {r.info.status for r in children} == {"FINISHED"}
    reasons = sorted(r.data.tags["sweep.end_reason"] for r in children)
    assert reasons == sorted(ran["end_reason"])

    # The printed command, with room for one more trial and no budget: one trial is added.
    total = len(ran) + 1
    more = run_sweep(tmp_path, *args, f"num_samples={total}", f"resume={folder}")
    assert more.returncode == 0, more.stdout + more.stderr
    assert f"Extending sweep {folder}: {len(ran)} → {total} trials" in more.stdout
    after = pd.read_csv(folder / "results.csv")
    assert sorted(after["trial"]) == list(range(total))
    added = after[after["trial"] == len(ran)]
    assert not set(added["model.lr"]) & set(ran["model.lr"])  # a new point, not a replay
    assert after.set_index("trial").loc[len(ran), "end_reason"] == "completed"
    assert len(_children(tmp_path, parent)) == total
