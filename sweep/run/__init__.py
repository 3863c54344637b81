"""The Ray side: the cluster, the Tuner of one stage, the trial trainable (one process, or
a Ray Train group of DDP workers; what its process uses, as system metrics), the driver's
Tune callbacks, how a trial ended, stop signals, and Ray's population schedulers with a
fix of theirs. No Ray object leaves this package.

Hands on :class:`~sweep.run.tuner.TuneRun` (Tune's results of one stage) to sweep/stages.py.
"""
