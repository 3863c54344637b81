"""``searcher.warm_start``: the finished trials of an earlier sweep, handed to TPE as points
it has already evaluated, so its first proposals start where that sweep left off.

The earlier sweep is named by its folder (its ``results.csv``) or by its MLflow parent run
id (the ``results.csv`` attached to that run). A trial is kept when it reported the metric
and its point lies in this sweep's space, exactly as Optuna's distributions see it (the
space converted the way Tune converts it); the rest are counted in the notice. Nothing
re-runs: the new sweep's ``num_samples`` trials are all new points.
"""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from ray.tune.search.optuna import OptunaSearch

from sweep.config.settings import Settings
from sweep.config.space import to_value
from sweep.errors import ConfigError
from sweep.folder import RESULTS_FILE
from sweep.run.tuner import param_space

KEY = "searcher.warm_start"
_RUN_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Known:
    """Finished trials as a searcher can take them: the points inside the space it searches."""

    points: tuple[dict[str, Any], ...] = ()  # as the searcher sees them (to_value applied)
    rewards: tuple[float, ...] = ()  # each point's best value of the metric
    outside: int = 0  # trials whose point is outside this sweep's space
    silent: int = 0  # trials that never reported the metric

    @property
    def evaluated(self) -> tuple[tuple[dict[str, Any], float], ...]:
        return tuple(zip(self.points, self.rewards, strict=True))

    @property
    def left_out(self) -> str:
        dropped = [
            f"{n} {why}"
            for n, why in ((self.outside, "outside this space"), (self.silent, "without a result"))
            if n
        ]
        return f"; dropped {', '.join(dropped)}" if dropped else ""


@dataclass(frozen=True)
class WarmStart:
    source: str
    known: Known

    @property
    def notice(self) -> str:
        count, source = len(self.known.points), self.source
        return (
            f"Warm start: tpe begins with {count} evaluated trials of {source}{self.known.left_out}"
        )


def load(settings: Settings) -> WarmStart:
    """Read and check ``settings.searcher.warm_start``; raises ConfigError (one line)."""
    source = str(settings.searcher.warm_start)
    if settings.searcher.name != "tpe":
        why = (
            "cannot be given earlier trials"
            if settings.searcher.name == "bohb"
            else "does not learn from results, so earlier trials change nothing"
        )
        raise ConfigError(KEY, f"{settings.searcher.name} search {why}; use searcher=tpe")
    if settings.searcher.points:
        raise ConfigError(KEY, "searcher.points and a warm start together: keep one")
    if settings.staged:
        raise ConfigError(KEY, "a staged sweep (refine_rounds, scientific) cannot warm-start")
    table = _results(source, settings.tracking_uri)
    metric = f"best_{settings.metric}"
    keys = [dim.key for dim in settings.dims]
    if missing := [c for c in (metric, *keys) if c not in table.columns]:
        raise ConfigError(
            KEY,
            f"{source} has no column {missing[0]!r} in its {RESULTS_FILE}: it optimised "
            "another metric or did not tune that key",
        )
    records = table.to_dict("records")
    trials = [({key: row[key] for key in keys}, float(row[metric])) for row in records]
    return WarmStart(source, searchable(settings, trials))


def searchable(settings: Settings, trials: Iterable[tuple[Mapping[str, Any], float]]) -> Known:
    """Finished trials, each as (config values, best metric), as points the searcher can
    take: inside this space exactly as Optuna's distributions see it (the space converted
    the way Tune converts it), with a finite result."""
    space = OptunaSearch.convert_search_space(param_space(list(settings.dims)))
    by_key = {dim.key: dim for dim in settings.dims}
    points, rewards, outside, silent = [], [], 0, 0
    for values, reward in trials:
        if not math.isfinite(reward):
            silent += 1
            continue
        if set(by_key) - set(values):  # a key this space tunes and that trial did not
            outside += 1
            continue
        point = {key: to_value(dim, values[key]) for key, dim in by_key.items()}
        if not all(_contains(space[key], value) for key, value in point.items()):
            outside += 1
            continue
        points.append(point)
        rewards.append(reward)
    return Known(tuple(points), tuple(rewards), outside, silent)


def _results(source: str, tracking_uri: str) -> pd.DataFrame:
    folder = Path(source).expanduser()
    if folder.is_dir():
        if not (folder / RESULTS_FILE).is_file():
            raise ConfigError(KEY, f"{folder} has no {RESULTS_FILE}: not a finished sweep folder")
        return pd.read_csv(folder / RESULTS_FILE)
    if not _RUN_ID.fullmatch(source):
        raise ConfigError(
            KEY, f"{source!r} is neither a sweep folder nor an MLflow run id (32 hex digits)"
        )
    store = tracking_uri.removeprefix("sqlite:///")
    if tracking_uri.startswith("sqlite:///") and not Path(store).is_file():
        raise ConfigError(KEY, f"no MLflow store at {tracking_uri}, so no run {source} either")
    from sweep.track.tracker import download  # mlflow, only for this case: ~2 s to import

    with tempfile.TemporaryDirectory() as scratch:
        path = download(tracking_uri, source, RESULTS_FILE, scratch)
        if path is None:
            raise ConfigError(
                KEY, f"no {RESULTS_FILE} on MLflow run {source}: is it a sweep's parent run?"
            )
        return pd.read_csv(path)


def _contains(distribution: Any, value: Any) -> bool:
    try:
        return bool(distribution._contains(distribution.to_internal_repr(value)))
    except (ValueError, TypeError):  # a choice it does not have, a type it cannot take
        return False
