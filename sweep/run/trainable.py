"""The function Ray Tune runs in each trial's worker process, by reference.

It is all the driver imports of a trial: the trial itself (sweep/run/trial.py) imports
torch and Lightning, in the worker (~5 s and ~300 MB the driver never pays), and this
module imports nothing that the worker would not need.
"""

from typing import Any


def train(config: dict[str, Any], **arguments: Any) -> None:
    from sweep.run import trial

    trial.train(config, **arguments)
