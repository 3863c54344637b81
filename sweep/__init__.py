"""Distributed hyperparameter sweeps: Hydra configs → Ray Tune (ASHA) → Lightning trials → MLflow."""
