"""How values, tables and durations are written for people: 3.2e-3, 0.9722, 128, 0.9995.

One place, so the progress line, the summary, MLflow run names and the parent run's
description all show a value the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol


class Dimension(Protocol):
    """What formatting needs of a search-space dimension (sweep.config.space.Dimension)."""

    @property
    def key(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def scale(self) -> str: ...


def format_value(value: Any) -> str:
    """A metric or an untuned number: four significant digits, scientific when tiny or huge."""
    if not isinstance(value, float) or not math.isfinite(value):  # ints, bools, words, nan, inf
        return str(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return _scientific(value, 3)
    return f"{value:#.4g}".rstrip(".")  # 0.9750, not 0.975: metrics line up in columns


def format_param(value: Any, dim: Dimension | None = None) -> str:
    """A sampled hyperparameter, in the scale it was sampled in: log-scale values as
    ``3.2e-3`` (the exponent is what matters), ``one_minus_log`` ones with enough nines
    (0.9995), linear ones with three significant digits."""
    if not isinstance(value, float) or not math.isfinite(value):
        return format_value(value)
    if dim is not None and dim.type == "one_minus_log" and 0 < value < 1:
        decimals = 1 - math.floor(math.log10(1 - value))  # two digits of 1 - value
        return f"{value:.{decimals}f}"
    log = dim is not None and dim.scale == "log" and value > 0
    if log or (value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5)):
        return _scientific(value, 2)
    return f"{value:.3g}"


def _scientific(value: float, digits: int) -> str:
    """``0.0032`` → ``3.2e-3`` (no zero-padded exponent, no trailing zeros)."""
    mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def short_key(key: str) -> str:
    """``model.lr`` → ``lr``: the last part of one key (see :func:`short_keys` for a set)."""
    return key.rsplit(".", 1)[-1]


def short_keys(keys: Iterable[str]) -> dict[str, str]:
    """``model.lr`` → ``lr``: the shortest dotted suffix that still tells the keys apart
    (``model.lr`` and ``optim.lr`` stay whole)."""
    keys = list(keys)
    short: dict[str, str] = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            suffix = ".".join(parts[-n:])
            if sum(1 for k in keys if k == suffix or k.endswith("." + suffix)) == 1:
                short[key] = suffix
                break
        else:
            short[key] = key
    return short


def describe_point(values: Mapping[str, Any], dims: Sequence[Dimension] = ()) -> str:
    """``lr=3.2e-3 hidden=128 dropout=0.21``: a trial's point, for run names and tables."""
    by_key = {dim.key: dim for dim in dims}
    names = short_keys(values)
    return " ".join(f"{names[k]}={format_param(v, by_key.get(k))}" for k, v in values.items())


def table(cells: Sequence[Sequence[str]]) -> list[str]:
    """Text columns: numbers right-aligned, words left-aligned; the first row is a header."""
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    numeric = [all(_is_number(line[i]) for line in cells[1:]) for i in range(len(cells[0]))]
    return [
        "  ".join(
            (cell.rjust(w) if num else cell.ljust(w))
            for cell, w, num in zip(line, widths, numeric, strict=True)
        ).rstrip()
        for line in cells
    ]


def _is_number(text: str) -> bool:
    try:
        float(text.rstrip("%x").lstrip("+"))
    except ValueError:
        return text == "-"
    return True


def duration(seconds: float, clock: bool = False) -> str:
    """``18s``, ``2m05s``, ``1h02m``; as a clock (``00:18``, ``1:02:05``) for a live line."""
    seconds = int(seconds)
    hours, minutes, secs = seconds // 3600, seconds % 3600 // 60, seconds % 60
    if clock:
        return f"{hours:d}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
