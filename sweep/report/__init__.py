"""After the stages: one row per trial, results.csv and best.yaml (with several
objectives, the Pareto front and its configs), the review (boundary
warnings, rounds, scientific comparison, plots), and the summary people read.

Hands on the summary text and the parent run's description.
"""
