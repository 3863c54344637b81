"""The search-space translator, as a table: spec → Tune domain, and every spec we reject."""

from __future__ import annotations

import math

import pytest
from omegaconf import OmegaConf
from ray.tune.search.sample import Categorical, Float, Integer

from sweep.config.settings import load_settings
from sweep.config.space import (
    Dimension,
    apply_values,
    config_values,
    parse_space,
    portable_config,
)
from sweep.errors import ConfigError
from sweep.practice import boundary
from sweep.run.tuner import to_domain

GOOD = [
    # spec, domain class, sampler name, (lower, upper) as Tune stores them
    ({"type": "uniform", "low": 0.0, "high": 0.5}, Float, "Uniform", (0.0, 0.5)),
    ({"type": "quniform", "low": 0, "high": 1, "q": 0.1}, Float, "Quantized", (0.0, 1.0)),
    ({"type": "loguniform", "low": 1e-4, "high": 1e-1}, Float, "LogUniform", (1e-4, 1e-1)),
    ({"type": "loguniform", "low": "1e-4", "high": "1e-1"}, Float, "LogUniform", (1e-4, 1e-1)),
    ({"type": "qloguniform", "low": 1e-4, "high": 1, "q": 1e-4}, Float, "Quantized", (1e-4, 1.0)),
    # Integer ranges are inclusive: Tune's randint/lograndint exclude high, so we add 1.
    ({"type": "randint", "low": 1, "high": 4}, Integer, "Uniform", (1, 5)),
    ({"type": "lograndint", "low": 16, "high": 512}, Integer, "LogUniform", (16, 513)),
    ({"type": "qrandint", "low": 8, "high": 64, "q": 8}, Integer, "Quantized", (8, 64)),
    ({"type": "qlograndint", "low": 8, "high": 512, "q": 8}, Integer, "Quantized", (8, 512)),
    # 1-β sampled log-uniformly: β in [0.9, 0.999] → 1-β in [1e-3, 1e-1].
    ({"type": "one_minus_log", "low": 0.9, "high": 0.999}, Float, "LogUniform", (1e-3, 1e-1)),
    ({"type": "choice", "values": [64, 128]}, Categorical, "Uniform", None),
]


@pytest.mark.parametrize(("spec", "domain_cls", "sampler", "bounds"), GOOD)
def test_spec_translates_to_tune_domain(spec, domain_cls, sampler, bounds) -> None:
    (dim,) = parse_space({"model": {"x": spec}})
    domain = to_domain(dim)
    assert dim.key == "model.x"
    assert isinstance(domain, domain_cls)
    assert type(domain.get_sampler()).__name__.lstrip("_") == sampler
    if bounds is not None:
        assert math.isclose(domain.lower, bounds[0]) and math.isclose(domain.upper, bounds[1])


def test_grid_translates_to_grid_search() -> None:
    (dim,) = parse_space({"model": {"optimizer": {"type": "grid", "values": ["adam", "sgd"]}}})
    assert to_domain(dim) == {"grid_search": ["adam", "sgd"]}


def test_one_minus_log_gives_beta_back() -> None:
    (dim,) = parse_space({"model": {"beta2": {"type": "one_minus_log", "low": 0.9, "high": 0.999}}})
    assert config_values([dim], {"model.beta2": 0.001}) == {"model.beta2": pytest.approx(0.999)}
    samples = [to_domain(dim).sample() for _ in range(200)]
    assert all(1e-3 <= s <= 1e-1 for s in samples)


BAD = [
    ({"type": "logunform", "low": 1, "high": 2}, "search_space.m.x: unknown type 'logunform'"),
    ({"type": "uniform", "low": 1}, "search_space.m.x: type uniform needs high"),
    ({"type": "uniform", "low": 1, "high": 1}, "low (1.0) must be below high (1.0)"),
    ({"type": "uniform", "low": 2, "high": 1}, "low (2.0) must be below high (1.0)"),
    ({"type": "uniform", "low": "a", "high": 1}, "search_space.m.x.low: 'a' is not a number"),
    ({"type": "loguniform", "low": 0, "high": 1}, "search_space.m.x.low: 0.0 is not positive"),
    ({"type": "lograndint", "low": -1, "high": 8}, "search_space.m.x.low: -1.0 is not positive"),
    ({"type": "randint", "low": 1.5, "high": 8}, "needs whole-number bounds"),
    ({"type": "quniform", "low": 0, "high": 1, "q": 0}, "search_space.m.x.q: 0.0 must be positive"),
    ({"type": "one_minus_log", "low": 0.9, "high": 1.0}, "needs 0 < low < high < 1"),
    ({"type": "choice", "values": []}, "search_space.m.x.values: is empty"),
    ({"type": "choice", "values": "adam"}, "search_space.m.x.values: expected a list"),
    ({"type": "grid"}, "type grid needs values"),
    ({"type": "uniform", "low": 0, "high": 1, "step": 2}, "not step"),
    (0.5, "search_space.m.x: expected a dimension like"),
]


@pytest.mark.parametrize(("spec", "message"), BAD)
def test_bad_spec_is_rejected_with_key_and_fix(spec, message) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_space({"m": {"x": spec}})
    assert message in str(caught.value)


def test_sampled_value_reaches_interpolating_keys() -> None:
    cfg = OmegaConf.create(
        {
            "model": {"hidden": 64, "head": "${model.hidden}"},
            "data": {"batch_size": "${mul:2,8}"},
            "seed": 0,
        }
    )
    OmegaConf.register_new_resolver("mul", lambda a, b: int(a) * int(b), replace=True)
    base = portable_config(cfg)
    # resolver calls are resolved on the driver; references stay live for sampling
    assert base["data"]["batch_size"] == 16
    assert base["model"]["head"] == "${model.hidden}"
    applied = apply_values(base, {"model.hidden": 256})
    assert applied["model"] == {"hidden": 256, "head": 256}


ROLES = [
    ({"type": "choice", "values": ["adam", "sgd"], "role": "scientific"}, "scientific"),
    ({"type": "grid", "values": [1, 2], "role": "scientific"}, "scientific"),
    ({"type": "loguniform", "low": 1e-4, "high": 1e-1, "role": "nuisance"}, "nuisance"),
    ({"type": "uniform", "low": 0, "high": 1}, "nuisance"),
]


@pytest.mark.parametrize(("spec", "role"), ROLES)
def test_dimension_role(spec, role) -> None:
    (dim,) = parse_space({"m": {"x": spec}})
    assert dim.role == role


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "uniform", "low": 0, "high": 1, "role": "scientific"}, "needs type choice"),
        ({"type": "choice", "values": [1], "role": "fixed"}, "search_space.m.x.role: 'fixed'"),
    ],
)
def test_bad_role_is_rejected(spec, message) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_space({"m": {"x": spec}})
    assert message in str(caught.value)


# ---- conditional dimensions: `when: {<choice key>: value(s)}` ----------------------------
CONDITIONAL = {
    "model": {
        "optimizer": {"type": "choice", "values": ["adam", "sgd"]},
        "beta1": {
            "type": "one_minus_log",
            "low": 0.8,
            "high": 0.99,
            "when": {"model.optimizer": "sgd"},
        },
    }
}


def test_a_conditional_key_reaches_only_the_trials_whose_condition_holds() -> None:
    optimizer, beta1 = parse_space(CONDITIONAL)
    assert beta1.when == (("model.optimizer", ("sgd",)),)
    sgd = config_values([optimizer, beta1], {"model.optimizer": "sgd", "model.beta1": 0.1})
    assert sgd == {"model.optimizer": "sgd", "model.beta1": pytest.approx(0.9)}
    adam = config_values([optimizer, beta1], {"model.optimizer": "adam", "model.beta1": 0.1})
    assert adam == {"model.optimizer": "adam"}  # beta1 keeps its config value there


@pytest.mark.parametrize(
    "when,key,message",
    [
        ({"model.hidden": 64}, "search_space.model.beta1.when.model.hidden", "another choice"),
        ({"model.optimizer": "rmsprop"}, "search_space.model.beta1.when.model.optimizer",
         "'rmsprop' is not one of ['adam', 'sgd']"),
        ("sgd", "search_space.model.beta1.when", "expected {dimension key: value(s)}"),
    ],
)  # fmt: skip
def test_a_bad_condition_names_its_key(when: object, key: str, message: str) -> None:
    spec = {"model": {**CONDITIONAL["model"], "beta1": {**CONDITIONAL["model"]["beta1"]}}}
    spec["model"]["beta1"]["when"] = when
    with pytest.raises(ConfigError) as error:
        parse_space(spec)
    assert error.value.key == key and message in str(error.value)


def test_searchers_that_sample_every_key_refuse_conditions(composed) -> None:
    beta1 = (
        "+search_space.model.beta1={type: one_minus_log, low: 0.8, high: 0.99, "
        "when: {model.optimizer: sgd}}"
    )
    optimizer = "+search_space.model.optimizer={type: choice, values: [adam, sgd]}"
    assert load_settings(composed(optimizer, beta1, "searcher=quasi_random")).dims[-1].when
    with pytest.raises(ConfigError) as error:
        load_settings(composed(optimizer, beta1, "searcher=tpe"))
    assert error.value.key == "search_space.model.beta1.when"
    assert "need searcher=random or quasi_random" in str(error.value)


def test_the_boundary_check_judges_a_conditional_key_on_the_trials_that_had_it() -> None:
    _, beta1 = parse_space(CONDITIONAL)
    lr = Dimension("model.lr", "loguniform", low=1e-4, high=1e-1)
    # Best first: the sgd trials' beta1 crowds the low edge; adam trials never had it.
    ranked = [
        {"model.lr": 1e-2, "model.beta1": 0.801},
        {"model.lr": 2e-3},
        {"model.lr": 5e-3, "model.beta1": 0.802},
        {"model.lr": 1e-3},
        {"model.lr": 3e-4, "model.beta1": 0.81},
        {"model.lr": 2e-4},
        {"model.lr": 4e-4, "model.beta1": 0.95},
        {"model.lr": 5e-4, "model.beta1": 0.97},
        {"model.lr": 6e-4, "model.beta1": 0.98},
        {"model.lr": 7e-4, "model.beta1": 0.985},
    ]
    flagged = [w.key for w in boundary.check([lr, beta1], ranked)]
    assert "model.beta1" in flagged
