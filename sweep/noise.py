"""Library output a user cannot act on, silenced in one place, each with its reason.

``verbose>=2`` brings everything back.
"""

from __future__ import annotations

import logging
import os
import warnings

# (message regex, category, why it is safe to hide)
SILENCED_WARNINGS: list[tuple[str, type[Warning], str]] = [
    (
        r".*does not have many workers.*",
        Warning,
        "In-memory tensor datasets: loader worker processes would only add start-up cost.",
    ),
    (
        r".*The number of training batches.*log_every_n_steps.*",
        Warning,
        "We log per epoch, not per step, so Lightning's logging-interval hint does not apply.",
    ),
    (
        r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
        Warning,
        "Raised inside Lightning 2.6 against torch 2.13; nothing in user code triggers it.",
    ),
    (
        r".*Filesystem tracking backend.*|.*file store.*deprecated.*",
        FutureWarning,
        "Only shown when a user points MLflow at ./mlruns; settings reject that URI anyway.",
    ),
]

# Loggers whose INFO lines are start-up banners ("GPU available: False", "Seed set to 0"...).
CHATTY_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning", "mlflow", "alembic")


def silence(verbose: int = 0) -> None:
    """Apply the filters above in this process (the driver or a trial worker)."""
    if verbose >= 2:
        return
    for pattern, category, _why in SILENCED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # With a tracking server (tracking=server), MLflow prints two "View run" lines each time
    # a run ends: one pair per trial, through the progress line.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
