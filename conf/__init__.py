"""Hydra config groups for the sweep (a package so that installed copies find them)."""
