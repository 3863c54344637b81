"""What people read, checked without a cluster: values in their natural format, the
progress estimate's arithmetic against Ray's own ASHA rungs, and the summary's layout.
(The same output from a real sweep is checked in test_sweep_end_to_end and test_browser.)"""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
from ray.tune.schedulers.async_hyperband import _Bracket

from sweep.config.settings import Settings, load_settings
from sweep.config.space import Dimension
from sweep.report import summary
from sweep.report.results import SweepResult, TrialRow
from sweep.run.progress import ProgressLine, asha_rungs, expected_epochs_left
from sweep.text import describe_point, format_param, format_value, short_keys

LR = Dimension("model.lr", "loguniform", 1e-4, 3e-2)
DROPOUT = Dimension("model.dropout", "uniform", 0.0, 0.4)
HIDDEN = Dimension("model.hidden", "choice", values=(64, 128, 256))
BETA2 = Dimension("model.beta2", "one_minus_log", 0.9, 0.9999)


@pytest.mark.parametrize(
    "value,dim,shown",
    [
        (0.0032, LR, "3.2e-3"),
        (0.018237, LR, "1.8e-2"),
        (1e-4, LR, "1e-4"),
        (0.29183, DROPOUT, "0.292"),
        (0.0, DROPOUT, "0"),
        (128, HIDDEN, "128"),
        (0.999531, BETA2, "0.99953"),
        (0.95, BETA2, "0.950"),
        ("adam", None, "adam"),
        (True, None, "True"),
    ],
)
def test_hyperparameters_in_their_natural_format(value, dim, shown) -> None:
    assert format_param(value, dim) == shown


@pytest.mark.parametrize(
    "value,shown",
    [(0.975, "0.9750"), (0.96111, "0.9611"), (1.2e-5, "1.2e-5"), (3, "3"), (math.nan, "nan")],
)
def test_metrics_keep_four_digits(value, shown) -> None:
    assert format_value(value) == shown


def test_short_keys_stay_unambiguous() -> None:
    assert short_keys(["model.lr", "optim.lr", "model.hidden"]) == {
        "model.lr": "model.lr",
        "optim.lr": "optim.lr",
        "model.hidden": "hidden",
    }
    assert (
        describe_point({"model.lr": 0.0022, "model.hidden": 128}, [LR, HIDDEN])
        == "lr=2.2e-3 hidden=128"
    )


@pytest.mark.parametrize(
    "grace,factor,max_t", [(1, 3, 4), (2, 3, 20), (1, 2, 8), (1, 4, 100), (3, 2.5, 30)]
)
def test_rungs_are_the_ones_ray_asha_uses(grace, factor, max_t) -> None:
    ray_rungs = sorted(math.ceil(r) for r, _ in _Bracket(grace, max_t, factor, s=0)._rungs)
    assert asha_rungs(grace, factor, max_t) == [r for r in ray_rungs if r < max_t]


def test_expected_epochs_follow_asha_survival() -> None:
    # FIFO: everything left.
    assert expected_epochs_left(3, 20) == 17
    # ASHA 2/6/18 of 20, keeping 1/3 per rung: 2 + 4/3 + 12/9 + 2/27 epochs from scratch.
    assert expected_epochs_left(0, 20, [2, 6, 18], 1 / 3) == pytest.approx(
        2 + 4 / 3 + 12 / 9 + 2 / 27
    )
    # A trial past the last rung runs to the end.
    assert expected_epochs_left(18, 20, [2, 6, 18], 1 / 3) == 2
    assert expected_epochs_left(20, 20, [2, 6, 18], 1 / 3) == 0


def test_progress_line_shows_counts_best_and_estimate() -> None:
    stream = io.StringIO()
    line = ProgressLine(8, "val_acc", "max", 20, stream=stream, rungs=[2, 6, 18], survival=1 / 3)
    assert "starting trial workers" in line.line()
    assert line.seconds_left() is None  # no rate yet
    line.first_trial_at = line.started - 10
    line.running = {"a", "b"}
    line.epochs = {"a": 4, "b": 1}
    line.ended = {"c": "completed", "d": "stopped_early", "e": "error"}
    line.epochs_seen = 30  # 3 epochs a second
    line.best = (0.9611, 2)
    text = line.line()
    assert "3/8 done | 2 running | 1 stopped early | 1 failed/diverged" in text
    assert "best val_acc=0.9611 (trial 2)" in text
    left = 3 * expected_epochs_left(0, 20, [2, 6, 18], 1 / 3)
    left += expected_epochs_left(4, 20, [2, 6, 18], 1 / 3)
    left += expected_epochs_left(1, 20, [2, 6, 18], 1 / 3)
    assert line.seconds_left() == pytest.approx(left / 3, rel=0.05)
    line.show(force=True)
    assert stream.getvalue().count("\n") == 1  # not a terminal: plain lines
    line.show(force=True)
    assert stream.getvalue().count("\n") == 1  # ...and only when something changed


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_is_rewritten_in_place_on_a_terminal() -> None:
    stream = Terminal()
    line = ProgressLine(4, "val_loss", "min", 5, stream=stream, min_interval_s=0)
    line.show()
    line.ended = {"a": "completed"}
    line.show()
    line.on_experiment_end([])
    assert stream.getvalue().count("\r\033[K") == 3  # each redraw overwrites the line
    assert stream.getvalue().count("\n") == 1  # one newline, at the end


def row(number: int, best: float, epochs: int, reason: str, lr: float) -> TrialRow:
    return TrialRow(
        trial_id=f"abcde_{number:05d}",
        status="TERMINATED",
        end_reason=reason,
        epochs=epochs,
        best=best,
        final=best,
        values={"model.lr": lr, "model.hidden": 128, "model.dropout": 0.25},
        checkpoint=f"/s/tune/t{number}/checkpoint_000001",
    )


@pytest.fixture
def settings(composed) -> Settings:
    return load_settings(composed("num_samples=7", "searcher=quasi_random"))


def test_summary_reads_top_down(settings) -> None:
    rows = [
        row(
            i,
            0.9 - i / 100,
            20 if i < 2 else 2,
            "completed" if i < 2 else "stopped_early",
            0.0032 * (i + 1),
        )
        for i in range(7)
    ]
    result = SweepResult(
        rows=rows,
        best=rows[0],
        folder=Path("/s"),
        results_file=Path("/s/results.csv"),
        best_file=Path("/s/best.yaml"),
        tracking_uri="sqlite:////w/mlflow.db",
        experiment_id="1",
        parent_run_id="abc",
        warnings=["model.lr: the best trials crowd the top of its range"],
    )
    text = summary.render(result, settings, elapsed_s=75)
    lines = text.splitlines()
    assert lines[1] == "Sweep mlp_digits: 7 trials in 1m15s  (2 completed, 5 stopped early)"
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["trial", "val_acc"])
    assert lines[header].split() == ["trial", "val_acc", "epochs", "end", "lr", "hidden", "dropout"]
    assert lines[header + 1].split() == ["0", "0.9000", "20", "completed", "3.2e-3", "128", "0.25"]
    assert len([line for line in lines if line.strip().startswith(("5 ", "6 "))]) == 0  # top 5
    assert "(top 5 of 7;" in text
    assert "Best: trial 0  val_acc=0.9000" in text
    assert "re-train it  sweep --config-dir /s --config-name best single_trial=true" in text
    assert "Warnings:\n  ! model.lr: the best trials crowd the top of its range" in text
    assert "mlflow ui --backend-store-uri sqlite:////w/mlflow.db --port 5000" in text
    assert "http://127.0.0.1:5000/#/experiments/1/runs/abc?workflowType=machine_learning" in text
    note = summary.note(result, settings, "what it was")
    best = "**Best: trial 0, val_acc = 0.9000** (lr=3.2e-3 hidden=128 dropout=0.25)"
    assert note.startswith(best)
    assert "| 0 | 0.9000 | 20 | completed | 3.2e-3 | 128 | 0.25 |" in note
    assert note.endswith("what it was")


def test_summary_for_a_tracking_server_links_into_it(settings) -> None:
    result = SweepResult(
        [],
        None,
        Path("/s"),
        Path("/s/results.csv"),
        None,
        "http://mlflow.internal:5000",
        "4",
        "r1",
        [],
    )
    text = summary.render(result, settings)
    assert "No trial reported val_acc" in text
    assert "MLflow   open http://mlflow.internal:5000/#/experiments/4/runs/r1" in text


def test_a_staged_sweeps_description_names_the_best_point(settings) -> None:
    """The parent run's description with a stage column (rounds): the point, not the
    table's first cells (``end=completed lr=...``)."""
    rows = [row(i, 0.9 - i / 100, 20, "completed", 0.0032 * (i + 1)) for i in range(3)]
    for i, trial in enumerate(rows):
        trial.stage = f"round {i % 2 + 1}/2"
    result = SweepResult(
        rows,
        rows[0],
        Path("/s"),
        Path("/s/results.csv"),
        Path("/s/best.yaml"),
        "sqlite:///m.db",
        "1",
        "abc",
    )
    note = summary.note(result, settings, "what it was")
    assert note.startswith(
        "**Best: trial 0, val_acc = 0.9000** (lr=3.2e-3 hidden=128 dropout=0.25)"
    )
    assert "| 0 | round 1/2 | 0.9000 | 20 | completed | 3.2e-3 | 128 | 0.25 |" in note
