"""The workloads, and the fixed list of points every contender trains.

Points are sampled once, with numpy and a fixed seed, from the same space the sweep's
config describes; every contender receives this list, so all of them train exactly the
same trials (same model, data split, seed, epochs and early-stopping schedule).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

DATA = {"batch_size": 64, "val_fraction": 0.2, "seed": 0}
SEED = 0


@dataclass(frozen=True)
class Workload:
    name: str
    model: str  # "mlp" or "cnn": the sweep's model group; the probe class follows it
    trials: int
    epochs: int
    grace_period: int
    reduction_factor: int
    fixed: dict[str, Any] = field(default_factory=dict)  # model kwargs not tuned
    space: dict[str, Any] = field(default_factory=dict)  # key -> (kind, args)

    @property
    def target(self) -> str:
        return {"mlp": "bench.probe.TimedMLP", "cnn": "bench.probe.TimedCNN"}[self.model]

    def points(self) -> list[dict[str, Any]]:
        rng = np.random.default_rng(SEED)
        out = []
        for _ in range(self.trials):
            point: dict[str, Any] = {}
            for key, (kind, args) in self.space.items():
                if kind == "loguniform":
                    point[key] = float(np.exp(rng.uniform(np.log(args[0]), np.log(args[1]))))
                elif kind == "uniform":
                    point[key] = float(rng.uniform(args[0], args[1]))
                else:  # choice
                    point[key] = args[int(rng.integers(len(args)))]
            out.append(point)
        return out

    def spec(self) -> dict[str, Any]:
        """Everything a contender script needs, as plain JSON."""
        return {
            **asdict(self),
            "target": self.target,
            "data": DATA,
            "seed": SEED,
            "points": self.points(),
        }


MLP_SPACE = {
    "lr": ("loguniform", (1e-4, 3e-2)),
    "hidden": ("choice", (64, 128, 256)),
    "dropout": ("uniform", (0.0, 0.4)),
}
CNN_SPACE = {
    "lr": ("loguniform", (1e-4, 3e-2)),
    "channels": ("choice", (32, 64)),
    "dropout": ("uniform", (0.0, 0.4)),
}


NAMES = ("default", "overhead", "compute")


def workload(name: str, smoke: bool = False) -> Workload:
    if name == "default":
        # The default `sweep`: 16 digits-MLP trials, <= 20 epochs, ASHA grace 2, eta 3.
        trials, epochs, grace = (2, 1, 1) if smoke else (16, 20, 2)
        return Workload(name, "mlp", trials, epochs, grace, 3, {"layers": 2}, MLP_SPACE)
    if name == "overhead":
        # Many short trials: a digits-MLP epoch is ~30 ms, so orchestration dominates.
        trials, epochs = (2, 1) if smoke else (32, 6)
        return Workload(name, "mlp", trials, epochs, 1, 3, {"layers": 2}, MLP_SPACE)
    if name == "compute":
        # Fewer, longer trials: a CNN epoch on digits takes ~1 s on one core.
        trials, epochs, grace = (2, 1, 1) if smoke else (8, 12, 2)
        return Workload(name, "cnn", trials, epochs, grace, 3, {}, CNN_SPACE)
    raise ValueError(f"unknown workload {name!r}; use one of {', '.join(NAMES)}")
