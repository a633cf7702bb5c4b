"""`--param KEY=RANGE` parsing and the trial configurations it gives (no Dask needed)."""
from __future__ import annotations

import math
import random
import sys

import pytest

from cnncalc.errors import TrainError
from cnncalc.sweep.driver import METHODS, SweepConfig, require_dask
from cnncalc.sweep.space import RANGES, SweepError, parse_param, parse_params


def test_log_range_samples_inside_and_grids_evenly_in_log():
    d = parse_param("learning_rate=log:1e-4:1e-1")
    assert d.key == "lr" and d.kind == "log" and d.log_scale
    rng = random.Random(0)
    draws = [d.sample(rng) for _ in range(200)]
    assert all(1e-4 <= v <= 1e-1 for v in draws)
    # log-uniform: about a third of the draws in each decade
    assert 40 < sum(v < 1e-3 for v in draws) < 95
    assert d.grid(4) == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1])
    assert parse_param("lr=log:1e-4:1e-1:2").grid(9) == [1e-4, 1e-1]


def test_lin_int_and_list_forms():
    lin = parse_param("momentum=lin:0.5:0.9")
    assert lin.grid(3) == pytest.approx([0.5, 0.7, 0.9])
    ints = parse_param("batch_size=int:16:20")
    assert ints.grid(3) == [16, 17, 18, 19, 20]
    rng = random.Random(1)
    assert {ints.sample(rng) for _ in range(100)} == {16, 17, 18, 19, 20}
    # an integer setting rounds what a log range draws
    assert all(isinstance(parse_param("batch_size=log:16:256").sample(rng), int)
               for _ in range(10))
    opt = parse_param("optim=SGD, momentum,adam")
    assert (opt.key, opt.kind, opt.values) == ("optimizer", "choice", ("sgd", "momentum", "adam"))
    assert not opt.numeric
    assert parse_param("init=he,xavier").values == ("he", "xavier")
    assert parse_param("epochs=3").values == (3,)


@pytest.mark.parametrize("text, message", [
    ("lr", "expected KEY=RANGE"),
    ("lr=log:0:1", "0 < LOW <= HIGH"),
    ("lr=lin:1:0.1", "LOW <= HIGH"),
    ("lr=log:a:1", "must be float numbers"),
    ("lr=log:1e-3", "expected log:LOW:HIGH"),
    ("batch_size=int:1.5:4", "must be int numbers"),
])
def test_bad_ranges_say_what_is_wrong(text, message):
    with pytest.raises(SweepError, match=message) as err:
        parse_param(text)
    assert err.value.where == f"--param {text}"


def test_values_go_through_the_settings_declarations():
    with pytest.raises(TrainError, match="unknown training setting 'lrr'") as err:
        parse_param("lrr=log:1e-3:1e-1")
    assert "'lr'" in err.value.hint
    with pytest.raises(TrainError, match="unknown value 'adamm'"):
        parse_param("optimizer=sgd,adamm")
    with pytest.raises(TrainError, match=r"momentum: must be in \[0, 1\)"):
        parse_param("momentum=lin:0.5:1.5")
    with pytest.raises(SweepError, match="swept twice"):
        parse_params(["lr=0.1", "learning_rate=0.2"])


def test_methods_give_the_configurations():
    dims = parse_params(["lr=log:1e-3:1e-1", "optimizer=sgd,adam"])
    grid = METHODS.get("grid")(dims, SweepConfig("s.yaml", [], "out", grid_points=3))
    assert len(grid) == 6
    assert {(c["lr"], c["optimizer"]) for c in grid} == {
        (lr, o) for lr in (0.001, 0.01, 0.1) for o in ("sgd", "adam")}
    cfg = SweepConfig("s.yaml", [], "out", trials=5, sample_seed=7)
    draws = METHODS.get("random")(dims, cfg)
    assert draws == METHODS.get("random")(dims, cfg)   # the same seed, the same trials (resume)
    assert len(draws) == 5 and all(1e-3 <= c["lr"] <= 0.1 for c in draws)
    assert METHODS.canonical("asha") == "halving"
    assert set(RANGES.names()) == {"log", "lin", "int"}
    assert math.isclose(parse_param("lr=log:1e-4:1e-2:1").grid(3)[0], 1e-3)


def test_missing_dask_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(SweepError) as err:
        require_dask()
    assert str(err.value) == ('error: cnncalc sweep needs dask.distributed: '
                              'pip install "cnncalc[sweep]"')


def test_missing_tensorboardx_names_the_pip_command(monkeypatch):
    from cnncalc.train.tensorboard import TensorBoardLogger

    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(TrainError, match=r'pip install "cnncalc\[tensorboard\]"'):
        TensorBoardLogger("tb")
