"""The benchmark harness in smoke mode (tiny sizes, one round), so it cannot rot.
Timings are never asserted: only that every contender ran and produced figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.run import BASELINES, CONTENDERS, SMOKE_LATER

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_smoke_runs_every_contender(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--smoke", "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert list(result["workloads"]) == ["default", "compute"]  # both, in one command
    # Every contender on the first workload; one of each program on the second.
    ran = zip(result["workloads"].values(), [CONTENDERS, SMOKE_LATER], strict=True)
    for workload, names in ran:
        (round_,) = workload["rounds"]
        assert set(round_) == set(names)
        for name, figures in round_.items():
            assert figures["rc"] == 0, name
            assert figures["wall_s"] > 0, name
            assert figures["first_step_s"] > 0, name
            assert figures["train_s"] > 0, name
            # The breakdown adds up: start-up, the trials, what comes after the last epoch.
            parts = figures["first_step_s"] + figures["trials_s"] + figures["after_s"]
            assert abs(parts - figures["wall_s"]) < 1e-6, name
            assert figures["cpu_s"] > 0, name
            assert figures["trials"] == workload["workload"]["trials"] or name != "sweep_fifo"
            assert 0 < figures["best_val_acc"] <= 1, name
            assert figures["driver_peak_rss_mib"] > 0, name
    assert result["mlflow"]["write_per_result_ms"] > 0
    assert proc.stdout.count("### ") == 2
    first, second = proc.stdout.split("### ")[1:]
    for name in CONTENDERS:  # the printed tables name every contender that ran
        assert first.count(f"| {name} |") >= 1 + (name in BASELINES)
        assert second.count(f"| {name} |") == (name in SMOKE_LATER) * (1 + (name in BASELINES))
    for base in BASELINES:  # and sweep's ratio to each baseline
        assert f"| {base} | " in first.split("sweep ÷", 1)[1]


@pytest.mark.slow
def test_the_gpu_bench_runs_its_flow_with_resources_gpu_0(tmp_path: Path) -> None:
    """bench/gpu.py needs a GPU for its figures; here its whole flow runs on CPU (two
    sweeps, their MLflow runs read back, the device of every trial checked)."""
    out = tmp_path / "gpu.json"
    gpu_bench = [sys.executable, str(REPO / "bench" / "gpu.py")]
    proc = subprocess.run(
        [*gpu_bench, "--cpu-smoke", "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())["packings"]
    assert [(r["trials"], r["devices"], r["on_expected_device"]) for r in rows] == [
        (2, ["cpu"], True),
        (2, ["cpu"], True),
    ]
    assert all(r["trials_per_s"] > 0 for r in rows)
    # Without --cpu-smoke, a machine without a GPU is told so in one line.
    bare = subprocess.run(gpu_bench, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert bare.returncode == 2, bare.stdout + bare.stderr
    assert bare.stdout.strip() == (
        "error: no CUDA GPU on this machine; run this where `nvidia-smi` lists one"
    )


def test_the_published_tables_come_from_the_saved_rounds() -> None:
    """bench/BENCHMARKS.md's result tables are what `--merge` prints from the rounds saved
    in bench/results/: every median row of the tables there is in the merged output."""
    saved = sorted((REPO / "bench" / "results").glob("*.json"))
    assert saved
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--merge", *map(str, saved)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = (REPO / "bench" / "BENCHMARKS.md").read_text()
    published = doc.split("<!-- merged: start -->", 1)[1].split("<!-- merged: end -->", 1)[0]
    rows = [line for line in published.splitlines() if line.startswith("| ")]
    assert len(rows) > 20
    for row in rows:
        assert row in proc.stdout, row
