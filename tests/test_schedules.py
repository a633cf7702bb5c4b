"""LR schedules: closed-form values, boundaries (step edges, warm-up end), properties."""
from __future__ import annotations

import math

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cnncalc.errors import TrainError
from cnncalc import schedules
from cnncalc.schedules import SCHEDULES, create, scale_lr_with_batch

CASES = [
    # (name, kwargs, t, expected)
    ("constant", {}, 0, 0.1),
    ("constant", {}, 1000, 0.1),
    ("step", {"step_size": 10, "gamma": 0.5}, 9, 0.1),
    ("step", {"step_size": 10, "gamma": 0.5}, 10, 0.05),
    ("step", {"step_size": 10, "gamma": 0.5}, 25, 0.025),
    ("step", {"milestones": [30, 60, 90]}, 29, 0.1),
    ("step", {"milestones": [30, 60, 90]}, 30, 0.01),
    ("step", {"milestones": [30, 60, 90]}, 60, 0.001),
    ("step", {"milestones": [30, 60, 90]}, 100, 0.0001),
    ("exponential", {"k": 0.1}, 0, 0.1),
    ("exponential", {"k": 0.1}, 10, 0.1 * math.exp(-1)),
    ("inverse_time", {"k": 0.5}, 0, 0.1),
    ("inverse_time", {"k": 0.5}, 4, 0.1 / 3),
    ("cosine", {"total": 100}, 0, 0.1),
    ("cosine", {"total": 100}, 50, 0.05),
    ("cosine", {"total": 100}, 25, 0.05 * (1 + math.cos(math.pi / 4))),
    ("cosine", {"total": 100}, 100, 0.0),
    ("cosine", {"total": 100}, 150, 0.0),
    ("cosine", {"total": 100, "min_lr": 0.01}, 50, 0.055),
    ("linear", {"total": 10}, 0, 0.1),
    ("linear", {"total": 10}, 3, 0.07),
    ("linear", {"total": 10}, 10, 0.0),
    ("linear", {"total": 10}, 11, 0.0),
    ("inverse_sqrt", {}, 0, 0.1),
    ("inverse_sqrt", {}, 1, 0.1),
    ("inverse_sqrt", {}, 4, 0.05),
    ("inverse_sqrt", {}, 100, 0.01),
]


@pytest.mark.parametrize(("name", "kw", "t", "expected"), CASES)
def test_values(name, kw, t, expected):
    assert create(name, lr=0.1, **kw)(t) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_warmup_boundary_and_shift():
    s = create("cosine", lr=0.1, total=110, warmup=10)
    # warm-up: lr * (t + 1) / W, reaching lr at t = W - 1
    assert s(0) == pytest.approx(0.01)
    assert s(4) == pytest.approx(0.05)
    assert s(9) == pytest.approx(0.1)
    # decay runs on t - W over total - W steps
    assert s(10) == pytest.approx(0.1)
    assert s(60) == pytest.approx(0.05)
    assert s(110) == 0.0


def test_warmup_constant_and_milestones_absolute():
    s = create("constant", lr=0.4, warmup=4)
    assert [s(t) for t in range(6)] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4])
    st_ = create("step", lr=1.0, milestones=[30, 60], warmup=5)
    assert st_(29) == 1.0 and st_(30) == pytest.approx(0.1) and st_(60) == pytest.approx(0.01)
    ss = create("step", lr=1.0, step_size=10, gamma=0.5, warmup=5)
    assert ss(14) == 1.0 and ss(15) == 0.5  # step_size counts from the end of warm-up


@pytest.mark.parametrize("warmup", [0, 7])
@pytest.mark.parametrize(("name", "kw"), [
    ("constant", {}), ("step", {"milestones": [20, 40]}), ("step", {"step_size": 3}),
    ("exponential", {"k": 0.05}), ("inverse_time", {"k": 0.2}), ("cosine", {"total": 50}),
    ("linear", {"total": 50, "min_lr": 0.001}), ("inverse_sqrt", {}),
])
def test_get_config_round_trip(name, kw, warmup):
    s = create(name, lr=0.1, warmup=warmup, **kw)
    cfg = yaml.safe_load(yaml.safe_dump(s.get_config()))
    again = schedules.get(cfg)
    assert again.get_config() == s.get_config()
    assert [again(t) for t in range(60)] == [s(t) for t in range(60)]


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(["cosine", "linear", "step", "exponential", "inverse_time",
                             "inverse_sqrt"]),
       lr=st.floats(1e-5, 10.0), total=st.integers(2, 500), warmup=st.integers(0, 20),
       data=st.data())
def test_decay_monotone_and_bounded(name, lr, total, warmup, data):
    if warmup >= total:
        warmup = 0
    kw = {"cosine": {"total": total}, "linear": {"total": total}, "step": {"step_size": 7},
          "exponential": {"k": 0.01}, "inverse_time": {"k": 0.1}, "inverse_sqrt": {}}[name]
    s = create(name, lr=lr, warmup=warmup, **kw)
    ts = sorted(data.draw(st.lists(st.integers(0, 3 * total), min_size=2, max_size=30)))
    vals = [s(t) for t in ts]
    assert all(0.0 <= v <= lr * (1 + 1e-12) for v in vals)
    after = [s(t) for t in ts if t >= warmup]
    assert all(b <= a + 1e-12 * lr for a, b in zip(after, after[1:], strict=False))
    during = [s(t) for t in ts if t < warmup]
    assert all(b >= a - 1e-12 * lr for a, b in zip(during, during[1:], strict=False))


def test_scale_lr_with_batch():
    assert scale_lr_with_batch(0.1, 1024) == pytest.approx(0.4)
    assert scale_lr_with_batch(0.1, 32, base_batch=256) == pytest.approx(0.0125)
    with pytest.raises(TrainError, match="batch must be >= 1"):
        scale_lr_with_batch(0.1, 0)


def test_registry_table():
    assert set(SCHEDULES.names()) == {"constant", "step", "exponential", "inverse_time",
                                      "cosine", "linear", "inverse_sqrt"}
    assert all(e.obj.name == e.name for e in SCHEDULES)


@pytest.mark.parametrize(("name", "kw", "msg"), [
    ("cosine", {}, "cosine needs total"),
    ("exponential", {}, "exponential needs k"),
    ("cosine", {"total": 0}, "total must be >= 1"),
    ("step", {}, "exactly one of step_size or milestones"),
    ("step", {"step_size": 2, "milestones": [3]}, "exactly one"),
    ("step", {"milestones": [30, 20]}, "strictly increasing"),
    ("step", {"step_size": 2, "gamma": 1.5}, r"gamma must be in \(0, 1\]"),
    ("exponential", {"k": -1}, r"k must be in \[0, inf\)"),
    ("linear", {"total": 10, "warmup": 10}, "larger than warmup"),
    ("step", {"milestones": [3, 30], "warmup": 5}, "after the warm-up"),
    ("cosine", {"total": 10, "T": 3}, "unknown argument.*T"),
    ("poly", {}, "unknown schedule 'poly'"),
    ("linear", {"total": 10, "min_lr": 1.0}, "must not exceed lr"),
])
def test_invalid(name, kw, msg):
    with pytest.raises(TrainError, match=msg):
        create(name, lr=0.1, **kw)


def test_invalid_lr_and_t():
    with pytest.raises(TrainError, match="lr must be"):
        create("constant", lr=-0.1)
    s = create("constant", lr=0.1)
    with pytest.raises(TrainError, match="must be >= 0"):
        s(-1)
    with pytest.raises(TrainError, match="must be an integer"):
        s(1.5)
