"""Shared test helpers: compose the real config, and run the real `sweep` command."""

from __future__ import annotations

import os
import subprocess
import sys
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
