"""Shared test helpers: compose the real config, and run the real `sweep` command."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
SWEEP = str(Path(sys.executable).with_name("sweep"))
# Small, fast sweeps: a real embedded Ray, real Lightning on digits, a real SQLite store.
SMALL = ["num_samples=6", "trainer.max_epochs=4", "scheduler.grace_period=1"]


def pytest_configure(config: pytest.Config) -> None:
    """Allow exactly the warnings sweep/quiet.py silences (pyproject makes the rest errors)."""
    from sweep.quiet import SILENCED_WARNINGS

    for pattern, category, _why in SILENCED_WARNINGS:
        module = "" if category.__module__ == "builtins" else f"{category.__module__}."
        config.addinivalue_line("filterwarnings", f"ignore:{pattern}:{module}{category.__name__}")


@pytest.fixture
def composed() -> Callable[..., DictConfig]:
    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_module(config_module="conf", version_base="1.3"):
            return compose("config", overrides=list(overrides))

    return _compose


def run_sweep(
    cwd: Path, *args: str, timeout: float = 600, **env: str
) -> subprocess.CompletedProcess:
    """`sweep ARGS` as a user types it, in ``cwd``; output captured."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    return subprocess.run(
        [SWEEP, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env
    )


def sweep_folders(cwd: Path, name: str = "mlp_digits") -> list[Path]:
    return sorted(p for p in (cwd / "sweeps" / name).iterdir() if p.is_dir())


class Sweep:
    """One `sweep` process, its output in files that the test reads while it runs."""

    def __init__(self, tmp: Path, args: list[str], cwd: Path) -> None:
        self.out, self.err = tmp / "out.txt", tmp / "err.txt"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(
                [SWEEP, *args],
                cwd=cwd,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                stdout=out,
                stderr=err,
                start_new_session=True,  # its own process group: cleaned up by group id
                # As from a terminal: a test run started in the background by a script
                # would otherwise hand the sweep SIGINT ignored.
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )

    def handles(self, signum: int) -> bool:
        """The process has a handler of its own for ``signum`` (from /proc: SigCgt)."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        caught = int(
            next(ln for ln in status.splitlines() if ln.startswith("SigCgt:")).split()[1], 16
        )
        return bool(caught >> (signum - 1) & 1)

    def wait(self, condition: Callable[[], bool], timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.proc.poll() is None, f"sweep ended early:\n{self.output()}"
            assert time.monotonic() < deadline, f"timed out waiting:\n{self.output()}"
            time.sleep(0.1)

    def stop(self, signum: int) -> tuple[int, str, str]:
        os.kill(self.proc.pid, signum)
        return self.finish()

    def finish(self) -> tuple[int, str, str]:
        try:
            self.proc.wait(timeout=240)
        finally:
            # A SIGKILLed driver cannot stop the Ray processes it started: its group can.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.returncode, self.out.read_text(), self.err.read_text()

    def output(self) -> str:
        return self.out.read_text() + self.err.read_text()


def cut_short(experiment: Path) -> list[str]:
    """Tune's state files on the storage path cut in half, as its syncer leaves them when a
    kill lands mid-copy (or a save rewrote the staging file under the copy)."""
    states = sorted(experiment.glob("*state-*.json"))  # experiment_state-, basic-variant-state-
    for state in states:
        whole = state.read_bytes()
        state.write_bytes(whole[: len(whole) // 2])
    return [state.name for state in states]


def reports_in(result_json: Path) -> list[dict]:
    """The results a trial's ``result.json`` holds whole, read while its sweep runs. Tune
    appends a line at a time, and copies the file onto itself when the trial restarts
    (a retry, a resume), so its last line may be cut short (a CI run read "Unterminated
    string" there): a line counts once its newline is written."""
    lines = result_json.read_text().splitlines(keepends=True)
    return [json.loads(line) for line in lines if line.endswith("\n") and line.strip()]
