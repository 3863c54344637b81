"""The Ray side: the cluster, the Tuner of one stage, the trial trainable, the driver's
Tune callbacks, how a trial ended, and stop signals. No Ray object leaves this package.

Hands on :class:`~sweep.run.tuner.TuneRun` (Tune's results of one stage) to sweep/stages.py.
"""
