"""Hydra Optuna sweeper files, read as they are: a ``hparams_search/<name>.yaml`` written for
``hydra-optuna-sweeper`` (as lightning-hydra-template ships them) becomes this sweep's
search space and settings, without the plugin installed.

    params: {model.optimizer.lr: tag(log, interval(1e-4, 0.1)), data.batch_size: choice(32, 64)}
    direction: maximize      n_trials: 20      sampler: {_target_: ...TPESampler, seed: 1234}
    optimized_metric: val/acc          (a key at the config's top, as the template has it)

Parsed with Hydra's own override grammar, mapped as the plugin maps them to Optuna:
``interval`` → uniform (``randint`` for two integers), ``tag(log, interval)`` → loguniform
(``lograndint``), ``choice`` → choice, ``range(a, b, s)`` → integers a..b in steps of s (as
Optuna's IntDistribution: b included), a plain value → that config value, fixed. A key
given on the command line (``num_samples=4``) wins over the file's setting; the file's
``params`` are the whole search space (change one with ``hydra.sweeper.params.<key>=``,
as with the plugin). Anything the sweep does
another way, or not at all, is one line each.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from omegaconf import DictConfig, OmegaConf, open_dict

from sweep.errors import ConfigError

SWEEPER = "OptunaSweeper"
SAMPLERS = {"TPESampler": "tpe", "RandomSampler": "random", "QMCSampler": "quasi_random"}
DIRECTIONS = {"maximize": "max", "minimize": "min"}
# Keys of the plugin's config the sweep has its own way for.
ELSEWHERE = {
    "storage": "every trial is logged to MLflow (tracking.uri) and the sweep folder",
    "study_name": "the sweep's name is `name`, its MLflow experiment",
    "n_jobs": "trials run in parallel on Ray, as resources allow (max_concurrent caps them)",
    "max_failure_rate": "a failed trial is retried (max_failures) and the sweep goes on",
    "search_space": "use params: (the plugin's newer form)",
    "custom_search_space": "a Python search space function cannot run here; use params:",
}
# What the plugin's own config holds by default (conf/hydra/sweeper/optuna.yaml): not the user's.
DEFAULTS = {"n_jobs": 2, "max_failure_rate": 0.0}


def is_optuna_sweeper(sweeper: Mapping[Any, Any]) -> bool:
    return str(sweeper.get("_target_") or "").endswith(SWEEPER)


def apply(cfg: DictConfig, sweeper: Mapping[Any, Any], given: set[str]) -> list[str]:
    """Turn ``hydra.sweeper`` (the plugin's keys, as a plain dict) into ``cfg``'s search space
    and settings, except the keys in ``given`` (set on the command line). Returns a line
    for each part the sweep does another way; raises ConfigError for what it cannot read."""
    notices = []
    with open_dict(cfg):
        params = sweeper.get("params") or {}
        if params:
            space: dict[str, Any] = {}
            for key, text in params.items():
                dimension = _dimension(str(key), text)
                if dimension is None:  # a fixed value
                    if str(key) not in given:
                        OmegaConf.update(cfg, str(key), _fixed(str(key), text), merge=False)
                    continue
                node = space
                for part in str(key).split(".")[:-1]:
                    node = node.setdefault(part, {})
                node[str(key).rsplit(".", 1)[-1]] = dimension
            cfg.search_space = space  # the file defines the search, whichever group was chosen
        settings = {
            "metric": cfg.get("optimized_metric"),
            "mode": _mode(sweeper.get("direction")),
            "num_samples": sweeper.get("n_trials"),
        }
        sampler = sweeper.get("sampler") or {}
        kind = str(sampler.get("_target_") or "").rsplit(".", 1)[-1]
        if kind:
            if kind not in SAMPLERS:
                known = ", ".join(SAMPLERS)
                notices.append(f"hydra.sweeper.sampler: {kind} is not one of {known}; tpe runs")
            settings["searcher.name"] = SAMPLERS.get(kind, "tpe")
            settings["seed"] = sampler.get("seed")
            if sampler.get("n_startup_trials") is not None:
                settings["searcher.n_startup_trials"] = sampler["n_startup_trials"]
            for extra in sorted(set(sampler) - {"_target_", "seed", "n_startup_trials"}):
                notices.append(f"hydra.sweeper.sampler.{extra}: not passed on; Optuna's default")
        for key, value in settings.items():
            if value is not None and key not in given and key.split(".")[0] not in given:
                OmegaConf.update(cfg, key, value, merge=False)
    for key, why in ELSEWHERE.items():
        if sweeper.get(key) not in (None, DEFAULTS.get(key)):
            notices.append(f"hydra.sweeper.{key}: not used here; {why}")
    return notices


def _mode(direction: Any) -> str | None:
    if direction is None:
        return None
    if isinstance(direction, (list, tuple)) or str(direction) not in DIRECTIONS:
        raise ConfigError(
            "hydra.sweeper.direction",
            f"{direction!r}: one objective, maximize or minimize, is what a sweep optimises",
        )
    return DIRECTIONS[str(direction)]


def _parse(key: str, text: Any) -> Any:
    try:
        return OverridesParser.create().parse_override(f"{key}={text}")
    except Exception as exc:  # Hydra's grammar error: one line of it
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(
            f"hydra.sweeper.params.{key}", f"{text!r} is not a sweep ({first})"
        ) from None


def _fixed(key: str, text: Any) -> Any:
    return _parse(key, text).value() if isinstance(text, str) else text


def _dimension(key: str, text: Any) -> dict[str, Any] | None:
    """The search-space entry for one ``params`` value (None: a fixed value)."""
    if not isinstance(text, str):
        return None
    value = _parse(key, text).value()
    if isinstance(value, ChoiceSweep):
        return {"type": "choice", "values": list(value.list)}
    if isinstance(value, RangeSweep) and not value.shuffle:
        start, stop, step = value.start or 0, value.stop or 0, value.step
        if any(isinstance(v, float) for v in (start, stop, step)):
            return {"type": "quniform", "low": start, "high": stop, "q": step}
        if step == 1:
            return {"type": "randint", "low": int(start), "high": int(stop)}
        return {"type": "qrandint", "low": int(start), "high": int(stop), "q": int(step)}
    if isinstance(value, IntervalSweep):
        log = "log" in (value.tags or set())
        integers = isinstance(value.start, int) and isinstance(value.end, int)
        kind = {(True, True): "lograndint", (True, False): "loguniform"}.get(
            (log, integers), "randint" if integers else "uniform"
        )
        return {"type": kind, "low": value.start, "high": value.end}
    if isinstance(value, (list, dict)) or type(value).__name__.endswith("Sweep"):
        raise ConfigError(
            f"hydra.sweeper.params.{key}",
            f"{text!r}: use interval(...), tag(log, interval(...)), choice(...) or range(...)",
        )
    return None
