"""The benchmark harness in smoke mode (tiny sizes, one round), so it cannot rot.
Timings are never asserted: only that every contender ran and produced figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.run import BASELINES, CONTENDERS, SMOKE, command
from bench.workloads import workload

REPO = Path(__file__).resolve().parents[1]


def program(name: str) -> str:
    """The program a contender runs (the sweep CLI or a script), without its flags."""
    cmd = command(name, workload("default", smoke=True), Path("spec.json"), Path("tmp"))
    return Path(cmd[0]).name if cmd[0].endswith("sweep") else Path(cmd[1]).name


def test_the_smoke_runs_every_program_on_every_workload() -> None:
    programs = {program(name) for name in CONTENDERS}
    assert len(programs) == 4  # the sweep CLI, the Ray script, the serial loop, Optuna
    for names in SMOKE.values():
        assert {program(name) for name in names} == programs
    # Both variants of sweep (with/without the model) and of the Ray script (with/without
    # checkpoints) run in one of the two workloads.
    ran = {name for names in SMOKE.values() for name in names}
    assert {"sweep", "sweep_no_model", "ray_script_reuse", "ray_script_lean"} <= ran


@pytest.mark.slow
def test_smoke_runs_each_program_on_both_workloads(tmp_path: Path) -> None:
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
    for name, workload_ in result["workloads"].items():
        (round_,) = workload_["rounds"]
        assert set(round_) == set(SMOKE[name])
        for contender, figures in round_.items():
            assert figures["rc"] == 0, contender
            assert figures["wall_s"] > 0, contender
            assert figures["first_step_s"] > 0, contender
            assert figures["train_s"] > 0, contender
            # The breakdown adds up: start-up, the trials, what comes after the last epoch.
            parts = figures["first_step_s"] + figures["trials_s"] + figures["after_s"]
            assert abs(parts - figures["wall_s"]) < 1e-6, contender
            assert figures["cpu_s"] > 0, contender
            assert figures["trials"] == workload_["workload"]["trials"], contender
            assert 0 < figures["best_val_acc"] <= 1, contender
            assert figures["driver_peak_rss_mib"] > 0, contender
    assert result["mlflow"]["write_per_result_ms"] > 0
    assert proc.stdout.count("### ") == 2
    printed = dict(zip(SMOKE, proc.stdout.split("### ")[1:], strict=True))
    for name, text in printed.items():
        ran = SMOKE[name]
        for contender in CONTENDERS:  # each table names the contenders that ran, only those
            rows = (contender in ran) * (1 + (contender in BASELINES))
            assert text.count(f"| {contender} |") == rows, (name, contender)
        # and the ratio table of the sweep that ran, to each baseline that ran
        (mine,) = [n for n in ran if n.startswith("sweep")]
        ratios = text.split(f"{mine} ÷", 1)[1]
        for base in (b for b in BASELINES if b in ran):
            assert f"| {base} | " in ratios, (name, base)


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
