"""No secrets in MLflow or the output folder: values under credential-looking keys are
replaced by *** before anything is logged or written."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sweep.config.redact import REDACTED, is_secret_key, redact
from tests.conftest import run_sweep

SECRETS = ("abc123-token-value", "hunter2-password-value")


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("password", True),
        ("db_passwd", True),
        ("api_token", True),
        ("API_KEY", True),
        ("aws_secret_access_key", True),
        ("client_secret", True),
        ("private-key", True),
        ("credentials", True),
        ("lr", False),
        ("hidden", False),
        ("tokenizer_name", True),  # over-redacting a name beats leaking a credential
        ("compass", False),
        ("db_pass", True),
    ],
)
def test_secret_looking_keys(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


def test_redact_walks_nested_sections_and_lists() -> None:
    cfg = {"model": {"lr": 0.1, "api_token": "t"}, "stores": [{"password": "p", "host": "h"}]}
    assert redact(cfg) == {
        "model": {"lr": 0.1, "api_token": REDACTED},
        "stores": [{"password": REDACTED, "host": "h"}],
    }
    assert cfg["model"]["api_token"] == "t"  # the trials still get the real value


@pytest.mark.slow
def test_secrets_never_reach_mlflow_or_the_output_folder(tmp_path: Path) -> None:
    proc = run_sweep(
        tmp_path,
        "num_samples=1",
        "trainer.max_epochs=1",
        "scheduler=fifo",
        f"+service.api_token={SECRETS[0]}",
        f"+tracking.password={SECRETS[1]}",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for secret in SECRETS:
        assert secret not in proc.stdout + proc.stderr
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("mlp_digits").experiment_id])
    assert len(runs) == 2
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.data.params["service.api_token"] == REDACTED
    assert parent.data.params["tracking.password"] == REDACTED
    downloaded = tmp_path / "artifacts"
    for run in runs:
        values = [*run.data.params.values(), *run.data.tags.values()]
        assert not any(secret in v for v in values for secret in SECRETS)
        client.download_artifacts(run.info.run_id, "", str(downloaded))
    # Every byte written: the sweep folder (config.yaml, best.yaml, results.csv, Tune's
    # state and checkpoints) and every MLflow artifact.
    files = [p for p in [*tmp_path.joinpath("sweeps").rglob("*"), *downloaded.rglob("*")]]
    names = {p.name for p in files}
    assert {"config.yaml", "best.yaml", "results.csv"} <= names
    for path in files:
        if path.is_file():
            data = path.read_bytes()
            for secret in SECRETS:
                assert secret.encode() not in data, path
