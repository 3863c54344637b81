"""The function Ray Tune runs in each trial's worker process, by reference.

It is all the driver imports of a trial: the trial itself (sweep/run/trial.py) imports
torch and Lightning, in the worker (~5 s and ~300 MB the driver never pays), and this
module imports nothing that the worker would not need.
"""

from dataclasses import dataclass
from typing import Any


def train(config: dict[str, Any], **arguments: Any) -> None:
    from sweep.run import trial

    trial.train(config, **arguments)


@dataclass(frozen=True)
class Workers:
    """A multi-worker trial (``resources.workers``): its Ray Train worker group."""

    count: int
    cpus: float  # per worker
    gpus: float
    placement: str  # PACK (few nodes) or SPREAD (one worker per node where it can)
    storage: str  # the Tune experiment's folder: each trial's Ray Train run goes in it
    max_failures: int  # worker-group restarts from the last checkpoint (a lost node)
    metric: str
    mode: str
