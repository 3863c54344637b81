"""Boundary check and refinement shrink on objectives whose optimum is known."""

from __future__ import annotations

import math
import random

import pytest

from sweep.config.space import parse_space, position
from sweep.practice.boundary import check, widened_edge
from sweep.practice.refine import refine_space, shrink

SPACE = parse_space(
    {
        "model": {
            "lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
            "dropout": {"type": "uniform", "low": 0.0, "high": 0.5},
            "hidden": {"type": "lograndint", "low": 16, "high": 512},
            "beta2": {"type": "one_minus_log", "low": 0.9, "high": 0.999},
            "optimizer": {"type": "choice", "values": ["adam", "sgd"]},
        }
    }
)
DIMS = {d.key: d for d in SPACE}


def sample(n: int, seed: int = 0) -> list[dict]:
    """n points spread evenly over SPACE in its sampling scales, as quasi-random search
    spreads them (a Latin hypercube: one point per 1/n stratum of each dimension)."""
    rng = random.Random(seed)

    def strata() -> list[float]:
        order = rng.sample(range(n), n)
        return [(i + rng.random()) / n for i in order]

    lr, dropout, hidden, beta = strata(), strata(), strata(), strata()
    return [
        {
            "model.lr": 10 ** (-4 + 3 * lr[i]),
            "model.dropout": 0.5 * dropout[i],
            "model.hidden": round(2 ** (4 + 5 * hidden[i])),
            "model.beta2": 1 - 10 ** (-3 + 2 * (1 - beta[i])),
            "model.optimizer": rng.choice(["adam", "sgd"]),
        }
        for i in range(n)
    ]


def ranked_by(points: list[dict], loss) -> list[dict]:
    return sorted(points, key=loss)


def lr_optimum_at(target: float):
    return lambda p: (math.log10(p["model.lr"]) - math.log10(target)) ** 2


def test_optimum_inside_every_range_gives_no_warning() -> None:
    def loss(p):
        return (
            lr_optimum_at(3e-3)(p)
            + (p["model.dropout"] - 0.25) ** 2 * 10
            + (math.log2(p["model.hidden"]) - 6.5) ** 2 / 4
            + (math.log10(1 - p["model.beta2"]) + 2) ** 2
        )

    for seed in range(5):
        assert check(SPACE, ranked_by(sample(16, seed), loss)) == []


def test_learning_rate_optimum_beyond_high_edge_warns_up_with_override() -> None:
    ranked = ranked_by(sample(16), lr_optimum_at(1.0))  # better and better toward 0.1
    (warning,) = [w for w in check(SPACE, ranked) if w.key == "model.lr"]
    assert warning.edge == "high" and warning.current == pytest.approx(0.1)
    assert warning.suggested is not None and warning.suggested > 0.1
    # half the range further on its log scale: 1.5 decades above 0.1
    assert 2.0 < warning.suggested < 5.0
    assert warning.override == f"search_space.model.lr.high={warning.suggested!r}"
    assert "crowd the high edge" in warning.message and "Widen it" in warning.message


def test_optimum_below_low_edge_warns_down_on_log_scale() -> None:
    ranked = ranked_by(sample(16), lr_optimum_at(1e-6))
    (warning,) = [w for w in check(SPACE, ranked) if w.key == "model.lr"]
    assert warning.edge == "low"
    assert warning.suggested is not None and 1e-7 < warning.suggested < 1e-4


def test_positions_are_measured_in_the_sampling_scale() -> None:
    # 1e-3 is in the middle of [1e-5, 1e-1] on a log scale, though near 0 linearly.
    (wide,) = parse_space({"m": {"lr": {"type": "loguniform", "low": 1e-5, "high": 0.1}}})
    assert position(wide, 1e-3) == pytest.approx(0.5)
    # β2 = 0.99 is the middle of [0.9, 0.999] with 1-β on a log scale.
    assert position(DIMS["model.beta2"], 0.99) == pytest.approx(0.5)


def test_beta_near_one_warns_with_more_nines() -> None:
    ranked = ranked_by(sample(16), lambda p: 1 - p["model.beta2"])  # higher β2 is better
    (warning,) = [w for w in check(SPACE, ranked) if w.key == "model.beta2"]
    assert warning.edge == "high"
    assert warning.suggested is not None and 0.999 < warning.suggested < 1.0
    assert warning.override is not None
    assert warning.override.startswith("search_space.model.beta2.high=0.999")


def test_natural_limit_gives_a_note_not_an_override() -> None:
    ranked = ranked_by(sample(16), lambda p: p["model.dropout"])  # dropout 0 is best
    (warning,) = [w for w in check(SPACE, ranked) if w.key == "model.dropout"]
    assert warning.edge == "low" and warning.suggested is None and warning.override is None
    assert "cannot go further down" in warning.message


def test_integer_edges_stay_whole_numbers() -> None:
    ranked = ranked_by(sample(16), lambda p: -p["model.hidden"])  # wider is better
    (warning,) = [w for w in check(SPACE, ranked) if w.key == "model.hidden"]
    assert warning.edge == "high" and warning.suggested == int(warning.suggested) > 512
    assert widened_edge(DIMS["model.hidden"], "low", 0.0) == 2.0  # log ints stay ≥ 1


def test_too_few_trials_say_nothing() -> None:
    assert check(SPACE, ranked_by(sample(4), lr_optimum_at(1.0))) == []


def test_null_objective_rarely_warns() -> None:
    """A metric unrelated to the space: spurious warnings stay rare (about 4%/dimension)."""
    rng = random.Random(1)
    fired = sum(
        len(check([DIMS["model.lr"]], sorted(sample(16, seed), key=lambda _: rng.random())))
        for seed in range(300)
    )
    assert fired / 300 < 0.08


def test_shrink_narrows_around_the_optimum_within_bounds() -> None:
    ranked = ranked_by(sample(16), lr_optimum_at(3e-3))
    (lr,) = [d for d in refine_space(SPACE, DIMS, ranked) if d.key == "model.lr"]
    assert 1e-4 <= lr.low < 3e-3 < lr.high <= 1e-1
    width = math.log10(lr.high / lr.low)
    assert width < 0.6 * 3.0  # narrower than the original three decades
    # a second round narrows again, still around the optimum
    again = shrink(lr, DIMS["model.lr"], [3.1e-3, 2.8e-3, 3.5e-3])
    assert lr.low <= again.low < 3e-3 < again.high <= lr.high
    assert math.log10(again.high / again.low) < width


def test_shrink_never_leaves_the_original_range_without_a_warning() -> None:
    ranked = ranked_by(sample(16), lr_optimum_at(1.0))
    refined = {d.key: d for d in refine_space(SPACE, DIMS, ranked)}
    assert refined["model.lr"].high == pytest.approx(0.1)
    assert refined["model.lr"].low > 1e-4
    assert refined["model.optimizer"] == DIMS["model.optimizer"]  # choices kept
    hidden = refined["model.hidden"]
    assert 16 <= hidden.low < hidden.high <= 512 and hidden.low == int(hidden.low)


def test_shrink_extends_an_edge_the_boundary_check_flagged() -> None:
    ranked = ranked_by(sample(16), lr_optimum_at(1.0))
    warnings = check(SPACE, ranked)
    refined = {d.key: d for d in refine_space(SPACE, DIMS, ranked, warnings)}
    (warning,) = [w for w in warnings if w.key == "model.lr"]
    assert refined["model.lr"].high == pytest.approx(warning.suggested)
    assert refined["model.lr"].low > 1e-3  # and the bad low end is dropped


def test_a_quantized_log_range_is_never_widened_to_zero() -> None:
    """low=q on a qloguniform: widening down rounds to 0 steps, which no log scale holds
    (the next round would fail taking its log); the edge stays where it is."""
    (lr,) = parse_space({"lr": {"type": "qloguniform", "low": 1e-4, "high": 1e-1, "q": 1e-4}})
    assert widened_edge(lr, "low", 0.0) is None
    assert widened_edge(lr, "high", 1.0) is not None
