"""Training settings: the spec's ``train:`` mapping merged with command-line overrides.

Precedence (later wins): the defaults below < the spec's ``train:`` < a resumed checkpoint's
settings < the command line. Every key is validated here, once, so the trainer never pops kwargs:
an unknown key is an error that names the closest known key.

==========================  ===============  ==================================================
key                         default          meaning
==========================  ===============  ==================================================
``data``                    ``synthetic``    ``mnist[:DIR]``, ``cifar10:DIR``, ``npz:FILE``,
                                             ``synthetic[:N]``
``epochs``                  10               passes over the training set
``batch_size``              64               images per step
``optimizer``               ``momentum``     sgd, momentum, nesterov, adagrad, rmsprop, adam,
                                             adamw
``lr``                      optimizer's      base learning rate alpha0
``momentum``                0.9              rho of momentum / nesterov
``betas``                   [0.9, 0.999]     Adam's beta1, beta2
``eps``                     optimizer's      added to the denominator (adagrad, rmsprop, adam)
``weight_decay``            0                L2 coefficient
``decay_rate``              0.99             RMSProp's leak
``bias_correction``         true             Adam's bias correction
``schedule``                ``constant``     constant, step, exponential, inverse_time, cosine,
                                             linear, inverse_sqrt
``schedule_per``            ``step``         the unit of t (and of warmup, milestones,
                                             step_size, total): ``step`` or ``epoch``
``warmup``                  0                linear warm-up length
``milestones``              —                step decay at these t
``gamma``                   0.1              step decay factor
``step_size``               —                step decay period
``k``                       —                exponential / inverse_time rate
``total``                   whole run        T of cosine / linear (default: the run's length)
``min_lr``                  0                floor of cosine / linear
``scale_lr_with_batch``     false            Goyal et al.: lr *= batch_size / base_batch
``base_batch``              256              the batch the base lr was tuned for
``init``                    ``he``           weight init (``zeros``, ``normal:0.01``, ``xavier``,
                                             ``he``, ...); a layer's ``init:`` overrides it
``preprocess``              ``none``         none, mean_image, channel_mean,
                                             channel_mean_std, pca, whiten (fit on train only)
``seed``                    0                init, shuffling and dropout
``eval_batch_size``         1000             batch for the per-epoch test evaluation
``eval_every``              1                evaluate on the test split every N epochs (0: end)
``shuffle``                 true             reshuffle the training set every epoch
``parallel``                ``auto``         ``false``: serial kernels (bit-reproducible)
``dtype``                   ``float32``      float32 or float64
``log_every``               100              steps between progress events in JSON output
==========================  ===============  ==================================================
"""
from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cnncalc.errors import TrainError

__all__ = ["KEYS", "TrainSettings", "resolve"]

OPTIMIZER_NAMES = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")
SCHEDULE_NAMES = ("constant", "step", "exponential", "inverse_time", "cosine", "linear",
                  "inverse_sqrt")
PREPROCESS_NAMES = ("none", "mean_image", "channel_mean", "channel_mean_std", "pca", "whiten")

# key aliases accepted in a spec's train: mapping (and by resolve()).
ALIASES = {
    "batch": "batch_size", "batchsize": "batch_size", "learning_rate": "lr", "optim": "optimizer",
    "opt": "optimizer", "beta": "betas", "rho": "momentum", "alpha": "decay_rate",
    "scheduler": "schedule", "lr_schedule": "schedule", "warmup_steps": "warmup",
    "init_scheme": "init", "weight_init": "init", "preprocessing": "preprocess",
    "epoch": "epochs", "dataset": "data", "no_bias_correction": None,
}


@dataclass
class TrainSettings:
    """Validated training settings (see the module table)."""

    data: str = "synthetic"
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "momentum"
    lr: float | None = None
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float | None = None
    weight_decay: float = 0.0
    decay_rate: float = 0.99
    bias_correction: bool = True
    schedule: str = "constant"
    schedule_per: str = "step"
    warmup: int = 0
    milestones: list[int] | None = None
    gamma: float = 0.1
    step_size: int | None = None
    k: float | None = None
    total: int | None = None
    min_lr: float = 0.0
    scale_lr_with_batch: bool = False
    base_batch: int = 256
    init: Any = "he"
    preprocess: str = "none"
    seed: int = 0
    eval_batch_size: int = 1000
    eval_every: int = 1
    shuffle: bool = True
    parallel: bool | None = None
    dtype: str = "float32"
    log_every: int = 100
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    # -- derived --------------------------------------------------------------------------------

    def optimizer_hyper(self) -> dict[str, Any]:
        """Keyword arguments for :func:`cnncalc.train.optim.create` (only what it accepts)."""
        name = self.optimizer
        hyper: dict[str, Any] = {"weight_decay": self.weight_decay}
        if self.lr is not None:
            hyper["lr"] = self.base_lr()
        if name in ("momentum", "nesterov"):
            hyper["momentum"] = self.momentum
        if name == "rmsprop":
            hyper["decay_rate"] = self.decay_rate
        if name in ("adam", "adamw"):
            hyper["betas"] = tuple(self.betas)
            hyper["bias_correction"] = self.bias_correction
        if name in ("adagrad", "rmsprop", "adam", "adamw") and self.eps is not None:
            hyper["eps"] = self.eps
        return hyper

    def base_lr(self) -> float:
        """``lr`` after the linear scaling rule (when ``scale_lr_with_batch``)."""
        from cnncalc.train.schedules import scale_lr_with_batch

        lr = self.lr if self.lr is not None else _default_lr(self.optimizer)
        if self.scale_lr_with_batch:
            lr = scale_lr_with_batch(lr, self.batch_size, self.base_batch)
        return lr

    def schedule_kwargs(self, steps_per_epoch: int) -> dict[str, Any]:
        """Keyword arguments for :func:`cnncalc.train.schedules.create` for this run."""
        name = self.schedule
        kw: dict[str, Any] = {}
        if name == "step":
            if self.milestones is not None:
                kw["milestones"] = list(self.milestones)
            elif self.step_size is not None:
                kw["step_size"] = self.step_size
            else:  # a sensible default: drop at a third and two thirds of the run
                n = self.run_length(steps_per_epoch)
                kw["milestones"] = sorted({max(1, n // 3), max(2, 2 * n // 3)})
            kw["gamma"] = self.gamma
        elif name in ("exponential", "inverse_time"):
            kw["k"] = self.k
        elif name in ("cosine", "linear"):
            kw["total"] = self.total if self.total is not None else self.run_length(
                steps_per_epoch)
            kw["min_lr"] = self.min_lr
        if self.warmup:
            kw["warmup"] = self.warmup
        return kw

    def run_length(self, steps_per_epoch: int) -> int:
        """The run's length in schedule units (steps or epochs)."""
        return self.epochs * (steps_per_epoch if self.schedule_per == "step" else 1)

    def given(self) -> dict[str, Any]:
        """Only the settings that some layer set explicitly (what a checkpoint stores)."""
        d = self.to_dict()
        return {k: d[k] for k in self.sources}

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-able), for checkpoints and ``--format json``."""
        d = dataclasses.asdict(self)
        d.pop("sources")
        d["betas"] = list(d["betas"])
        return d


KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TrainSettings)
                              if f.name != "sources")

_DEFAULT_LR = {"sgd": 0.01, "momentum": 0.01, "nesterov": 0.01, "adagrad": 0.01,
               "rmsprop": 0.001, "adam": 0.001, "adamw": 0.001}


def _default_lr(optimizer: str) -> float:
    return _DEFAULT_LR.get(optimizer, 0.01)


# ------------------------------------------------------------------------------------------------
# validation


def _err(key: str, source: str, message: str, hint: str | None = None) -> TrainError:
    return TrainError(f"{key}: {message}", where=source, hint=hint)


def _as_int(key, v, source, lo=1, hint=None):
    if isinstance(v, str):
        try:
            v = int(v.strip())
        except ValueError:
            pass
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise _err(key, source, f"expected an integer; received {v!r}", hint)
    if v < lo:
        raise _err(key, source, f"must be >= {lo}; received {v}", hint)
    return int(v)


def _as_float(key, v, source, lo=0.0, hi=math.inf, lo_open=False, hi_open=True, hint=None):
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            pass
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise _err(key, source, f"expected a number; received {v!r}", hint)
    v = float(v)
    ok = (math.isfinite(v) and (v > lo if lo_open else v >= lo)
          and (v < hi if hi_open else v <= hi))
    if not ok:
        lb, rb = ("(" if lo_open else "["), (")" if hi_open else "]")
        hi_txt = "inf" if math.isinf(hi) else f"{hi:g}"
        raise _err(key, source, f"must be in {lb}{lo:g}, {hi_txt}{rb}; received {v:g}", hint)
    return v


def _as_bool(key, v, source):
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("true", "yes", "on", "1"):
        return True
    if isinstance(v, str) and v.strip().lower() in ("false", "no", "off", "0"):
        return False
    if isinstance(v, numbers.Integral) and v in (0, 1):
        return bool(v)
    raise _err(key, source, f"expected true or false; received {v!r}")


def _as_choice(key, v, source, choices, aliases=None):
    if not isinstance(v, str):
        raise _err(key, source, f"expected one of {', '.join(choices)}; received {v!r}")
    k = v.strip().lower().replace("-", "_")
    k = (aliases or {}).get(k, k)
    if k not in choices:
        close = difflib.get_close_matches(k, choices, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"one of: {', '.join(choices)}"
        raise _err(key, source, f"unknown value {v!r}; expected one of {', '.join(choices)}",
                   hint)
    return k


def _as_int_list(key, v, source):
    if isinstance(v, str):
        parts = [p for p in v.replace(",", " ").split() if p]
        v = parts
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        v = [v]
    if not isinstance(v, (list, tuple)) or not v:
        raise _err(key, source, f"expected a list of integers; received {v!r}",
                   "e.g. milestones: [30, 60] or --milestones 30,60")
    out = [_as_int(key, x, source, lo=1) for x in v]
    if any(b <= a for a, b in itertools.pairwise(out)):
        raise _err(key, source, f"must be strictly increasing; received {out}")
    return out


def _as_betas(key, v, source):
    if isinstance(v, str):
        v = [p for p in v.replace(",", " ").split() if p]
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise _err(key, source, f"expected two numbers (beta1, beta2); received {v!r}",
                   "e.g. betas: [0.9, 0.999] or --betas 0.9,0.999")
    return tuple(_as_float(key, b, source, 0.0, 1.0, hint="each beta is in [0, 1)") for b in v)


def _as_data(key, v, source):
    if not isinstance(v, str) or not v.strip():
        raise _err(key, source, f"expected a data source string; received {v!r}",
                   "synthetic, synthetic:N, mnist, mnist:DIR, cifar10:DIR, npz:FILE")
    return v.strip()


def _as_init(key, v, source):
    from cnncalc.engine.init import parse_spec

    try:
        parse_spec(v)
    except TrainError as e:
        raise _err(key, source, e.message, e.hint) from None
    return v


def _as_parallel(key, v, source):
    if v is None or (isinstance(v, str) and v.strip().lower() in ("auto", "none", "")):
        return None
    return _as_bool(key, v, source)


def _as_seed(key, v, source):
    return _as_int(key, v, source, lo=0, hint="a non-negative integer")


_VALIDATORS = {
    "data": _as_data,
    "epochs": lambda k, v, s: _as_int(k, v, s, lo=1),
    "batch_size": lambda k, v, s: _as_int(k, v, s, lo=1),
    "optimizer": lambda k, v, s: _as_choice(
        k, v, s, OPTIMIZER_NAMES, {"sgd_momentum": "momentum", "nag": "nesterov"}),
    "lr": lambda k, v, s: None if v is None else _as_float(
        k, v, s, hint="a learning rate is a non-negative number such as 0.01"),
    "momentum": lambda k, v, s: _as_float(k, v, s, 0.0, 1.0, hint="typically 0.9 or 0.99"),
    "betas": _as_betas,
    "eps": lambda k, v, s: None if v is None else _as_float(k, v, s, lo_open=True),
    "weight_decay": lambda k, v, s: _as_float(k, v, s, hint="e.g. 5e-4"),
    "decay_rate": lambda k, v, s: _as_float(k, v, s, 0.0, 1.0, hint="typically 0.9 or 0.99"),
    "bias_correction": _as_bool,
    "schedule": lambda k, v, s: _as_choice(
        k, v, s, SCHEDULE_NAMES,
        {"none": "constant", "multistep": "step", "exp": "exponential", "cos": "cosine",
         "rsqrt": "inverse_sqrt"}),
    "schedule_per": lambda k, v, s: _as_choice(
        k, v, s, ("step", "epoch"), {"iteration": "step", "iter": "step", "steps": "step",
                                     "epochs": "epoch"}),
    "warmup": lambda k, v, s: _as_int(k, v, s, lo=0),
    "milestones": lambda k, v, s: None if v is None else _as_int_list(k, v, s),
    "gamma": lambda k, v, s: _as_float(k, v, s, 0.0, 1.0, lo_open=True, hi_open=False),
    "step_size": lambda k, v, s: None if v is None else _as_int(k, v, s, lo=1),
    "k": lambda k, v, s: None if v is None else _as_float(k, v, s),
    "total": lambda k, v, s: None if v is None else _as_int(k, v, s, lo=1),
    "min_lr": lambda k, v, s: _as_float(k, v, s),
    "scale_lr_with_batch": _as_bool,
    "base_batch": lambda k, v, s: _as_int(k, v, s, lo=1),
    "init": _as_init,
    "preprocess": lambda k, v, s: _as_choice(
        k, v, s, PREPROCESS_NAMES, {"": "none", "identity": "none", "mean": "mean_image",
                                    "standardize": "channel_mean_std",
                                    "normalize": "channel_mean_std", "zca": "whiten"}),
    "seed": _as_seed,
    "eval_batch_size": lambda k, v, s: _as_int(k, v, s, lo=1),
    "eval_every": lambda k, v, s: _as_int(k, v, s, lo=0),
    "shuffle": _as_bool,
    "parallel": _as_parallel,
    "dtype": lambda k, v, s: _as_choice(k, v, s, ("float32", "float64")),
    "log_every": lambda k, v, s: _as_int(k, v, s, lo=1),
}
assert set(_VALIDATORS) == set(KEYS)


def _normalise_key(key: Any, source: str) -> str:
    if not isinstance(key, str):
        raise TrainError(f"training setting names must be strings; received {key!r}",
                         where=source)
    k = key.strip().lower().replace("-", "_")
    if k in KEYS:
        return k
    if k in ALIASES and ALIASES[k] is not None:
        return ALIASES[k]
    close = difflib.get_close_matches(k, list(KEYS) + [a for a, t in ALIASES.items() if t],
                                      n=1, cutoff=0.6)
    hint = f"did you mean {ALIASES.get(close[0]) or close[0]!r}?" if close else \
        f"known settings: {', '.join(KEYS)}"
    raise TrainError(f"unknown training setting {key!r}", where=source,
                     hint=hint)


def resolve(*layers: tuple[str, Mapping[str, Any] | None]) -> TrainSettings:
    """Merge ``(source_name, mapping)`` layers, later ones winning, and validate every key.

    ``None`` values in a layer mean "not given" and are skipped (so unset CLI options do not
    override the spec). Example::

        resolve(("spec train:", graph.train), ("command line", {"lr": 0.1, "epochs": None}))

    Raises
    ------
    TrainError
        An unknown key (with the closest known one), a wrong type or a value out of range,
        or settings that contradict each other (e.g. both ``milestones`` and ``step_size``).
    """
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, mapping in layers:
        if mapping is None:
            continue
        if not isinstance(mapping, Mapping):
            raise TrainError(f"training settings must be a mapping; received "
                             f"{type(mapping).__name__}", where=source,
                             hint="e.g. train: {epochs: 10, batch_size: 64, lr: 0.01}")
        for key, v in mapping.items():
            if key == "no_bias_correction":
                if v is None:
                    continue
                k, v = "bias_correction", not _as_bool(key, v, source)
            else:
                k = _normalise_key(key, source)
            if v is None and k not in ("parallel",):
                continue
            values[k] = _VALIDATORS[k](k, v, source)
            sources[k] = source
    s = TrainSettings(**values)
    s.sources = sources
    _cross_check(s)
    return s


def _cross_check(s: TrainSettings) -> None:
    def src(k):
        return s.sources.get(k, "defaults")

    if s.schedule == "step" and s.milestones is not None and s.step_size is not None:
        raise _err("milestones", src("milestones"),
                   "the step schedule takes milestones or step_size, not both",
                   "drop one of them")
    if s.schedule in ("exponential", "inverse_time") and s.k is None:
        raise _err("k", "defaults", f"the {s.schedule} schedule needs a decay rate k",
                   "e.g. --k 0.1 (per " + s.schedule_per + ")")
    unused = {"milestones": "step", "step_size": "step", "gamma": "step", "k":
              "exponential/inverse_time", "total": "cosine/linear", "min_lr": "cosine/linear"}
    for key, used_by in unused.items():
        if key in s.sources and s.schedule not in used_by.split("/"):
            raise _err(key, src(key), f"is not used by the {s.schedule} schedule "
                       f"(it belongs to {used_by})", f"add --schedule {used_by.split('/')[0]} "
                       "or drop it")
    opt_keys = {"momentum": ("momentum", "nesterov"), "betas": ("adam", "adamw"),
                "bias_correction": ("adam", "adamw"), "decay_rate": ("rmsprop",),
                "eps": ("adagrad", "rmsprop", "adam", "adamw")}
    for key, users in opt_keys.items():
        if key in s.sources and s.optimizer not in users:
            raise _err(key, src(key), f"is not used by the {s.optimizer} optimizer "
                       f"(it belongs to {', '.join(users)})", "pick a matching --optimizer "
                       "or drop it")
    if s.schedule in ("cosine", "linear") and s.total is not None and s.warmup \
            and s.total <= s.warmup:
        raise _err("total", src("total"), f"({s.total}) must exceed warmup ({s.warmup})")
    if s.milestones is not None and s.warmup and s.milestones[0] <= s.warmup:
        raise _err("milestones", src("milestones"),
                   f"{s.milestones} must all come after the warm-up ({s.warmup})",
                   "milestones count from the start of the run, warm-up included")
    lr = s.base_lr()
    if s.min_lr > lr and s.schedule in ("cosine", "linear"):
        raise _err("min_lr", src("min_lr"), f"({s.min_lr:g}) exceeds lr ({lr:g})")
