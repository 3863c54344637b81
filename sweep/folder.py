"""The sweep's output folder: ``<output_dir>/<name>/<timestamp>/``.

It holds Ray Tune's experiment state (``tune/``), the composed config, the results and
``state.json``, which links the folder to its MLflow parent run so a resumed sweep
continues the same run.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.errors import ConfigError

STATE_FILE = "state.json"
TUNE_DIR = "tune"
RUNNING, FINISHED, INTERRUPTED = "running", "finished", "interrupted"


@dataclass(frozen=True)
class SweepFolder:
    path: Path

    @property
    def tune_path(self) -> Path:
        return self.path / TUNE_DIR

    def read_state(self) -> dict[str, Any]:
        state_file = self.path / STATE_FILE
        return json.loads(state_file.read_text()) if state_file.is_file() else {}

    def write_state(self, **changes: Any) -> None:
        state = {**self.read_state(), **changes}
        tmp = self.path / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.path / STATE_FILE)  # atomic: a kill never leaves half a file


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
            raise ConfigError("resume", f"{folder.path} is not a sweep folder (no {STATE_FILE})")
        return folder
    candidates = sorted(p.parent for p in (output_dir / name).glob(f"*/{STATE_FILE}"))
    if not candidates:
        raise ConfigError(
            "resume",
            f"no sweep named {name!r} under {output_dir} to resume; "
            "drop resume=true to start one, or pass resume=<sweep folder>",
        )
    return SweepFolder(candidates[-1])


def check_writable(output_dir: Path) -> None:
    """The output folder (or the nearest folder that exists above it) must be writable,
    checked before anything starts so a sweep cannot fail after its first trials."""
    existing = output_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            "output_dir", f"{output_dir}: {existing} is a file, not a folder; choose another path"
        )
    try:  # os.access says yes to root even where writing fails (read-only mounts, /proc)
        os.rmdir(tempfile.mkdtemp(prefix=".sweep-check-", dir=existing))
    except OSError as exc:
        raise ConfigError(
            "output_dir",
            f"{output_dir}: cannot write in {existing} ({exc.strerror}); choose a folder you "
            "can write to, e.g. output_dir=$HOME/sweeps",
        ) from None
