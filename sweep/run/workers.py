"""A multi-worker trial's worker group (``resources.workers``), as the driver hands it to
the trial: plain data, so the driver imports nothing of Ray Train to describe it."""

from dataclasses import dataclass


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
