"""Every option of every config group composes and passes validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep.config.settings import load_settings
from sweep.config.space import parse_space
from sweep.run.tuner import param_space

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and not p.name.startswith("_"))
# Options that need a value the user must supply (marked ??? in their YAML).
REQUIRED = {
    ("data", "tabular"): ["data.path=/tmp/x.csv", "data.target=label"],
    ("cluster", "remote"): ["cluster.storage_path=/tmp/shared"],
}
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


def test_every_group_has_options() -> None:
    assert {
        "model",
        "data",
        "trainer",
        "search_space",
        "scheduler",
        "searcher",
        "tracking",
        "cluster",
    } <= set(GROUPS)


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_validates(composed, group, option) -> None:
    extra = REQUIRED.get((group, option), [])
    if group == "search_space" and (CONF / "model" / f"{option}.yaml").is_file():
        extra = [*extra, f"model={option}"]  # a model's space tunes that model's keys
    cfg = composed(f"{group}={option}", *extra)
    settings = load_settings(cfg)
    assert cfg[group] is not None
    param_space(list(settings.dims))  # every shipped space translates


def test_defaults_follow_the_model(composed) -> None:
    cfg = composed("model=cnn")
    assert cfg.search_space.model.channels.type == "choice"
    assert load_settings(cfg).name == "cnn_digits"


def test_search_space_overrides_add_change_remove(composed) -> None:
    cfg = composed(
        "search_space.model.lr.high=0.3",
        "+search_space.model.weight_decay={type: loguniform, low: 1e-6, high: 1e-2}",
        "~search_space.model.hidden",
        "model.hidden=256",
    )
    dims = {d.key: d for d in parse_space(cfg.search_space)}
    assert dims["model.lr"].high == 0.3
    assert dims["model.weight_decay"].type == "loguniform"
    assert "model.hidden" not in dims
    assert cfg.model.hidden == 256


def test_default_sweep_settings(composed) -> None:
    settings = load_settings(composed())
    assert (settings.metric, settings.mode, settings.scheduler.name) == (
        "val_acc",
        "max",
        "asha",
    )
    assert settings.tracking_uri.startswith("sqlite:////") and settings.tracking_uri.endswith(
        "/mlflow.db"
    )
    assert [d.key for d in settings.dims] == ["model.lr", "model.hidden", "model.dropout"]
