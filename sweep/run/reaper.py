"""Nothing of a sweep outlives it: an embedded Ray shares the driver's fate.

A driver killed outright (SIGKILL, the OOM killer, a lost SSH session) cannot stop the Ray
it started. Its raylet and GCS end with it, but the raylet's agents (``ray::DashboardAgent``,
``ray::RuntimeEnvAgent``) are handed to PID 1 and live on, deaf to SIGTERM. So after
``ray.init`` the driver starts a small watcher in a session of its own and tells it the
processes its Ray started; the watcher waits on a pipe that only the driver holds. However
the driver ends, the pipe closes, and the watcher kills what is left of those processes:
by pid, each checked to still be the process it was (its start time), never by name.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Runs as its own process: reads "pid:start" lists until the pipe closes, gives Ray a few
# seconds to stop by itself (a clean exit shuts it down), then kills what is left.
_WATCHER = """
import os, signal, sys, time
targets = set()
for line in sys.stdin:
    targets.update(tuple(map(int, t.split(":"))) for t in line.split())
def alive(pid, start):
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z" and int(fields[19]) == start
deadline = time.monotonic() + 5
while any(alive(*t) for t in targets) and time.monotonic() < deadline:
    time.sleep(0.2)
for pid, start in targets:
    if alive(pid, start):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
"""


class Reaper:
    """The watcher of one driver's Ray processes; :meth:`close` when Ray has stopped."""

    def __init__(self) -> None:
        self._watcher = subprocess.Popen(
            [sys.executable, "-c", _WATCHER],
            stdin=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a Ctrl-C to the driver's terminal must not end it
        )

    def watch(self) -> None:
        """Hand the watcher the driver's descendants as they are now (call again when Ray
        may have started more: new ones are added)."""
        assert self._watcher.stdin is not None
        mine = {self._watcher.pid}
        targets = [f"{pid}:{start}" for pid, start in descendants(os.getpid()) if pid not in mine]
        self._watcher.stdin.write(" ".join(targets) + "\n")
        self._watcher.stdin.flush()

    def close(self) -> None:
        assert self._watcher.stdin is not None
        self._watcher.stdin.close()


def descendants(root: int) -> list[tuple[int, int]]:
    """(pid, start time) of every process below ``root``, from /proc (empty elsewhere)."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended meanwhile
        pid = int(entry.parent.name)
        children.setdefault(int(fields[1]), []).append((pid, int(fields[19])))
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child[0])
    return found
