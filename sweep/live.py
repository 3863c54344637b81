"""Driver callbacks that survive ``Tuner.restore``.

Tune pickles RunConfig callbacks into the experiment folder and unpickles them on
restore. Ours hold a live MLflow client, a writer thread and a terminal, so they pickle
as their name and unpickle as the instance that the resuming driver created and
registered under that name.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ray import tune

_REGISTRY: dict[str, LiveCallback] = {}


class LiveCallback(tune.Callback):
    live_name: ClassVar[str]

    def __init__(self) -> None:
        _REGISTRY[self.live_name] = self

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (registered, (self.live_name,))


def registered(name: str) -> LiveCallback:
    return _REGISTRY[name]
