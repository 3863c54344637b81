"""Benchmarks: `sweep` against the alternatives its users have (see BENCHMARKS.md)."""
