"""Test-only models that fail on purpose, for the fault-injection tests (never shipped)."""
