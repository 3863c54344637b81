"""searcher.points: fixed configs the searcher tries first (the benchmark feeds every
contender the same trials through it)."""

from __future__ import annotations

import pytest

from sweep.config.settings import load_settings
from sweep.config.space import Dimension, fixed_points
from sweep.errors import ConfigError

DIMS = [
    Dimension("model.lr", "loguniform", low=1e-4, high=1e-1),
    Dimension("model.hidden", "choice", values=(64, 128)),
    Dimension("optim.beta2", "one_minus_log", low=1e-3, high=1e-1),
]


def test_nested_points_become_flat_searcher_points() -> None:
    points = [{"model": {"lr": 0.01, "hidden": 64}}, {"model": {"lr": 0.001}}]
    assert fixed_points(DIMS, points) == [
        {"model.lr": 0.01, "model.hidden": 64},
        {"model.lr": 0.001},
    ]


def test_one_minus_log_points_are_given_as_config_values() -> None:
    (point,) = fixed_points(DIMS, [{"optim": {"beta2": 0.99}}])
    assert point["optim.beta2"] == pytest.approx(0.01)


def test_no_points_is_empty() -> None:
    assert fixed_points(DIMS, None) == []


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ([{"model": {"width": 3}}], "model.width is not in the search space"),
        ("lr=0.1", "expected a list of points"),
        ([3], "expected a mapping"),
    ],
)
def test_bad_points_name_the_key(points: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        fixed_points(DIMS, points)


def test_settings_reject_a_point_outside_the_space(composed) -> None:
    cfg = composed("searcher.points=[{model: {width: 3}}]")
    with pytest.raises(ConfigError, match=r"searcher.points\[0\]"):
        load_settings(cfg)


def test_settings_accept_points_of_the_space(composed) -> None:
    cfg = composed("searcher.points=[{model: {lr: 0.01, hidden: 64}}]")
    assert load_settings(cfg).searcher.points == [{"model": {"lr": 0.01, "hidden": 64}}]
