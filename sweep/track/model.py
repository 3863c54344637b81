"""The best model as an MLflow model on the parent run: logged with ``mlflow.pytorch`` (an
input example and the signature it implies) and registered under ``register_as``.

Called in the process that logs the model (sweep/report/model.py: a copy of a trial's
worker, or a Ray actor), never in the driver: mlflow and torch are imported inside the
functions, so importing this module costs the driver nothing.
"""

from __future__ import annotations

import contextlib
import tempfile
from typing import Any

ARTIFACT = "model"  # the parent run's artifact folder of the best model


def warm_up(uri: str | None) -> None:
    """Save a tiny model the way the best one will be (MLflow's first ``torch.export``
    imports and sets up ~1 s of machinery) and open the tracking store at ``uri``. Only a
    warm-up: anything that fails here fails again, with its message, in :func:`log`."""
    import mlflow
    import numpy as np
    import torch
    from mlflow.models import infer_signature
    from mlflow.pytorch import save_model

    with contextlib.suppress(Exception):
        tiny = torch.nn.Linear(2, 1).eval()
        example = np.zeros((1, 2), dtype=np.float32)
        with torch.no_grad():
            output = tiny(torch.as_tensor(example)).numpy()
        with tempfile.TemporaryDirectory() as folder:
            save_model(
                tiny,
                f"{folder}/{ARTIFACT}",
                input_example=example,
                signature=infer_signature(example, output),
                pip_requirements=[f"torch=={torch.__version__}"],
            )
    if uri is not None:
        with contextlib.suppress(Exception):
            mlflow.set_tracking_uri(uri)
            mlflow.search_experiments(max_results=1)


def log(model: Any, example: Any, uri: str, run_id: str, register_as: str | None) -> str:
    """Log ``model`` (a torch module in eval mode) on the run ``run_id``, with ``example``
    (numpy inputs, or None) and the signature of its output; returns the model's URI, and
    its registered version when ``register_as`` names one."""
    import lightning as L
    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    signature = None
    if example is not None:
        with torch.no_grad():
            output = model(torch.as_tensor(example))
        signature = infer_signature(example, output.numpy())
    mlflow.set_tracking_uri(uri)
    # The parent run stays RUNNING: the driver ends it, with the sweep's own status.
    mlflow.start_run(run_id=run_id)
    try:
        info = mlflow.pytorch.log_model(
            model,
            name=ARTIFACT,
            input_example=example,
            signature=signature,
            # Pinned here: inferring them runs the model again in a subprocess (~10 s).
            pip_requirements=[f"torch=={torch.__version__}", f"lightning=={L.__version__}"],
            registered_model_name=register_as,
            # Serving the example through a reloaded copy: ~2 s; the test loads it instead.
            validate_serving_input=False,
        )
    finally:
        mlflow.end_run("RUNNING")
    if register_as:
        version = info.registered_model_version
        return f"{info.model_uri} (registered: models:/{register_as}/{version})"
    return str(info.model_uri)
