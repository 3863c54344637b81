"""The alternatives to `sweep`, each a standalone script run in its own process."""
