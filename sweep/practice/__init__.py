"""The tuning practice (shared/TUNING.md) as code: boundary checks, coarse-to-fine
refinement, the scientific comparison, the batch-size probe, and notices before a sweep.

Pure functions over dimensions and trial values, except the batch-size probe, which trains.
"""
