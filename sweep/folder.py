"""The sweep's output folder: ``<output_dir>/<name>/<timestamp>/``.

It holds Ray Tune's experiment state (``tune/``), the composed config, the results and
``state.json``, which links the folder to its MLflow parent run so a resumed sweep
continues the same run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.errors import ConfigError

# What a sweep folder holds, named once.
STATE_FILE = "state.json"  # links the folder to its MLflow parent run; stages done
TUNE_DIR = "tune"  # Ray Tune's experiment (``tune-<stage>`` per stage of a staged sweep)
CONFIG_FILE = "config.yaml"  # the composed config
RESULTS_FILE = "results.csv"  # one row per trial
BEST_FILE = "best.yaml"  # the best trial's config, re-runnable
FRONT_DIR = "front"  # several objectives: trial-NNN.yaml, one config per Pareto-front trial
CHECKS_FILE = "checks.json"  # the review's findings
PLOTS_DIR = "plots"
RUNNING, FINISHED, INTERRUPTED = "running", "finished", "interrupted"


@dataclass(frozen=True)
class SweepFolder:
    path: Path

    def read_state(self) -> dict[str, Any]:
        state_file = self.path / STATE_FILE
        return json.loads(state_file.read_text()) if state_file.is_file() else {}

    def write_state(self, **changes: Any) -> None:
        state = {**self.read_state(), **changes}
        write_whole(self.path / STATE_FILE, json.dumps(state, indent=2))


def write_whole(path: Path, text: str) -> None:
    """``text`` written to ``path`` through a hidden partial file renamed into place
    (atomic: a kill leaves the old file or the new one, never half of one)."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, newline="")
    partial.replace(path)


def new_folder(output_dir: Path, name: str) -> SweepFolder:
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    path = output_dir / name / stamp
    suffix = 1
    while path.exists():  # two sweeps started in the same second
        path = output_dir / name / f"{stamp}_{suffix}"
        suffix += 1
    return SweepFolder(path)


def folder_to_resume(output_dir: Path, name: str, resume: bool | str) -> SweepFolder:
    """``resume=true``: the newest sweep of this name; ``resume=<folder>``: that one."""
    if isinstance(resume, str) and resume.lower() not in ("true", "latest"):
        folder = SweepFolder(Path(resume).expanduser().absolute())
        if not (folder.path / STATE_FILE).is_file():
            raise ConfigError(
                "resume",
                f"{folder.path} is not a sweep folder (no {STATE_FILE}); pass a folder the "
                "sweep printed, or resume=true for the newest sweep of this name",
            )
        return folder
    candidates = sorted(p.parent for p in (output_dir / name).glob(f"*/{STATE_FILE}"))
    if not candidates:
        raise ConfigError(
            "resume",
            f"no sweep named {name!r} under {output_dir} to resume; "
            "drop resume=true to start one, or pass resume=<sweep folder>",
        )
    return SweepFolder(candidates[-1])
