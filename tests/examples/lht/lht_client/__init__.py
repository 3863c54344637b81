"""An outside model package in lightning-hydra-template's style (test-only, installed)."""
