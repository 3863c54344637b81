"""MLflow, and nothing else here touches it: the sweep's experiment, its parent run, the
stage runs of a staged sweep and one child run per trial, with every ``sweep.*`` tag name.

Hands on :class:`Tracker` (opened by the driver, fed by the trial callbacks, read by the
report) and the tag names in :mod:`sweep.track.tags`.
"""
