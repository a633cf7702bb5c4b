"""Optimizers: hand-computed steps from the lecture's pseudo-code, equivalences, torch parity."""
from __future__ import annotations

import math

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cnncalc.errors import TrainError
from cnncalc import optim
from cnncalc.optim import OPTIMIZERS, create

# Tiny problem: f(x) = 0.5 * sum(A * x**2), grad = A * x, A = [1, 4], x0 = [1, 1].
A = np.array([1.0, 4.0])


def run(opt, steps, x0=(1.0, 1.0), dtype=np.float64, lrs=None):
    params = {"x": np.array(x0, dtype=dtype)}
    xs = []
    for i in range(steps):
        g = A.astype(dtype) * params["x"]
        opt.step(params, {"x": g}, lr=None if lrs is None else lrs[i])
        xs.append(params["x"].copy())
    return xs


# ---- first steps, numbers worked out by hand from the lecture's pseudo-code ------------------


def test_sgd_steps():
    xs = run(create("sgd", lr=0.1), 3)
    # x -= lr * dx: [1,1] -> [0.9, 0.6] -> [0.81, 0.36] -> [0.729, 0.216]
    np.testing.assert_allclose(xs, [[0.9, 0.6], [0.81, 0.36], [0.729, 0.216]], rtol=1e-12)


def test_momentum_steps():
    xs = run(create("momentum", lr=0.1, rho=0.9), 3)
    # v = rho v + dx; x -= lr v
    # 1: v=[1,4]            x=[0.9, 0.6]
    # 2: g=[0.9,2.4] v=[1.8,6.0]   x=[0.72, 0.0]
    # 3: g=[0.72,0]  v=[2.34,5.4]  x=[0.486, -0.54]
    np.testing.assert_allclose(xs, [[0.9, 0.6], [0.72, 0.0], [0.486, -0.54]], atol=1e-12)


def test_nesterov_steps():
    xs = run(create("nesterov", lr=0.1, momentum=0.9), 2)
    # 1: old_v=0, v=[-0.1,-0.4], x += 1.9 v -> [0.81, 0.24]
    # 2: g=[0.81,0.96], old_v=[-0.1,-0.4], v=[-0.171,-0.456],
    #    x += 0.9*[0.1,0.4] + 1.9*v = [-0.2349, -0.5064] -> [0.5751, -0.2664]
    np.testing.assert_allclose(xs, [[0.81, 0.24], [0.5751, -0.2664]], atol=1e-12)


def test_adagrad_steps():
    xs = run(create("adagrad", lr=0.1), 2)
    # 1: gs=[1,16]; x -= 0.1*[1/1, 4/4] -> [0.9, 0.9]
    # 2: g=[0.9,3.6]; gs=[1.81, 28.96]
    e = 1e-7
    x1 = [1 - 0.1 * 1 / (1 + e), 1 - 0.1 * 4 / (4 + e)]
    x2 = [x1[0] - 0.1 * x1[0] / (math.sqrt(1 + x1[0] ** 2) + e),
          x1[1] - 0.1 * 4 * x1[1] / (math.sqrt(16 + 16 * x1[1] ** 2) + e)]
    np.testing.assert_allclose(xs, [x1, x2], rtol=1e-12)
    np.testing.assert_allclose(xs[1], [0.9 - 0.09 / math.sqrt(1.81)] * 2, rtol=1e-6)


def test_rmsprop_steps():
    xs = run(create("rmsprop", lr=0.01, decay_rate=0.99), 2)
    # 1: gs = 0.01*[1,16] = [0.01,0.16]; x -= 0.01*[1/0.1, 4/0.4] -> [0.9, 0.9]
    # 2: g=[0.9,3.6]; gs=[0.018, 0.288]; x -= 0.01*[0.9/sqrt(.018), 3.6/sqrt(.288)]
    np.testing.assert_allclose(xs[0], [0.9, 0.9], rtol=1e-5)
    np.testing.assert_allclose(xs[1], [0.9 - 0.009 / math.sqrt(0.018),
                                       0.9 - 0.036 / math.sqrt(0.288)], rtol=1e-5)


def test_adam_steps():
    xs = run(create("adam", lr=0.1), 2)
    # 1: m_hat = g, v_hat = g^2 -> x -= 0.1 * sign(g) -> [0.9, 0.9]
    # 2: g=[0.9,3.6]; m=[0.18,0.72]; v=[0.001809, 0.028944]; bc1=0.19, bc2=0.001999
    m = np.array([0.18, 0.72])
    v = np.array([0.001809, 0.028944])
    x2 = 0.9 - 0.1 * (m / 0.19) / (np.sqrt(v / 0.001999) + 1e-8)
    np.testing.assert_allclose(xs[0], [0.9, 0.9], rtol=1e-7)
    np.testing.assert_allclose(xs[1], x2, rtol=1e-7)  # eps shifts step 1 by ~1e-9


def test_adam_almost_without_bias_correction():
    xs = run(create("adam", lr=0.1, bias_correction=False, eps=1e-7), 1)
    # m = 0.1 g, v = 0.001 g^2 -> step = 0.1 * 0.1 / sqrt(0.001) = 0.316... (too big: the lecture's
    # "what happens at the first timestep?")
    step = 0.1 * 0.1 / (math.sqrt(0.001) + 1e-7)
    np.testing.assert_allclose(xs[0], [1 - step, 1 - 0.1 * 0.4 / (math.sqrt(0.016) + 1e-7)],
                               rtol=1e-12)


def test_weight_decay_is_added_to_gradient():
    p = {"x": np.array([1.0, -2.0])}
    create("sgd", lr=0.1, weight_decay=0.5).step(p, {"x": np.array([1.0, 1.0])})
    # dx + wd*x = [1.5, 0.0]
    np.testing.assert_allclose(p["x"], [0.85, -2.0])


def test_adamw_decay_is_decoupled():
    p = {"x": np.array([2.0])}
    create("adamw", lr=0.1, weight_decay=0.5).step(p, {"x": np.array([0.0])})
    np.testing.assert_allclose(p["x"], [2.0 * (1 - 0.05)])


# ---- equivalences ------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(rho=st.floats(0.0, 0.99), lr=st.floats(1e-3, 0.5),
       x0=st.tuples(st.floats(-3, 3), st.floats(-3, 3)))
def test_momentum_formulations_agree(rho, lr, x0):
    """Lecture: v = rho v - lr dx; x += v gives the same xs as v = rho v + dx; x -= lr v."""
    ours = run(create("momentum", lr=lr, momentum=rho), 15, x0=x0)
    x, v = np.array(x0), np.zeros(2)
    other = []
    for _ in range(15):
        dx = A * x
        v = rho * v - lr * dx
        x = x + v
        other.append(x.copy())
    np.testing.assert_allclose(ours, other, rtol=1e-9, atol=1e-12)


def test_nesterov_matches_lookahead_form():
    """The change of variables x~ = x + rho v turns the look-ahead form into the implemented one."""
    rho, lr = 0.9, 0.05
    ours = run(create("nesterov", lr=lr, momentum=rho), 20)
    x, v = np.array([1.0, 1.0]), np.zeros(2)
    for t in range(20):
        v = rho * v - lr * (A * (x + rho * v))
        x = x + v
        np.testing.assert_allclose(ours[t], x + rho * v, rtol=1e-10, atol=1e-13)


# ---- API behaviour -------------------------------------------------------------------------


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_float32_in_place_no_realloc(name):
    opt = create(name, lr=0.01)
    w = np.ones((3, 4), np.float32)
    params = {"w": w}
    grads = {"w": np.full((3, 4), 0.5, np.float32)}
    opt.step(params, grads)
    state_ids = {k: id(a) for k, a in opt.state["w"].items()}
    buf_id = id(opt._buf["w"])
    opt.step(params, grads, lr=0.02)
    assert params["w"] is w and w.dtype == np.float32
    assert all(a.dtype == np.float32 for a in opt.state["w"].values())
    assert {k: id(a) for k, a in opt.state["w"].items()} == state_ids
    assert id(opt._buf["w"]) == buf_id
    assert np.all(w < 1)
    np.testing.assert_array_equal(grads["w"], 0.5)  # gradients are not modified


def test_float32_matches_float64():
    a = run(create("adam", lr=0.05), 10, dtype=np.float32)
    b = run(create("adam", lr=0.05), 10, dtype=np.float64)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_lr_override_applies_to_one_step():
    opt = create("sgd", lr=0.1)
    xs = run(opt, 2, lrs=[0.5, None])
    np.testing.assert_allclose(xs[0], [0.5, -1.0])
    np.testing.assert_allclose(xs[1], [0.5 - 0.1 * 0.5, -1.0 + 0.1 * 4.0])


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_state_dict_round_trip(name):
    a = create(name, lr=0.05)
    run_a = {"x": np.array([1.0, 1.0])}
    for _ in range(3):
        a.step(run_a, {"x": A * run_a["x"]})
    sd = a.state_dict()
    assert sd["step"] == 3 and sd["name"] == name
    b = create(name, lr=0.05)
    b.load_state_dict(sd)
    run_b = {"x": run_a["x"].copy()}
    for _ in range(3):
        a.step(run_a, {"x": A * run_a["x"]})
        b.step(run_b, {"x": A * run_b["x"]})
    np.testing.assert_array_equal(run_a["x"], run_b["x"])


def test_load_state_dict_rejects_other_optimizer():
    sd = create("adam").state_dict()
    with pytest.raises(TrainError, match="for 'adam', not 'sgd'"):
        create("sgd").load_state_dict(sd)


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_get_config_round_trip_through_yaml(name):
    opt = create(name, lr=0.003)
    cfg = yaml.safe_load(yaml.safe_dump(opt.get_config()))
    again = optim.get(cfg)
    assert type(again) is type(opt)
    assert again.get_config() == opt.get_config()
    assert opt.name == name


def test_registry_entries_name_their_class():
    assert OPTIMIZERS.names() == ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam",
                                  "adamw")
    assert all(e.obj.name == e.name for e in OPTIMIZERS)
    assert isinstance(create("sgd"), optim.SGD)


@pytest.mark.parametrize(("name", "kw", "msg"), [
    ("momentum", {"momentum": 1.5}, r"momentum must be in \[0, 1\); got 1.5"),
    ("momentum", {"rho": -0.1}, r"rho must be in \[0, 1\); got -0.1"),
    ("sgd", {"lr": -1}, r"lr must be in \[0, inf\); got -1"),
    ("sgd", {"lr": float("nan")}, "lr must be finite"),
    ("sgd", {"lr": "fast"}, "lr must be a number"),
    ("adam", {"betas": (0.9, 1.0)}, r"beta2 must be in \[0, 1\); got 1.0"),
    ("adam", {"betas": 0.9}, "betas must be a pair"),
    ("adam", {"eps": 0}, r"eps must be in \(0, inf\)"),
    ("rmsprop", {"decay_rate": 1}, "decay_rate must be in"),
    ("sgd", {"weight_decay": -1e-4}, "weight_decay must be in"),
    ("sgd", {"momentum": 0.9}, "unknown hyperparameter.*momentum"),
    ("adamax", {}, "unknown optimizer 'adamax'"),
])
def test_invalid_hyperparameters(name, kw, msg):
    with pytest.raises(TrainError, match=msg) as e:
        create(name, **kw)
    assert e.value.hint or "must" in e.value.message


def test_step_errors():
    opt = create("sgd")
    with pytest.raises(TrainError, match="no matching parameter"):
        opt.step({"w": np.zeros(2)}, {"v": np.zeros(2)})
    with pytest.raises(TrainError, match=r"has shape \(3,\), parameter has \(2,\)"):
        opt.step({"w": np.zeros(2)}, {"w": np.zeros(3)})
    with pytest.raises(TrainError, match="floating-point"):
        opt.step({"w": np.zeros(2, np.int64)}, {"w": np.zeros(2)})


def test_params_without_grads_are_left_alone():
    p = {"a": np.ones(2), "frozen": np.ones(2)}
    create("adam", lr=0.1).step(p, {"a": np.ones(2)})
    np.testing.assert_array_equal(p["frozen"], 1.0)
    assert np.all(p["a"] < 1)


def test_get_identifiers():
    assert isinstance(optim.get("nesterov"), optim.Nesterov)
    o = optim.get({"name": "Adam", "lr": 0.01, "betas": [0.8, 0.9]})
    assert o.betas == (0.8, 0.9)
    assert optim.get(o) is o
    with pytest.raises(TrainError, match="needs a 'name'"):
        optim.get({"lr": 1})


# ---- PyTorch parity ------------------------------------------------------------------------

TORCH_CASES = [
    # (ours, our kwargs, torch class, torch kwargs)
    ("sgd", {"lr": 0.05}, "SGD", {"lr": 0.05}),
    ("sgd", {"lr": 0.05, "weight_decay": 0.1}, "SGD", {"lr": 0.05, "weight_decay": 0.1}),
    ("momentum", {"lr": 0.02, "momentum": 0.9}, "SGD", {"lr": 0.02, "momentum": 0.9}),
    ("momentum", {"lr": 0.02, "momentum": 0.5, "weight_decay": 0.01}, "SGD",
     {"lr": 0.02, "momentum": 0.5, "weight_decay": 0.01}),
    # nesterov: equal for a constant lr only (lecture's v includes lr, torch's buffer does not)
    ("nesterov", {"lr": 0.02, "momentum": 0.9}, "SGD",
     {"lr": 0.02, "momentum": 0.9, "nesterov": True}),
    ("nesterov", {"lr": 0.02, "momentum": 0.9, "weight_decay": 0.05}, "SGD",
     {"lr": 0.02, "momentum": 0.9, "nesterov": True, "weight_decay": 0.05}),
    # adagrad: same form; torch's eps default is 1e-10, so pass the lecture's 1e-7
    ("adagrad", {"lr": 0.1}, "Adagrad", {"lr": 0.1, "eps": 1e-7}),
    ("adagrad", {"lr": 0.1, "weight_decay": 0.1}, "Adagrad",
     {"lr": 0.1, "eps": 1e-7, "weight_decay": 0.1}),
    # rmsprop: torch's alpha = decay_rate; eps default 1e-8 there
    ("rmsprop", {"lr": 0.01, "decay_rate": 0.9}, "RMSprop",
     {"lr": 0.01, "alpha": 0.9, "eps": 1e-7}),
    ("rmsprop", {"lr": 0.01, "weight_decay": 0.1}, "RMSprop",
     {"lr": 0.01, "alpha": 0.99, "eps": 1e-7, "weight_decay": 0.1}),
    ("adam", {"lr": 0.01}, "Adam", {"lr": 0.01}),
    ("adam", {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}, "Adam",
     {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}),
    ("adamw", {"lr": 0.01, "weight_decay": 0.1}, "AdamW", {"lr": 0.01, "weight_decay": 0.1}),
]


def _quadratic(seed=0):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.5, 5.0, (4, 4))
    b = rng.normal(size=(4, 4))
    x0 = rng.normal(size=(4, 4))
    return a, b, x0


@pytest.mark.torch
@pytest.mark.parametrize(("ours", "kw", "tcls", "tkw"), TORCH_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(TORCH_CASES)])
def test_matches_torch(ours, kw, tcls, tkw):
    torch = pytest.importorskip("torch")
    a, b, x0 = _quadratic()
    params = {"w": x0.copy()}
    opt = create(ours, **kw)
    tw = torch.tensor(x0.copy(), dtype=torch.float64, requires_grad=True)
    topt = getattr(torch.optim, tcls)([tw], **tkw)
    ta, tb = torch.tensor(a), torch.tensor(b)
    for _ in range(25):
        opt.step(params, {"w": a * params["w"] + b})
        topt.zero_grad()
        loss = (0.5 * ta * tw ** 2 + tb * tw).sum()
        loss.backward()
        topt.step()
    np.testing.assert_allclose(params["w"], tw.detach().numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.torch
@pytest.mark.parametrize(("ours", "tcls", "tkw"), [
    ("sgd", "SGD", {}), ("momentum", "SGD", {"momentum": 0.9}),
    ("adam", "Adam", {}), ("rmsprop", "RMSprop", {"alpha": 0.99, "eps": 1e-7}),
])
def test_matches_torch_with_changing_lr(ours, tcls, tkw):
    """``step(lr=...)`` per step equals setting torch's param_group lr (a schedule's job)."""
    torch = pytest.importorskip("torch")
    a, b, x0 = _quadratic(1)
    params = {"w": x0.copy()}
    opt = create(ours)
    tw = torch.tensor(x0.copy(), dtype=torch.float64, requires_grad=True)
    topt = getattr(torch.optim, tcls)([tw], lr=0.1, **tkw)
    ta, tb = torch.tensor(a), torch.tensor(b)
    for t in range(20):
        lr = 0.05 * (1 + math.cos(math.pi * t / 20)) / 2 + 1e-3
        opt.step(params, {"w": a * params["w"] + b}, lr=lr)
        for g in topt.param_groups:
            g["lr"] = lr
        topt.zero_grad()
        (0.5 * ta * tw ** 2 + tb * tw).sum().backward()
        topt.step()
    np.testing.assert_allclose(params["w"], tw.detach().numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", OPTIMIZERS.names())
@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
def test_step_in_slices_gives_the_same_bits(name, weight_decay):
    """``step(run=)`` updates a large parameter in contiguous slices (on the caller's threads):
    the update is element-wise, so three steps give exactly the serial result; small or
    non-contiguous parameters are updated whole. ``compiled=True`` (the one-pass kernels of
    Adam and AdamW, NumPy for the others and for the non-contiguous view) gives the same bits
    again, serial and in slices."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(0)
    n = optim.PARALLEL_UPDATE_MIN + 12345
    x0 = {"big": rng.standard_normal(n).astype(np.float32),
          "small": rng.standard_normal((7, 3)).astype(np.float32),
          "strided": rng.standard_normal((n, 2)).astype(np.float32)}
    grads = [{k: rng.standard_normal(v.shape[:1] if k == "strided" else v.shape)
                  .astype(np.float32) for k, v in x0.items()} for _ in range(3)]
    calls = []

    def run(fn, k):
        calls.append(k)
        with ThreadPoolExecutor(2) as ex:
            return list(ex.map(fn, range(k)))

    results = []
    for runner, compiled in ((None, False), (run, False), (None, True), (run, True)):
        opt = create(name, lr=0.01, weight_decay=weight_decay)
        x = {k: v.copy() for k, v in x0.items()}
        x["strided"] = x["strided"][:, 0]   # a non-contiguous view: updated whole
        for g in grads:
            opt.step(x, g, run=runner, compiled=compiled)
        results.append(x)
    for got in results[1:]:
        for k in x0:
            np.testing.assert_array_equal(results[0][k], got[k])
    for k in x0:
        assert not np.array_equal(results[0][k], x0[k][:, 0] if k == "strided" else x0[k])
    assert calls == [optim.PARALLEL_UPDATE_SLICES] * 6   # only "big" went in slices


_FUSED = [n for n in OPTIMIZERS.names() if OPTIMIZERS.get(n)._fused_update is not None]


def test_the_compiled_updates_cover_the_lecture_s_momentum_and_adam_family():
    assert set(_FUSED) == {"momentum", "nesterov", "adam", "adamw"}


@settings(max_examples=120, deadline=None)
@given(name=st.sampled_from(_FUSED), dtype=st.sampled_from(["float32", "float64"]),
       lr=st.floats(1e-6, 1.0), weight_decay=st.sampled_from([0.0, 1e-4, 0.1]),
       steps=st.integers(1, 4), seed=st.integers(0, 2**16), data=st.data())
def test_compiled_updates_match_numpy_bit_for_bit(name, dtype, lr, weight_decay, steps, seed,
                                                  data):
    """The one-pass kernels (:mod:`cnncalc.kernels.update`) round every operation as the NumPy
    update does: scalars in the arrays' dtype, no fused multiply-adds. Gradients span many
    magnitudes (tiny ones make Adam's ``v`` small, where ``eps`` and the bias correction
    matter)."""
    if name in ("adam", "adamw"):
        hyper = {"betas": (data.draw(st.floats(0.0, 0.999)), data.draw(st.floats(0.0, 0.99999))),
                 "eps": data.draw(st.floats(1e-12, 1e-2)),
                 "bias_correction": data.draw(st.booleans())}
    else:
        hyper = {"momentum": data.draw(st.floats(0.0, 0.999))}
    rng = np.random.default_rng(seed)
    n = 257
    x0 = rng.standard_normal(n).astype(dtype)
    grads = [(rng.standard_normal(n) * 10.0 ** rng.integers(-20, 3, n)).astype(dtype)
             for _ in range(steps)]
    out = []
    for compiled in (False, True):
        opt = create(name, lr=lr, weight_decay=weight_decay, **hyper)
        x = {"w": x0.copy()}
        for t, g in enumerate(grads):
            opt.step(x, {"w": g}, lr=lr * (1 + t) / steps, compiled=compiled)  # lr changes
        out.append((x["w"], opt.state["w"]))
    np.testing.assert_array_equal(out[0][0], out[1][0])
    for slot in out[0][1]:
        np.testing.assert_array_equal(out[0][1][slot], out[1][1][slot])
