"""After the stages: one row per trial, results.csv and best.yaml, the review (boundary
warnings, rounds, scientific comparison, plots), and the summary people read.

Hands on the summary text and the parent run's description.
"""
