"""Parameter-update rules (optimizers) from the lecture, in plain numpy.

Contract (the same for every optimizer, as in cs231n's ``optim.py``):

* ``opt = create("adam", lr=1e-3, betas=(0.9, 0.999), eps=1e-8)`` builds one from the registry
  :data:`OPTIMIZERS`; ``get(identifier)`` also takes a ``{"name": ..., **hyper}`` dict or an
  instance. Each entry declares the optimizer's parameters with their defaults (read from the
  class's signature, so a default is written once) and ``extra["state"]``, the number of state
  arrays kept per parameter (what ``cnncalc analyze --optimizer`` counts).
* ``opt.step(params, grads, lr=None)`` updates ``params`` (a dict ``name -> ndarray``) **in place**.
  ``grads`` has the same keys (a parameter without a gradient is left alone). ``lr=`` overrides the
  learning rate for this one step; a schedule passes ``lr=schedule(step)`` here (the optimizer never
  owns the schedule).
* The maths runs in each parameter's own dtype (float32 stays float32) with in-place ufuncs; the
  per-parameter state (velocity, moments, ...) is allocated on the first step, keyed by the
  parameter's name, and so are scratch buffers, so later steps allocate nothing.
* ``weight_decay`` is L2 regularisation added to the gradient, PyTorch style:
  ``dx <- dx + weight_decay * x`` (for ``adamw`` it is decoupled, see :class:`AdamW`).
* ``state_dict()`` / ``load_state_dict()`` carry the step count and per-parameter state arrays,
  for checkpoints; ``get_config()`` returns the hyperparameters (``create(**cfg)`` rebuilds it).

Lecture vs PyTorch (where they differ; the defaults chosen here are documented in each class):

* momentum: lecture ``v = rho*v + dx; x -= lr*v`` = ``torch.optim.SGD(momentum=rho)``
  (dampening 0).
* nesterov: lecture ``old_v = v; v = rho*v - lr*dx; x += -rho*old_v + (1+rho)*v``; torch
  ``b = rho*b + dx; x -= lr*(dx + rho*b)``. The same x for a constant lr (v = -lr*b); they differ
  when lr changes between steps.
* adagrad: same form; eps 1e-7 here (lecture), torch's default 1e-10.
* rmsprop: ``decay_rate`` = torch's ``alpha`` (0.99); eps 1e-7 here (lecture), torch's 1e-8.
* adam: bias-corrected as torch; eps 1e-8 (Kingma & Ba, torch; the slides write 1e-7);
  ``bias_correction=False`` is the lecture's "Adam (almost)".
"""
from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar

from cnncalc.errors import TrainError
from cnncalc.registry import LazyModule, Registry, doc_line, signature_params

np = LazyModule("numpy")  # the names serve `cnncalc analyze --optimizer`, which needs no NumPy

__all__ = [
    "OPTIMIZERS",
    "SGD",
    "Momentum",
    "Nesterov",
    "AdaGrad",
    "RMSProp",
    "Adam",
    "AdamW",
    "Optimizer",
    "create",
    "get",
]


# ------------------------------------------------------------------------------------------------
# validation helpers


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TrainError(f"{name} must be a number; got {value!r}",
                         hint=f"write e.g. {name}: 0.01")
    value = float(value)
    if not math.isfinite(value):
        raise TrainError(f"{name} must be finite; got {value}")
    return value


def _in_range(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False,
              hi_open: bool = True, hint: str | None = None) -> float:
    v = _number(name, value)
    ok_lo = v > lo if lo_open else v >= lo
    ok_hi = v < hi if hi_open else v <= hi
    if not (ok_lo and ok_hi):
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        hi_txt = "inf" if math.isinf(hi) else f"{hi:g}"
        raise TrainError(f"{name} must be in {lb}{lo:g}, {hi_txt}{rb}; got {value}", hint=hint)
    return v


def _lr(value: Any, name: str = "lr") -> float:
    return _in_range(name, value, 0.0, math.inf, hi_open=True,
                     hint="a learning rate is a non-negative number such as 1e-3")


# ------------------------------------------------------------------------------------------------
# base class


# ``step(..., run=)``: parameters of at least this many elements are updated in this many
# slices (Adam on VGG-11's 9.2 M float32 parameters: ~27 ms on one thread)
PARALLEL_UPDATE_MIN = 1 << 16
PARALLEL_UPDATE_SLICES = 8


class Optimizer:
    """Base class: state bookkeeping, dtype/shape checks, weight decay, (de)serialisation.

    Subclasses set ``name``, ``slots`` (the names of their per-parameter state arrays) and
    implement ``_update(x, g, state, buf, lr)``, which must update ``x`` in place using only
    in-place ufuncs on ``x``, the ``state`` arrays and the scratch buffer ``buf`` (same shape
    and dtype as ``x``; its content on entry is garbage). ``self.t`` is the 1-based number of the
    current step while ``_update`` runs.

    Parameters
    ----------
    lr : float, default 0.01
        Learning rate used when ``step`` gets no ``lr=``. Must be >= 0.
    weight_decay : float, default 0.0
        L2 penalty coefficient; the gradient becomes ``dx + weight_decay * x`` (PyTorch's
        ``weight_decay``). Must be >= 0.
    """

    name: ClassVar[str] = ""
    slots: ClassVar[tuple[str, ...]] = ()
    #: one line of help per constructor parameter (subclasses add theirs); the registry pairs
    #: them with the signature's defaults
    param_help: ClassVar[dict[str, str]] = {
        "lr": "base learning rate alpha0",
        "weight_decay": "L2 coefficient: dx += weight_decay * x",
    }

    def __init__(self, lr: float = 0.01, weight_decay: float = 0.0):
        self.lr = _lr(lr)
        self.weight_decay = _in_range("weight_decay", weight_decay, 0.0, math.inf,
                                      hint="weight_decay is a non-negative number such as 5e-4")
        self.t = 0
        self.state: dict[str, dict[str, np.ndarray]] = {}
        self._buf: dict[str, np.ndarray] = {}
        self._gbuf: dict[str, np.ndarray] = {}

    # -- API ------------------------------------------------------------------------------------

    def init_state(self, params: dict[str, np.ndarray]) -> None:
        """Allocate the per-parameter state and scratch for ``params`` (done lazily by ``step``)."""
        for key, x in params.items():
            self._prepare(key, x)

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray],
             lr: float | None = None, *, run=None, compiled: bool = False) -> None:
        """Apply one update to every parameter that has a gradient, in place.

        Parameters
        ----------
        params : dict[str, ndarray]
            Floating-point arrays, updated in place (their dtype is kept).
        grads : dict[str, ndarray]
            Gradients with the same shapes; each key must be in ``params``.
        lr : float, optional
            Learning rate for this step only (e.g. from a schedule); default ``self.lr``.
        run : callable, optional
            ``run(fn, n)`` calls ``fn(0) .. fn(n - 1)``, possibly on several threads (e.g.
            :meth:`cnncalc.Network.parallel`). A large contiguous parameter is then updated in
            ``n`` contiguous slices: the update is element-wise (the ``_update`` contract), so
            the result is the same bits, and NumPy's ufuncs release the GIL.
        compiled : bool, default False
            Use the optimizer's compiled one-pass update where it has one
            (:mod:`cnncalc.kernels.update`: momentum, Nesterov, Adam, AdamW), the same bits
            as the NumPy update.
            Off where nothing may compile (the trainer's NumPy tier).

        Raises
        ------
        TrainError
            A gradient without a parameter, a shape mismatch, a non-float parameter, a bad lr.
        """
        lr = self.lr if lr is None else _lr(lr)
        for key in grads:
            if key not in params:
                raise TrainError(f"gradient {key!r} has no matching parameter",
                                 hint=f"parameters are: {', '.join(sorted(params)) or '(none)'}")
        self.t += 1
        wd = self.weight_decay
        for key, g in grads.items():
            x = params[key]
            state = self._prepare(key, x)
            g = np.asarray(g)
            if g.shape != x.shape:
                raise TrainError(f"gradient {key!r} has shape {g.shape}, parameter has {x.shape}",
                                 hint="the backward pass must return one gradient per parameter, "
                                      "of the parameter's shape")
            gb = None
            if wd and self._decay_in_gradient:
                gb = self._gbuf.get(key)
                if gb is None:
                    gb = self._gbuf[key] = np.empty_like(x)
            buf = self._buf[key]
            arrays = (x, g, buf, *state.values(), *(() if gb is None else (gb,)))
            contiguous = all(a.flags.c_contiguous for a in arrays)
            fused = compiled and contiguous and self._fused_update is not None
            if run is None or x.size < PARALLEL_UPDATE_MIN or not contiguous:
                self._update_slice(x, g, state, buf, gb, wd, lr, fused)
                continue
            run(self._slice_updater(x, g, state, buf, gb, wd, lr, fused), PARALLEL_UPDATE_SLICES)

    def _slice_updater(self, x, g, state, buf, gb, wd, lr, fused=False):
        """``piece(i)``: :meth:`_update_slice` on the i-th of ``PARALLEL_UPDATE_SLICES``
        contiguous slices of one (C-contiguous) parameter and its arrays."""
        xf, gf, bf = x.reshape(-1), g.reshape(-1), buf.reshape(-1)
        sf = {k: v.reshape(-1) for k, v in state.items()}
        gbf = None if gb is None else gb.reshape(-1)
        n, k = x.size, PARALLEL_UPDATE_SLICES

        def piece(i):
            a, b = i * n // k, (i + 1) * n // k
            self._update_slice(xf[a:b], gf[a:b], {s: v[a:b] for s, v in sf.items()}, bf[a:b],
                               None if gbf is None else gbf[a:b], wd, lr, fused)

        return piece

    def _update_slice(self, x, g, state, buf, gb, wd, lr, fused=False) -> None:
        """``_update`` (``_fused_update`` where ``fused``: then all arrays are C-contiguous) on
        (a slice of) one parameter, the L2 term first added into ``gb``."""
        if gb is not None:
            np.multiply(x, wd, out=gb)
            gb += g
            g = gb
        if fused:
            self._fused_update(x.reshape(-1), g.reshape(-1),
                               {k: a.reshape(-1) for k, a in state.items()}, lr)
        else:
            self._update(x, g, state, buf, lr)

    #: ``_fused_update(x, g, state, lr)``: ``_update`` in one compiled pass over flat arrays,
    #: the same bits, where a subclass defines it (None: only the NumPy update)
    _fused_update = None

    def state_dict(self) -> dict[str, Any]:
        """``{"name", "step", "state": {param: {slot: array}}}`` (arrays are copies)."""
        return {
            "name": self.name,
            "step": int(self.t),
            "state": {k: {s: a.copy() for s, a in st.items()} for k, st in self.state.items()},
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (the name must match; arrays are copied).

        Raises
        ------
        TrainError
            The state is for another optimizer or misses a state array.
        """
        if not isinstance(d, dict) or "state" not in d or "step" not in d:
            raise TrainError("optimizer state must be a dict with 'step' and 'state'",
                             hint="pass what Optimizer.state_dict() returned")
        if d.get("name", self.name) != self.name:
            raise TrainError(f"optimizer state is for {d.get('name')!r}, not {self.name!r}",
                             hint="build the same optimizer the checkpoint was written with")
        state: dict[str, dict[str, np.ndarray]] = {}
        for key, st in dict(d["state"]).items():
            missing = [s for s in self.slots if s not in st]
            if missing:
                raise TrainError(f"optimizer state for {key!r} lacks {', '.join(missing)}",
                                 hint=f"{self.name} keeps {', '.join(self.slots)} per parameter")
            state[key] = {s: np.array(st[s], copy=True) for s in self.slots}
        self.state = state
        self._buf = {}
        self._gbuf = {}
        self.t = int(d["step"])

    def get_config(self) -> dict[str, Any]:
        """The hyperparameters with ``name``; ``create(**get_config())`` rebuilds the optimizer."""
        return {"name": self.name, "lr": self.lr, "weight_decay": self.weight_decay,
                **self._hyper()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"

    # -- for subclasses -------------------------------------------------------------------------

    _decay_in_gradient: ClassVar[bool] = True

    def _hyper(self) -> dict[str, Any]:
        return {}

    def _update(self, x: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray],
                buf: np.ndarray, lr: float) -> None:
        raise NotImplementedError

    def _prepare(self, key: str, x: np.ndarray) -> dict[str, np.ndarray]:
        if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
            raise TrainError(f"parameter {key!r} must be a floating-point ndarray; got "
                             f"{getattr(x, 'dtype', type(x).__name__)}",
                             hint="cast with .astype(np.float32)")
        state = self.state.get(key)
        if state is None:
            state = self.state[key] = {s: np.zeros_like(x) for s in self.slots}
        else:
            for s, a in state.items():
                if a.shape != x.shape:
                    raise TrainError(f"optimizer state {s!r} of {key!r} has shape {a.shape}, "
                                     f"parameter has {x.shape}",
                                     hint="the checkpoint was written for a different model")
                if a.dtype != x.dtype:
                    state[s] = a.astype(x.dtype)
        buf = self._buf.get(key)
        if buf is None or buf.shape != x.shape or buf.dtype != x.dtype:
            self._buf[key] = np.empty_like(x)
        return state


# ------------------------------------------------------------------------------------------------
# the update rules


class SGD(Optimizer):
    """Vanilla (mini-batch) gradient descent: ``x -= lr * dx``.

    Parameters
    ----------
    lr : float, default 0.01
    weight_decay : float, default 0.0
    """

    name = "sgd"

    def _update(self, x, g, state, buf, lr):
        np.multiply(g, lr, out=buf)
        x -= buf


class Momentum(Optimizer):
    """SGD + momentum, the lecture's second form (= ``torch.optim.SGD(momentum=rho)``).

    Notes
    -----
    ``v = rho * v + dx``; ``x -= lr * v``, with ``v = 0`` at the start. For a constant ``lr`` this
    gives the same sequence of ``x`` as the other form ``v = rho * v - lr * dx``; ``x += v``.

    Parameters
    ----------
    lr : float, default 0.01
    momentum : float, default 0.9
        ``rho``, the "friction", in [0, 1). ``rho=`` is accepted as an alias.
    weight_decay : float, default 0.0
    """

    name = "momentum"
    slots = ("velocity",)
    param_help = {"momentum": "rho, the friction of momentum / nesterov"}

    def __init__(self, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0,
                 *, rho: float | None = None):
        super().__init__(lr=lr, weight_decay=weight_decay)
        label = "momentum"
        if rho is not None:
            momentum, label = rho, "rho"
        self.momentum = _in_range(label, momentum, 0.0, 1.0,
                                  hint="typical values are 0.9 or 0.99")

    def _hyper(self):
        return {"momentum": self.momentum}

    def _update(self, x, g, state, buf, lr):
        v = state["velocity"]
        v *= self.momentum
        v += g
        np.multiply(v, lr, out=buf)
        x -= buf

    def _fused_update(self, x, g, state, lr):
        from .kernels.update import momentum_update

        f = x.dtype.type      # NumPy casts the Python floats above to the arrays' dtype
        momentum_update(x, g, state["velocity"], f(self.momentum), f(lr))


class Nesterov(Momentum):
    """Nesterov momentum in the lecture's change-of-variables form.

    Notes
    -----
    ``old_v = v``; ``v = rho * v - lr * dx``; ``x += -rho * old_v + (1 + rho) * v``.
    Here ``x`` is the look-ahead point x~ = x + rho*v and ``v`` is in parameter units (it includes
    the learning rate). For a constant ``lr`` this equals ``torch.optim.SGD(momentum=rho,
    nesterov=True)`` (whose buffer is ``-v/lr``); when ``lr`` changes between steps the two differ,
    because torch rescales its old buffer by the new rate.

    Parameters
    ----------
    lr : float, default 0.01
    momentum : float, default 0.9
        ``rho`` in [0, 1); ``rho=`` is accepted as an alias.
    weight_decay : float, default 0.0
    """

    name = "nesterov"

    def _update(self, x, g, state, buf, lr):
        rho = self.momentum
        v = state["velocity"]
        np.multiply(v, rho, out=buf)            # x += -rho * old_v
        x -= buf
        v *= rho                                # v = rho * v - lr * dx
        np.multiply(g, lr, out=buf)
        v -= buf
        np.multiply(v, 1.0 + rho, out=buf)      # x += (1 + rho) * v
        x += buf

    def _fused_update(self, x, g, state, lr):
        from .kernels.update import nesterov_update

        f, rho = x.dtype.type, self.momentum
        nesterov_update(x, g, state["velocity"], f(rho), f(lr), f(1.0 + rho))


class AdaGrad(Optimizer):
    """AdaGrad (Duchi et al. 2011), the lecture's form.

    Notes
    -----
    ``grad_squared += dx * dx``; ``x -= lr * dx / (sqrt(grad_squared) + eps)``.
    Same as ``torch.optim.Adagrad`` (lr_decay=0, initial_accumulator_value=0), whose eps default
    is 1e-10 instead of the lecture's 1e-7.

    Parameters
    ----------
    lr : float, default 0.01
    eps : float, default 1e-7
        Added outside the square root (lecture). Must be > 0.
    weight_decay : float, default 0.0
    """

    name = "adagrad"
    slots = ("grad_squared",)
    param_help = {"eps": "added to the denominator"}

    def __init__(self, lr: float = 0.01, eps: float = 1e-7, weight_decay: float = 0.0):
        super().__init__(lr=lr, weight_decay=weight_decay)
        self.eps = _in_range("eps", eps, 0.0, math.inf, lo_open=True,
                             hint="eps keeps the division finite; use e.g. 1e-7")

    def _hyper(self):
        return {"eps": self.eps}

    def _update(self, x, g, state, buf, lr):
        gs = state["grad_squared"]
        np.multiply(g, g, out=buf)
        gs += buf
        _adaptive_step(x, g, gs, buf, lr, self.eps)


def _adaptive_step(x, g, grad_squared, buf, lr, eps) -> None:
    """``x -= lr * g / (sqrt(grad_squared) + eps)`` in place (AdaGrad's and RMSProp's step)."""
    np.sqrt(grad_squared, out=buf)
    buf += eps
    np.divide(g, buf, out=buf)
    buf *= lr
    x -= buf


class RMSProp(Optimizer):
    """RMSProp (Tieleman & Hinton 2012): AdaGrad with a leaky running average, lecture form.

    Notes
    -----
    ``grad_squared = decay_rate * grad_squared + (1 - decay_rate) * dx * dx``;
    ``x -= lr * dx / (sqrt(grad_squared) + eps)``.
    Same as ``torch.optim.RMSprop(alpha=decay_rate, momentum=0, centered=False)``, whose eps
    default is 1e-8 instead of 1e-7.

    Parameters
    ----------
    lr : float, default 1e-3
        Hinton's suggested start (also Keras's default).
    decay_rate : float, default 0.99
        In [0, 1) (torch's ``alpha`` default and cs231n's). ``alpha=`` is accepted as an alias.
    eps : float, default 1e-7
        Added outside the square root (lecture). Must be > 0.
    weight_decay : float, default 0.0
    """

    name = "rmsprop"
    slots = ("grad_squared",)
    param_help = {"decay_rate": "RMSProp's leak", "eps": "added to the denominator"}

    def __init__(self, lr: float = 1e-3, decay_rate: float = 0.99, eps: float = 1e-7,
                 weight_decay: float = 0.0, *, alpha: float | None = None):
        super().__init__(lr=lr, weight_decay=weight_decay)
        label = "decay_rate"
        if alpha is not None:
            decay_rate, label = alpha, "alpha"
        self.decay_rate = _in_range(label, decay_rate, 0.0, 1.0, hint="typical value: 0.99")
        self.eps = _in_range("eps", eps, 0.0, math.inf, lo_open=True,
                             hint="eps keeps the division finite; use e.g. 1e-7")

    def _hyper(self):
        return {"decay_rate": self.decay_rate, "eps": self.eps}

    def _update(self, x, g, state, buf, lr):
        d = self.decay_rate
        gs = state["grad_squared"]
        np.multiply(g, g, out=buf)
        buf *= 1.0 - d
        gs *= d
        gs += buf
        _adaptive_step(x, g, gs, buf, lr, self.eps)


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015), the lecture's full form.

    ``bias_correction=False`` gives the lecture's "Adam (almost)".

    Notes
    -----
    With t = 1, 2, ... the step number::

        m = beta1 * m + (1 - beta1) * dx
        v = beta2 * v + (1 - beta2) * dx * dx
        m_hat = m / (1 - beta1**t);  v_hat = v / (1 - beta2**t)  # not if bias_correction=False
        x -= lr * m_hat / (sqrt(v_hat) + eps)

    Equal to ``torch.optim.Adam`` (amsgrad=False) with the same eps. The lecture's slides use
    eps=1e-7; the default here is Kingma & Ba's and torch's 1e-8.

    Parameters
    ----------
    lr : float, default 1e-3
        The lecture's recommended start (1e-3 or 5e-4).
    betas : (float, float), default (0.9, 0.999)
        Each in [0, 1). ``beta1=``/``beta2=`` are accepted too.
    eps : float, default 1e-8
    weight_decay : float, default 0.0
        L2 added to the gradient (torch's Adam); see :class:`AdamW` for the decoupled form.
    bias_correction : bool, default True
    """

    name = "adam"
    slots = ("first_moment", "second_moment")
    param_help = {"betas": "Adam's beta1, beta2", "eps": "added to the denominator",
                  "bias_correction": "Adam's bias correction (false: the lecture's "
                                     "'Adam (almost)')"}

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, bias_correction: bool = True,
                 *, beta1: float | None = None, beta2: float | None = None):
        super().__init__(lr=lr, weight_decay=weight_decay)
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise TrainError(f"betas must be a pair (beta1, beta2); got {betas!r}",
                             hint="write betas: [0.9, 0.999]") from None
        if beta1 is not None:
            b1 = beta1
        if beta2 is not None:
            b2 = beta2
        self.beta1 = _in_range("beta1", b1, 0.0, 1.0, hint="typical value: 0.9")
        self.beta2 = _in_range("beta2", b2, 0.0, 1.0, hint="typical value: 0.999")
        self.eps = _in_range("eps", eps, 0.0, math.inf, lo_open=True,
                             hint="eps keeps the division finite; use e.g. 1e-8")
        if not isinstance(bias_correction, (bool, np.bool_)):
            raise TrainError(f"bias_correction must be true or false; got {bias_correction!r}")
        self.bias_correction = bool(bias_correction)

    @property
    def betas(self) -> tuple[float, float]:
        return (self.beta1, self.beta2)

    def _hyper(self):
        return {"betas": [self.beta1, self.beta2], "eps": self.eps,
                "bias_correction": self.bias_correction}

    def _update(self, x, g, state, buf, lr):
        b1, b2 = self.beta1, self.beta2
        m, v = state["first_moment"], state["second_moment"]
        m *= b1
        np.multiply(g, 1.0 - b1, out=buf)
        m += buf
        v *= b2
        np.multiply(g, g, out=buf)
        buf *= 1.0 - b2
        v += buf
        np.sqrt(v, out=buf)
        step = lr
        if self.bias_correction:
            t = self.t
            buf /= math.sqrt(1.0 - b2 ** t)
            step = lr / (1.0 - b1 ** t)
        buf += self.eps
        np.divide(m, buf, out=buf)
        buf *= step
        x -= buf

    def _fused_update(self, x, g, state, lr):
        from .kernels.update import adam_update

        b1, b2, t = self.beta1, self.beta2, self.t
        f = x.dtype.type      # NumPy casts the Python floats above to the arrays' dtype
        step = lr / (1.0 - b1 ** t) if self.bias_correction else lr
        v_scale = math.sqrt(1.0 - b2 ** t) if self.bias_correction else 1.0
        adam_update(x, g, state["first_moment"], state["second_moment"], f(b1), f(1.0 - b1),
                    f(b2), f(1.0 - b2), self.bias_correction, f(v_scale), f(self.eps), f(step))


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): ``x -= lr * weight_decay * x`` first.

    Equal to ``torch.optim.AdamW`` (whose weight_decay default is 0.01; here it is 0.01 too).
    Parameters as :class:`Adam`.
    """

    name = "adamw"
    _decay_in_gradient = False
    param_help = {"weight_decay": "decoupled decay: x -= lr * weight_decay * x"}

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01, bias_correction: bool = True,
                 *, beta1: float | None = None, beta2: float | None = None):
        super().__init__(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         bias_correction=bias_correction, beta1=beta1, beta2=beta2)

    def _update(self, x, g, state, buf, lr):
        if self.weight_decay:
            x *= 1.0 - lr * self.weight_decay
        super()._update(x, g, state, buf, lr)

    def _fused_update(self, x, g, state, lr):
        if self.weight_decay:
            x *= 1.0 - lr * self.weight_decay
        super()._fused_update(x, g, state, lr)


# ------------------------------------------------------------------------------------------------
# the registry

OPTIMIZERS = Registry("optimizer", error=TrainError)


def _register(cls: type[Optimizer], *aliases: str) -> None:
    OPTIMIZERS.add(cls.name, cls, aliases=aliases, params=signature_params(cls),
                   help=doc_line(cls), state=len(cls.slots))


_register(SGD)
_register(Momentum, "sgd_momentum")
_register(Nesterov, "nag")
_register(AdaGrad)
_register(RMSProp, "rms_prop")
_register(Adam)
_register(AdamW)


def create(name: str, **hyper: Any) -> Optimizer:
    """Build an optimizer by name, e.g. ``create("adam", lr=1e-3, betas=(0.9, 0.999))``.

    Raises
    ------
    TrainError
        Unknown name or hyperparameter, or a value out of range.
    """
    cls = OPTIMIZERS.get(name)
    accepted = list(inspect.signature(cls).parameters)
    unknown = [k for k in hyper if k not in accepted]
    if unknown:
        raise TrainError(f"unknown hyperparameter(s) for {cls.name}: {', '.join(unknown)}",
                         hint=f"{cls.name} accepts: {', '.join(accepted)}")
    return cls(**hyper)


def get(identifier: str | dict | Optimizer) -> Optimizer:
    """Like keras ``optimizers.get``: a name, a ``{"name": ..., **hyper}`` dict or an instance."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str):
        return create(identifier)
    if isinstance(identifier, dict):
        cfg = dict(identifier)
        if "name" not in cfg:
            raise TrainError("optimizer config needs a 'name'",
                             hint=f"e.g. {{name: adam, lr: 0.001}}; names: "
                                  f"{', '.join(OPTIMIZERS.names())}")
        return create(cfg.pop("name"), **cfg)
    raise TrainError(f"cannot make an optimizer from {identifier!r}",
                     hint="give a name, a dict with 'name', or an Optimizer")
