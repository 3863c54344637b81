"""Library output a user cannot act on, silenced in one place, each with its reason.

``verbose>=2`` brings everything back. The test suite turns every other warning into an
error (pyproject's ``filterwarnings = ["error"]``; tests/conftest.py allows exactly the
warnings listed here), so a new library warning is looked at, then fixed or listed here.
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
        r".*The ``noload`` loader strategy is deprecated.*",
        DeprecationWarning,
        "Raised by MLflow 3.17's own SQLAlchemy store when it opens a SQLite database.",
    ),
    (
        r"Please use `(space|list\(space|dict\(config|config)",
        DeprecationWarning,
        "ConfigSpace 1.x's notes to Ray's TuneBOHB and hpbandster, which use its older API.",
    ),
    (
        r".*After 0\.17 or January 2028.*entropy initialized numpy\.random\.Generator.*",
        FutureWarning,
        "Raised inside hpbandster's BOHB model (searcher=bohb) at each proposal; not ours.",
    ),
    (
        r".*Filesystem tracking backend.*|.*file store.*deprecated.*",
        FutureWarning,
        "Only shown when a user points MLflow at ./mlruns; settings reject that URI anyway.",
    ),
]

# Environment variables that turn off a library's advice, with why it does not apply.
SILENCED_ENV: dict[str, tuple[str, str]] = {
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": (
        "0",
        "Tune warns when experiment state is snapshotted often; we checkpoint every epoch "
        "with num_to_keep=1 on purpose (resume loses at most one epoch).",
    ),
    "MLFLOW_LOGGING_LEVEL": (
        "WARNING",
        "mlflow sets its own loggers to this level when it is imported, which happens late "
        "(where the store opens): INFO would print 'Creating initial MLflow database tables'.",
    ),
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": (
        "false",
        "A warm start from a run id downloads its results.csv: a progress bar for one file.",
    ),
}

# Loggers whose INFO lines are start-up banners ("GPU available: False", "Seed set to 0"...).
CHATTY_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning", "mlflow", "alembic")


def silence(verbose: int = 0) -> None:
    """Apply the filters above in this process (the driver or a trial worker)."""
    if verbose >= 2:
        return
    for name, (value, _why) in SILENCED_ENV.items():
        os.environ.setdefault(name, value)
    for pattern, category, _why in SILENCED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # With a tracking server (tracking=server), MLflow prints two "View run" lines each time
    # a run ends: one pair per trial, through the progress line.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
