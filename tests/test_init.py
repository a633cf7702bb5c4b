"""Weight initialisation: fan-in, empirical std per scheme, spec forms, init_params rules."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from cnncalc.errors import TrainError
from cnncalc.engine.init import INITS, fan_in, init_params, initialize, parse_spec

SHAPE = (128, 64, 3, 3)  # conv: fan_in = 64 * 3 * 3 = 576; 73,728 values


def test_fan_in():
    assert fan_in((64, 3, 3, 3)) == 27  # lecture: filter_size^2 * input_channels
    assert fan_in((32, 4, 5, 5)) == 100  # grouped conv: C/g = 4
    assert fan_in((10, 500)) == 500
    with pytest.raises(TrainError, match="rank >= 2"):
        fan_in((10,))


@pytest.mark.parametrize(("spec", "std"), [
    ("normal", 0.01), ("normal:1.0", 1.0), (0.05, 0.05), ({"name": "normal", "std": 0.2}, 0.2),
    ("xavier", 1 / math.sqrt(576)), ("he", math.sqrt(2 / 576)),
    ("xavier_uniform", 1 / math.sqrt(576)), ("he_uniform", math.sqrt(2 / 576)),
    ("uniform:0.3", 0.3 / math.sqrt(3)), ("kaiming", math.sqrt(2 / 576)),
])
def test_empirical_std(spec, std):
    w = initialize(spec, SHAPE, np.random.default_rng(0), np.float32)
    assert w.shape == SHAPE and w.dtype == np.float32
    assert abs(w.mean()) < 0.02 * std
    assert w.std() == pytest.approx(std, rel=0.02)


@pytest.mark.parametrize("name", ["xavier_uniform", "he_uniform"])
def test_uniform_bounds(name):
    w = initialize(name, (256, 100), np.random.default_rng(1), np.float64)
    std = (1 if name == "xavier_uniform" else math.sqrt(2)) / math.sqrt(100)
    assert np.abs(w).max() <= math.sqrt(3) * std
    assert np.abs(w).max() > 0.99 * math.sqrt(3) * std


def test_zeros_warns_no_symmetry_breaking():
    with pytest.warns(UserWarning, match="symmetry"):
        w = initialize("zeros", (3, 4), np.random.default_rng(0))
    assert not w.any()


def test_parse_spec_forms():
    assert parse_spec("normal:0.01") == ("normal", {"std": 0.01})
    assert parse_spec("0.5") == ("normal", {"std": 0.5})
    assert parse_spec("He") == ("he", {})
    assert parse_spec({"name": "uniform", "bound": 0.1}) == ("uniform", {"bound": 0.1})
    assert set(INITS.names()) >= {"zeros", "normal", "xavier", "he", "xavier_uniform",
                                 "he_uniform", "uniform"}


@pytest.mark.parametrize(("spec", "msg"), [
    ("glorious", "unknown init 'glorious'"),
    ("he:2", "takes no argument"),
    ("normal:abc", "must be a number"),
    ({"std": 0.1}, "lacks a 'name'"),
    ({"name": "normal", "mean": 1}, "no argument 'mean'"),
    (-0.1, "non-negative"),
    ([1, 2], "cannot read init spec"),
])
def test_bad_specs(spec, msg):
    with pytest.raises(TrainError, match=msg):
        parse_spec(spec)


def test_init_params_rules_and_determinism():
    shapes = {"conv1.weight": (8, 1, 3, 3), "conv1.bias": (8,), "bn1.weight": (8,),
              "bn1.bias": (8,), "bn1.running_mean": (8,), "bn1.running_var": (8,),
              "prelu1.alpha": (8,), "fc.weight": (10, 200), "fc.bias": (10,)}
    p = init_params(shapes, "he", np.random.default_rng(3), np.float32,
                    overrides={"fc": "normal:0.001"})
    assert list(p) == list(shapes)
    assert all(p[k].shape == tuple(s) and p[k].dtype == np.float32 for k, s in shapes.items())
    assert not p["conv1.bias"].any() and not p["fc.bias"].any() and not p["bn1.bias"].any()
    np.testing.assert_array_equal(p["bn1.weight"], 1.0)
    np.testing.assert_array_equal(p["bn1.running_var"], 1.0)
    np.testing.assert_array_equal(p["bn1.running_mean"], 0.0)
    np.testing.assert_array_equal(p["prelu1.alpha"], 0.25)
    assert p["fc.weight"].std() == pytest.approx(0.001, rel=0.1)
    assert p["conv1.weight"].std() == pytest.approx(math.sqrt(2 / 9), rel=0.3)
    again = init_params(shapes, "he", np.random.default_rng(3), np.float32,
                        overrides={"fc": "normal:0.001"})
    for k in p:
        np.testing.assert_array_equal(p[k], again[k])


def test_init_params_errors():
    with pytest.raises(TrainError, match="name no layer: 'fc2'"):
        init_params({"fc.weight": (2, 3)}, "he", np.random.default_rng(0), overrides={"fc2": "he"})
    with pytest.raises(TrainError, match="<layer>.<param>"):
        init_params({"weight": (2, 3)}, "he", np.random.default_rng(0))


def test_init_params_biases_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        init_params({"fc.weight": (2, 3), "fc.bias": (2,)}, "xavier", np.random.default_rng(0))
