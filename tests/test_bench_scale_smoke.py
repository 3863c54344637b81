"""bench/scale.py runs end to end on a few trials, so the benchmark behind
bench/SCALING.md cannot rot. No timing is asserted: only that every mode ran every trial
and that the figures it reports exist."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

TRIALS = 12


def test_scale_bench_smoke(tmp_path) -> None:
    out = tmp_path / "scale.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "scale.py"), f"--trials={TRIALS}",
         "--store-runs=20", f"--out={out}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=400,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    figures = json.loads(out.read_text())
    modes = {row["mode"]: row for row in figures["modes"]}
    assert set(modes) == {"sweep", "tune", "tune-files", "tune-fn"}
    for row in modes.values():
        assert row["trials_done"] == TRIALS
        assert row["wall_s"] > 0 and row["driver_cpu_ms_per_trial"] > 0
    assert modes["sweep"]["mlflow_child_runs"] == TRIALS  # one MLflow child run per trial
    assert set(figures["mlflow"]) == {"sqlite", "server"}
    assert all(rate["child_runs_per_s"] > 0 for rate in figures["mlflow"].values())
    assert "orchestrator over bare Tune" in proc.stdout
    assert not list(tmp_path.glob("sweeps")), "the bench writes only to its scratch folder"
