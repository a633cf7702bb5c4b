"""Weight initialisation (lecture: small random numbers, Xavier, He), in plain numpy.

Part of the engine (a :class:`~cnncalc.engine.network.Network` initialises itself); the trainer
and the labs read it from here. Every scheme is one entry of :data:`INITS` (name, aliases,
function, its declared parameter with default and help).

Contract:

* :func:`fan_in` — conv weight ``(K, C/groups, kh, kw)`` -> ``C/groups * kh * kw`` (the lecture's
  ``filter_size**2 * input_channels``); fully-connected ``(out, in)`` -> ``in``.
* :func:`initialize` ``(spec, shape, rng, dtype)`` -> a new array. ``spec`` is a name
  (``"he"``), ``"name:arg"`` (``"normal:0.01"``), a dict (``{"name": "normal", "std": 0.01}``)
  or a bare number (= ``normal`` with that std).
* :func:`init_params` fills a whole ``{"<layer>.<param>": shape}`` table: weights by the scheme
  (per-layer ``overrides`` allowed), biases 0, 1-D weights (batch/layer-norm scale) 1,
  PReLU ``alpha`` 0.25, ``running_mean`` 0, ``running_var`` 1.

The schemes, their aliases and parameters: :data:`INITS` (``normal`` and ``uniform`` take one
argument, ``std`` / ``bound``; ``xavier`` is the lecture's ``randn / sqrt(fan_in)``, not Glorot's
2/(fan_in+fan_out); ``*_uniform`` draw U(±sqrt(3)·std) with the std of their normal twin).
"""
from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from cnncalc.errors import TrainError
from cnncalc.registry import Param, Registry

__all__ = ["INITS", "fan_in", "init_params", "initialize", "parse_spec"]


def fan_in(shape: tuple[int, ...]) -> int:
    """Inputs feeding one output unit: ``prod(shape[1:])``.

    >>> fan_in((64, 3, 3, 3))   # conv: 3 input channels, 3x3 filters
    27
    >>> fan_in((10, 500))       # fully connected, 500 inputs
    500
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise TrainError(f"fan_in needs a weight of rank >= 2 (out, in, ...); got shape {shape}",
                         hint="biases and norm scales are not initialised from fan_in")
    n = math.prod(shape[1:])
    if n <= 0:
        raise TrainError(f"fan_in of shape {shape} is {n}; every dimension must be >= 1")
    return n


def _zeros(shape, rng, dtype):
    warnings.warn("zeros initialisation of a weight: every unit computes the same output and gets "
                  "the same gradient (no symmetry breaking)", stacklevel=3)
    return np.zeros(shape, dtype)


def _ones(shape, rng, dtype):
    return np.ones(shape, dtype)


def _normal(shape, rng, dtype, std: float = 0.01):
    return (rng.standard_normal(shape) * std).astype(dtype, copy=False)


def _uniform(shape, rng, dtype, bound: float = 0.05):
    return rng.uniform(-bound, bound, size=shape).astype(dtype, copy=False)


def _xavier(shape, rng, dtype):
    return _normal(shape, rng, dtype, 1.0 / math.sqrt(fan_in(shape)))


def _he(shape, rng, dtype):
    return _normal(shape, rng, dtype, math.sqrt(2.0 / fan_in(shape)))


def _xavier_uniform(shape, rng, dtype):
    return _uniform(shape, rng, dtype, math.sqrt(3.0) / math.sqrt(fan_in(shape)))


def _he_uniform(shape, rng, dtype):
    return _uniform(shape, rng, dtype, math.sqrt(3.0) * math.sqrt(2.0 / fan_in(shape)))


INITS = Registry("init", error=TrainError)
INITS.add("zeros", _zeros, aliases=("zero",), help="0 (warns: no symmetry breaking)")
INITS.add("ones", _ones, help="1")
INITS.add("normal", _normal, aliases=("gaussian", "randn"),
          params=(Param("std", 0.01, "standard deviation of N(0, std²)"),),
          help="N(0, std²): the lecture's 0.01 * randn")
INITS.add("uniform", _uniform, params=(Param("bound", 0.05, "half-width of U(-bound, bound)"),),
          help="U(-bound, bound)")
INITS.add("xavier", _xavier, aliases=("xavier_normal",),
          help="N(0, 1/fan_in): the lecture's randn / sqrt(fan_in)")
INITS.add("he", _he, aliases=("he_normal", "kaiming", "kaiming_normal"),
          help="N(0, 2/fan_in): randn / sqrt(fan_in / 2)")
INITS.add("xavier_uniform", _xavier_uniform, help="U(±sqrt(3)·std), std = 1/sqrt(fan_in)")
INITS.add("he_uniform", _he_uniform, aliases=("kaiming_uniform",),
          help="U(±sqrt(3)·std), std = sqrt(2/fan_in)")


def _argname(key: str) -> str | None:
    """The one optional argument of init ``key`` (``"std"``, ``"bound"``) or None."""
    params = INITS[key].param_names
    return params[0] if params else None


def parse_spec(spec: Any) -> tuple[str, dict[str, float]]:
    """Normalise an init spec to ``(name, kwargs)``.

    >>> parse_spec("normal:0.01")
    ('normal', {'std': 0.01})
    >>> parse_spec(0.5)
    ('normal', {'std': 0.5})
    >>> parse_spec({"name": "he"})
    ('he', {})
    """
    hint = (f"names: {', '.join(INITS.names())}; "
            "e.g. 'he', 'normal:0.01', {name: normal, std: 0.01}")
    if isinstance(spec, numbers.Real) and not isinstance(spec, bool):
        name, kwargs = "normal", {"std": spec}
    elif isinstance(spec, str):
        text = spec.strip()
        try:
            return parse_spec(float(text))
        except ValueError:
            pass
        name, sep, arg = text.partition(":")
        kwargs = {}
        key = INITS.canonical(name)
        if sep:
            argname = _argname(key) if key else None
            if argname is None:
                raise TrainError(f"init {name!r} takes no argument; got {spec!r}", hint=hint)
            try:
                kwargs[argname] = float(arg)
            except ValueError:
                raise TrainError(f"init argument in {spec!r} must be a number", hint=hint) from None
    elif isinstance(spec, Mapping):
        d = dict(spec)
        if "name" not in d:
            raise TrainError(f"init spec {spec!r} lacks a 'name'", hint=hint)
        name = d.pop("name")
        kwargs = d
    else:
        raise TrainError(f"cannot read init spec {spec!r}", hint=hint)
    key = INITS.canonical(name)
    if key is None:
        raise TrainError(f"unknown init {name!r}", hint=hint)
    argname = _argname(key)
    for k, v in kwargs.items():
        if k != argname:
            raise TrainError(f"init {key!r} has no argument {k!r}",
                             hint=f"{key} takes {argname or 'no arguments'}")
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
            raise TrainError(f"init {key} {k} must be a non-negative number; got {v!r}", hint=hint)
        kwargs[k] = float(v)
    return key, kwargs


def initialize(spec: Any, shape: tuple[int, ...], rng: np.random.Generator,
               dtype: Any = np.float32) -> np.ndarray:
    """A new array of ``shape`` drawn by ``spec`` (see the module table) from ``rng``.

    Raises
    ------
    TrainError
        Unknown or malformed spec, or a fan-in based init on a 1-D shape.
    """
    name, kwargs = parse_spec(spec)
    fn = INITS.get(name)
    shape = tuple(int(s) for s in shape)
    return fn(shape, rng, np.dtype(dtype), **kwargs)


def init_params(param_shapes: Mapping[str, tuple[int, ...]], scheme: Any,
                rng: np.random.Generator, dtype: Any = np.float32,
                overrides: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Initialise every tensor of ``param_shapes`` (keys ``"<layer>.<param>"``), in key order.

    Parameters
    ----------
    param_shapes : mapping ``"<layer>.<param>" -> shape``
    scheme : init spec for weights of rank >= 2 (conv, linear)
    rng : numpy Generator (draws happen in the mapping's order, so a seed reproduces the result)
    dtype : default float32
    overrides : mapping ``layer name -> spec`` (or a full ``"<layer>.<param>"`` key -> spec)

    Returns
    -------
    dict[str, ndarray]
        ``bias`` -> 0; ``weight`` of rank 1 (batch-norm scale) -> 1; ``alpha`` (PReLU) -> 0.25;
        ``running_mean`` -> 0; ``running_var`` -> 1; other tensors by their spec.

    Raises
    ------
    TrainError
        A key without ``<layer>.``, an override naming no layer, or a bad spec.
    """
    overrides = dict(overrides or {})
    parse_spec(scheme)
    for spec in overrides.values():
        parse_spec(spec)
    layers = {k.rpartition(".")[0] for k in param_shapes}
    unknown = [k for k in overrides if k not in layers and k not in param_shapes]
    if unknown:
        raise TrainError(f"init overrides name no layer: {', '.join(map(repr, unknown))}",
                         hint=f"layers are: {', '.join(sorted(layers))}")
    dtype = np.dtype(dtype)
    out: dict[str, np.ndarray] = {}
    for key, shape in param_shapes.items():
        layer, dot, pname = key.rpartition(".")
        if not dot:
            raise TrainError(f"parameter key {key!r} must look like '<layer>.<param>'",
                             hint="e.g. 'conv1.weight'")
        shape = tuple(int(s) for s in shape)
        if pname in ("bias", "running_mean", "beta"):
            out[key] = np.zeros(shape, dtype)
        elif pname == "running_var" or (pname in ("weight", "gamma") and len(shape) == 1):
            out[key] = np.ones(shape, dtype)
        elif pname == "alpha":
            out[key] = np.full(shape, 0.25, dtype)
        else:
            spec = overrides.get(key, overrides.get(layer, scheme))
            out[key] = initialize(spec, shape, rng, dtype)
    return out
