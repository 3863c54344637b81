"""LightningModules and LightningDataModules used by the sweeps.

This package is plain Lightning: it never imports ``ray`` or ``sweep``, so every model
here can be trained, tested and debugged on its own.
"""
