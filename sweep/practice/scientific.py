"""Scientific, nuisance and fixed hyperparameters: comparing the scientific values fairly.

To ask "is Adam better than SGD here?", the learning rate (a nuisance hyperparameter) must
be tuned for each optimizer separately, and each must get the same budget; comparing one
shared learning rate, or the best of an unbalanced random sample, answers a different
question. A dimension marked ``role: scientific`` does that (the stages are run by
sweep/stages.py): this module compares the outcome.

For each scientific value: the best metric, the spread of its top trials (how much the
best depends on nuisance luck) and the number of trials. The verdict is "clear" only when
even the winner's k-th best trial beats the runner-up's best; otherwise the difference is
within what the nuisance search itself varies, and more trials per value would tell.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sweep.config.space import Dimension
from sweep.practice.boundary import top_count
from sweep.text import format_value, short_key, table


@dataclass(frozen=True)
class ValueResult:
    label: str  # "optimizer=adam"
    best: float
    top: tuple[float, ...]  # the top trials' metrics, best first
    metrics: tuple[float, ...]  # every trial's metric (NaN for none), for the plot
    trials: int


@dataclass(frozen=True)
class Comparison:
    keys: tuple[str, ...]
    metric: str
    mode: str
    values: tuple[ValueResult, ...]  # best first

    @property
    def clear(self) -> bool:
        if len(self.values) < 2 or not self.values[0].top or not self.values[1].top:
            return False
        worst_of_winner, best_of_runner_up = self.values[0].top[-1], self.values[1].best
        sign = 1.0 if self.mode == "max" else -1.0
        return sign * worst_of_winner > sign * best_of_runner_up

    def lines(self) -> list[str]:
        header = ["value", f"best {self.metric}", "top trials (spread)", "trials"]
        body = [
            [
                v.label,
                format_value(v.best) if math.isfinite(v.best) else "-",
                _spread(v.top),
                str(v.trials),
            ]
            for v in self.values
        ]
        lines = [
            f"Scientific comparison of {', '.join(self.keys)} (nuisance dims tuned per value):",
            *("  " + line for line in table([header, *body])),
        ]
        if len(self.values) >= 2 and math.isfinite(self.values[1].best):
            winner, runner_up = self.values[0], self.values[1]
            gap = abs(winner.best - runner_up.best)
            lines.append(
                f"  {winner.label} wins by {format_value(gap)}: even the worst of its top "
                f"{len(winner.top)} trials beats {runner_up.label}'s best."
                if self.clear
                else f"  {winner.label} leads by {format_value(gap)}, within the spread of the "
                "top trials: not conclusive; raise num_samples to tell them apart."
            )
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {
            "keys": list(self.keys),
            "metric": self.metric,
            "clear": self.clear,
            "values": [
                {"value": v.label, "best": v.best, "top": list(v.top), "trials": v.trials}
                for v in self.values
            ],
        }


def compare(
    dims: Sequence[Dimension], rows: Sequence[Any], metric: str, mode: str
) -> Comparison | None:
    """``rows``: TrialRows (with ``values`` and ``best``). None without scientific dims."""
    scientific = [d for d in dims if d.role == "scientific"]
    if not scientific:
        return None
    keys, sign = tuple(d.key for d in scientific), -1.0 if mode == "max" else 1.0
    groups: dict[tuple[Any, ...], list[float]] = {
        combo: [] for combo in itertools.product(*(d.values for d in scientific))
    }
    for row in rows:
        groups.setdefault(tuple(row.values.get(k) for k in keys), []).append(float(row.best))
    results = []
    for combo, metrics in groups.items():
        finite = sorted((m for m in metrics if math.isfinite(m)), key=lambda m: sign * m)
        top = tuple(finite[: top_count(len(finite))])
        best = finite[0] if finite else math.nan
        label = ", ".join(f"{short_key(k)}={v}" for k, v in zip(keys, combo, strict=True))
        results.append(ValueResult(label, best, top, tuple(metrics), len(metrics)))
    results.sort(key=lambda r: (math.isnan(r.best), sign * r.best if math.isfinite(r.best) else 0))
    return Comparison(keys, metric, mode, tuple(results))


def _spread(top: tuple[float, ...]) -> str:
    if not top:
        return "-"
    return f"{format_value(min(top))}..{format_value(max(top))} ({len(top)})"
