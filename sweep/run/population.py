"""Ray Tune's population schedulers (pbt, pb2), with the exploit of a trial mid-pause fixed.

Synchronous pbt pauses each trial that reaches a perturbation point: Tune asks the trial to
save, and pauses it once the save is in. The last trial's arrival perturbs them all at
once, and one whose save is still in flight then is exploited while RUNNING: Ray
(2.60) stops its actor and marks it PAUSED, and the stop, finding a save in flight, leaves a
STOP decision "for when the save resolves". The save goes with the actor, the decision
stays: the copy restored from the donor trains one epoch, its next save executes the stale
STOP, and the trial ends an epoch early, never resumed (`tests/test_pbt.py` failed so 3
times in 44 runs; Tune's debug log shows "Scheduling STOP after save resolved", then
"Executing final queued decision ...: STOP" after the copy's first epoch). Here the exploit
drops a decision left for the trial it has just paused: nothing that was waiting on it
exists any more.
"""

from __future__ import annotations

from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining


class _ExploitDropsStaleStop:
    """Mixin for Ray's PopulationBasedTraining and its subclasses (PB2)."""

    def _exploit(self, tune_controller: Any, trial: Trial, trial_to_clone: Trial) -> None:
        super()._exploit(tune_controller, trial, trial_to_clone)  # type: ignore[misc]
        # Schedulers get a wrapper of the controller, which logs a warning on any attribute
        # it does not list: the controller itself is its `_tune_controller`.
        controller = getattr(tune_controller, "_tune_controller", tune_controller)
        controller._cached_trial_decisions.pop(trial.trial_id, None)


class PBT(_ExploitDropsStaleStop, PopulationBasedTraining):
    """Ray's PopulationBasedTraining (``scheduler=pbt``)."""


def __getattr__(name: str) -> type:
    # PB2 imports scikit-learn (~2 s): its class is built when pb2 is used, by name, so
    # that the Tuner's pickle of the scheduler (tuner.pkl, read on resume) finds it.
    if name != "PB2":
        raise AttributeError(name)
    from ray.tune.schedulers.pb2 import PB2 as RayPB2

    cls = type("PB2", (_ExploitDropsStaleStop, RayPB2), {"__module__": __name__})
    globals()["PB2"] = cls
    return cls
