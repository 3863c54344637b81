"""Hyperparameter sweeps: Hydra configs → Ray Tune (ASHA) → Lightning trials → MLflow."""
