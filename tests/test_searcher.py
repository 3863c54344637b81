"""Searchers and the notices printed before a sweep."""

from __future__ import annotations

from sweep.config.settings import load_settings
from sweep.practice.advice import before_sweep
from sweep.run.tuner import make_searcher


def suggestions(settings, n: int = 8) -> list[dict]:
    from sweep.run.tuner import param_space

    searcher = make_searcher(settings)
    searcher.set_search_properties(settings.metric, settings.mode, param_space(list(settings.dims)))
    return [searcher.suggest(f"trial_{i}") for i in range(n)]


def test_quasi_random_is_reproducible_from_the_seed(composed) -> None:
    first = suggestions(load_settings(composed("searcher=quasi_random", "seed=3")))
    again = suggestions(load_settings(composed("searcher=quasi_random", "seed=3")))
    other = suggestions(load_settings(composed("searcher=quasi_random", "seed=4")))
    assert first == again
    assert first != other
    assert len({point["model.lr"] for point in first}) == 8


def test_quasi_random_notice_when_not_a_power_of_two(composed) -> None:
    (notice,) = before_sweep(load_settings(composed("searcher=quasi_random", "num_samples=12")))
    assert "num_samples=12" in notice and "num_samples=8 or 16" in notice
    assert before_sweep(load_settings(composed("searcher=quasi_random", "num_samples=16"))) == []
    assert before_sweep(load_settings(composed("searcher=random", "num_samples=12"))) == []


def test_batch_size_in_the_search_space_gets_a_notice(composed) -> None:
    settings = load_settings(
        composed("+search_space.data.batch_size={type: choice, values: [32, 64, 128]}")
    )
    (notice,) = before_sweep(settings)
    assert "data.batch_size is in the search space" in notice
    assert "sweep probe=batch_size" in notice
