"""The search space: YAML spec → typed dimensions, and sampled values → a trial's config
(Ray Tune's domains for them are made in sweep/run/tuner.py).

A spec is nested like the config it samples; each leaf is a mapping with a ``type``::

    model:
      lr: {type: loguniform, low: 1.0e-4, high: 1.0e-1}
      hidden: {type: choice, values: [64, 128, 256]}

Integer ranges are inclusive at both ends. Any dimension may carry ``role: scientific`` (a choice or
grid whose values are compared fairly: every value is run and the other dimensions are tuned
separately for each, see ``sweep/stages.py``) or ``role: nuisance`` (the default: tuned, to be
optimised away). ``one_minus_log`` samples ``1 - x`` log-uniformly for parameters near 1 (momentum,
Adam's β2): the searcher sees ``1 - x``, the config gets ``x``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sweep.config.redact import flatten
from sweep.errors import ConfigError

# type → (required keys, scale the searcher samples in); every type also takes a ``role``.
TYPES: dict[str, tuple[tuple[str, ...], str]] = {
    "uniform": (("low", "high"), "linear"),
    "quniform": (("low", "high", "q"), "linear"),
    "loguniform": (("low", "high"), "log"),
    "qloguniform": (("low", "high", "q"), "log"),
    "randint": (("low", "high"), "linear"),
    "qrandint": (("low", "high", "q"), "linear"),
    "lograndint": (("low", "high"), "log"),
    "qlograndint": (("low", "high", "q"), "log"),
    "one_minus_log": (("low", "high"), "log"),
    "choice": (("values",), "categorical"),
    "grid": (("values",), "categorical"),
}
ROLES = ("nuisance", "scientific")
_MISSING = object()
INTEGER_TYPES = {"randint", "qrandint", "lograndint", "qlograndint"}
_RESOLVER_CALL = re.compile(r"\$\{\s*[\w.]+\s*:")  # ${now:...}, ${hydra:...}: not ${a.b}


@dataclass(frozen=True)
class Dimension:
    """One tuned key: ``key`` is the dotted path of the config value it sets."""

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    q: float | None = None
    values: tuple[Any, ...] = ()
    role: str = "nuisance"
    # Conditional: sampled only in trials where each (dimension key, allowed values) holds,
    # e.g. (("model.optimizer", ("sgd",)),). Elsewhere the key keeps its config value.
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    @property
    def scale(self) -> str:
        return TYPES[self.type][1]

    @property
    def is_numeric(self) -> bool:
        return self.scale != "categorical"

    @property
    def is_continuous(self) -> bool:
        """A float that can move a little (pbt perturbs these; not widths or choices)."""
        return self.is_numeric and self.type not in INTEGER_TYPES


def parse_space(spec: Mapping[str, Any] | None, prefix: str = "search_space") -> list[Dimension]:
    """Flatten and validate a nested spec. Raises ConfigError naming the bad key."""
    dims = _parse_nodes(spec, prefix)
    if prefix == "search_space":
        _check_conditions(dims)
    return dims


def _parse_nodes(spec: Mapping[str, Any] | None, prefix: str) -> list[Dimension]:
    dims: list[Dimension] = []
    for name, node in (spec or {}).items():
        path = f"{prefix}.{name}"
        if not isinstance(node, Mapping):
            raise ConfigError(
                path,
                f"expected a dimension like {{type: uniform, low: 0, high: 1}} or a nested "
                f"group, got {node!r}",
            )
        if "type" in node:
            dims.append(parse_dimension(path, node))
        else:
            dims.extend(_parse_nodes(node, path))
    return dims


def _check_conditions(dims: list[Dimension]) -> None:
    """A condition names another choice dimension of the space, and values it has."""
    by_key = {dim.key: dim for dim in dims}
    for dim in dims:
        for key, allowed in dim.when:
            where = f"search_space.{dim.key}.when.{key}"
            other = by_key.get(key)
            if other is None or other.type not in ("choice", "grid") or other is dim:
                raise ConfigError(
                    where,
                    "must name another choice dimension of the search space, e.g. "
                    "when: {model.optimizer: sgd} with model.optimizer: {type: choice, ...}",
                )
            if other.when:
                raise ConfigError(where, f"{key} is conditional itself; conditions do not chain")
            if unknown := [v for v in allowed if v not in other.values]:
                raise ConfigError(where, f"{unknown[0]!r} is not one of {list(other.values)}")


def _parse_when(path: str, when: Any) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if when is None:
        return ()
    if not isinstance(when, Mapping) or not when:
        raise ConfigError(f"{path}.when", f"expected {{dimension key: value(s)}}, got {when!r}")
    return tuple(
        (str(key), tuple(value) if isinstance(value, (list, tuple)) else (value,))
        for key, value in when.items()
    )


def active(dim: Dimension, values: Mapping[str, Any]) -> bool:
    """Whether a conditional dimension is sampled for a trial with these values."""
    return all(values.get(key, _MISSING) in allowed for key, allowed in dim.when)


def parse_dimension(path: str, node: Mapping[str, Any]) -> Dimension:
    kind = node["type"]
    if kind not in TYPES:
        raise ConfigError(path, f"unknown type {kind!r}; use one of: {', '.join(TYPES)}")
    required, scale = TYPES[kind]
    if missing := [k for k in required if node.get(k) is None]:
        example = "values: [a, b]" if kind in ("choice", "grid") else "low: 0, high: 1"
        raise ConfigError(
            path, f"type {kind} needs {', '.join(missing)}; e.g. {{type: {kind}, {example}}}"
        )
    if extra := sorted(set(node) - {"type", "role", "when", *required}):
        raise ConfigError(
            f"{path}.{extra[0]}",
            f"type {kind} takes {', '.join(required)} (and role, when), not {extra[0]}; remove it",
        )
    key = path.split(".", 1)[1]
    role = _role(path, kind, node.get("role"))
    when = _parse_when(path, node.get("when"))
    if when and role == "scientific":
        raise ConfigError(f"{path}.when", "a scientific dimension is compared in every trial")
    if kind in ("choice", "grid"):
        values = node["values"]
        if not isinstance(values, (list, tuple)):
            raise ConfigError(f"{path}.values", f"expected a list, got {values!r}")
        if not values:
            raise ConfigError(f"{path}.values", "is empty; list at least one value")
        return Dimension(key, kind, values=tuple(values), role=role, when=when)
    low, high = _number(path, "low", node["low"]), _number(path, "high", node["high"])
    q = _number(path, "q", node["q"]) if "q" in required else None
    if low >= high:
        raise ConfigError(path, f"low ({low}) must be below high ({high})")
    if scale == "log" and kind != "one_minus_log" and low <= 0:
        raise ConfigError(f"{path}.low", f"{low} is not positive; a log scale needs low > 0")
    if kind == "one_minus_log" and not (0 < low < high < 1):
        raise ConfigError(path, f"one_minus_log needs 0 < low < high < 1, got [{low}, {high}]")
    if kind in INTEGER_TYPES and (low != int(low) or high != int(high)):
        raise ConfigError(path, f"type {kind} needs whole-number bounds, got [{low}, {high}]")
    if q is not None and q <= 0:
        raise ConfigError(f"{path}.q", f"{q} must be positive")
    return Dimension(key, kind, low=low, high=high, q=q, when=when)


def _role(path: str, kind: str, role: Any) -> str:
    if role is None:
        return "nuisance"
    if role not in ROLES:
        raise ConfigError(f"{path}.role", f"{role!r} is not a role; use one of: {', '.join(ROLES)}")
    if role == "scientific" and kind not in ("choice", "grid"):
        raise ConfigError(
            f"{path}.role",
            f"a scientific dimension compares listed values, so it needs type choice or grid, "
            f"not {kind}; e.g. {{type: choice, values: [adam, sgd], role: scientific}}",
        )
    return str(role)


def _number(path: str, name: str, value: Any) -> float:
    # YAML reads 1e-4 (no dot) as a string; accept it rather than fail on a technicality.
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{path}.{name}", f"{value!r} is not a number") from None
    if not math.isfinite(number) or isinstance(value, bool):
        raise ConfigError(f"{path}.{name}", f"{value!r} is not a finite number")
    return number


def to_value(dim: Dimension, sampled: Any) -> Any:
    """The config value for a sampled point (undoes one_minus_log's transform). A numpy
    scalar (BOHB's ConfigSpace samples them) becomes the Python value a config holds."""
    if hasattr(sampled, "item"):
        sampled = sampled.item()
    return 1.0 - float(sampled) if dim.type == "one_minus_log" else sampled


def fixed_points(dims: list[Dimension], points: Any) -> list[dict[str, Any]]:
    """``searcher.points`` (a list of configs nested like the search space, e.g.
    ``{model: {lr: 0.01, hidden: 64}}``) → points as the searcher sees them, tried first.
    Raises ConfigError on a key that is not a dimension of the space."""
    if points is None:
        return []
    if not isinstance(points, (list, tuple)):
        raise ConfigError("searcher.points", f"expected a list of points, got {points!r}")
    by_key = {dim.key: dim for dim in dims}
    out = []
    for i, point in enumerate(points):
        flat = flatten(point) if isinstance(point, Mapping) else None
        if not flat:
            raise ConfigError(f"searcher.points[{i}]", f"expected a mapping, got {point!r}")
        if unknown := sorted(set(flat) - set(by_key)):
            raise ConfigError(
                f"searcher.points[{i}]",
                f"{unknown[0]} is not in the search space; tuned keys: {', '.join(by_key)}",
            )
        # to_value's inverse, as the searcher sees the point: 1 - x is its own inverse
        out.append({key: to_value(by_key[key], value) for key, value in flat.items()})
    return out


def config_values(dims: list[Dimension], sampled: Mapping[str, Any]) -> dict[str, Any]:
    """Sampled point (as Tune gives it) → {dotted config key: value}, without conditional
    keys whose condition fails (the searcher drew them; the trial does not get them)."""
    values = {dim.key: to_value(dim, sampled[dim.key]) for dim in dims if dim.key in sampled}
    return {dim.key: values[dim.key] for dim in dims if dim.key in values and active(dim, values)}


def portable_config(cfg: DictConfig) -> dict[str, Any]:
    """A plain dict for trials: resolver calls (``${now:...}``, ``${hydra:...}``) are
    resolved here on the driver, where they work; plain references such as
    ``${model.hidden}`` are kept so that a sampled value reaches every key that uses it."""
    container = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(container, dict)

    def pin(node: Any, path: list[str]) -> Any:
        if isinstance(node, dict):
            return {k: pin(v, [*path, str(k)]) for k, v in node.items()}
        if isinstance(node, list):
            return [pin(v, [*path, str(i)]) for i, v in enumerate(node)]
        if isinstance(node, str) and _RESOLVER_CALL.search(node):
            return OmegaConf.select(cfg, ".".join(path))
        return node

    return pin(container, [])


def apply_values(base: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """Set each dotted key to its value, then resolve interpolations so that keys which
    reference a sampled key see the sampled value."""
    cfg = OmegaConf.create(dict(base))
    for key, value in values.items():
        OmegaConf.update(cfg, key, value, merge=False)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    return {str(k): v for k, v in resolved.items()}


def to_scale(dim: Dimension, value: float) -> float:
    """The coordinate the searcher samples uniformly; increasing in ``value``."""
    if dim.type == "one_minus_log":
        return -math.log10(1.0 - float(value))
    return math.log10(float(value)) if dim.scale == "log" else float(value)


def bounds(dim: Dimension) -> tuple[float, float]:
    assert dim.low is not None and dim.high is not None, "numeric dimensions have bounds"
    return to_scale(dim, dim.low), to_scale(dim, dim.high)


def position(dim: Dimension, value: float) -> float:
    """0 at ``dim.low``, 1 at ``dim.high``, linear in the sampling scale."""
    low, high = bounds(dim)
    return (to_scale(dim, value) - low) / (high - low)


def at_position(dim: Dimension, u: float) -> float:
    """Inverse of :func:`position`."""
    low, high = bounds(dim)
    coordinate = low + u * (high - low)
    if dim.type == "one_minus_log":
        return 1.0 - 10.0 ** (-coordinate)
    return 10.0**coordinate if dim.scale == "log" else coordinate
