"""Training settings: the spec's ``train:`` mapping merged with command-line overrides.

Precedence (later wins): the declared defaults < the spec's ``train:`` < a resumed checkpoint's
settings < the command line. Every key is validated here, once, so the trainer never pops kwargs:
an unknown key is an error that names the closest known key.

Each field of :class:`TrainSettings` declares its name, default, help, key aliases, the
registry its value names (optimizers, schedules, preprocessors, data sources) and its
command-line spelling, once, in its :class:`Setting` metadata. ``cnncalc train``'s options,
:func:`settings_table` and the validation are derived from those declarations; the optimizer
and schedule hyperparameters take their defaults and help from the registries'
entries, so ``create("rmsprop")``, ``train: {optimizer: rmsprop}`` and ``--optimizer rmsprop``
build the same optimizer.
"""
from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
import numbers
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cnncalc.engine.init import INITS
from cnncalc.layers.options import MAX_INT
from cnncalc.errors import TrainError
from cnncalc.optim import OPTIMIZERS
from cnncalc.registry import REQUIRED, Registry
from cnncalc.schedules import SCHEDULES, scale_lr_with_batch
from cnncalc.train.data import DATA_SOURCES, data_forms
from cnncalc.train.preprocess import PREPROCESSORS

__all__ = ["KEYS", "SETTINGS", "Setting", "TrainSettings", "default_text", "meaning",
           "normalise_key", "option_flags", "resolve", "settings_table", "value_type"]

#: value parser: ``parse(key, value, source) -> value`` (raises TrainError naming key and source)
Parser = Callable[[str, Any, str], Any]


# ------------------------------------------------------------------------------------------------
# value parsers


def _err(key: str, source: str, message: str, hint: str | None = None) -> TrainError:
    return TrainError(f"{key}: {message}", where=source, hint=hint)


def _received(v: Any) -> str:
    """``v`` for a message: a huge integer by its magnitude, long text cut."""
    if isinstance(v, numbers.Integral) and not isinstance(v, bool) and abs(v).bit_length() > 99:
        return f"{'-' if v < 0 else ''}about 10^{int(abs(v).bit_length() * 0.30103)}"
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


#: the most epochs one run may ask for (each is a pass over the training set)
MAX_EPOCHS = 1_000_000


def _as_int(key, v, source, lo=1, hint=None, hi=MAX_INT):
    if isinstance(v, str):
        try:
            v = int(v.strip())
        except ValueError:
            pass
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise _err(key, source, f"expected an integer; received {_received(v)}", hint)
    if v < lo:
        raise _err(key, source, f"must be >= {lo}; received {_received(v)}", hint)
    if v > hi:
        raise _err(key, source, f"must be at most {hi:,}; received {_received(v)}", hint)
    return int(v)


def _as_float(key, v, source, lo=0.0, hi=math.inf, lo_open=False, hi_open=True, hint=None):
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            pass
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise _err(key, source, f"expected a number; received {_received(v)}", hint)
    try:
        v = float(v)
    except OverflowError:       # an integer past float's range: refused as out of range below
        v = math.inf if v > 0 else -math.inf
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
    raise _err(key, source, f"expected true or false; received {_received(v)}")


def _as_name(registry: Registry) -> Parser:
    """A parser to the canonical name of a registry entry (aliases and spellings forgiven)."""
    def parse(key, v, source):
        name = registry.canonical(v)
        if name is None:
            names = ", ".join(registry.names())
            close = registry.suggest(v) if isinstance(v, str) else []
            hint = (f"did you mean {registry.canonical(close[0])!r}?" if close
                    else f"one of: {names}")
            raise _err(key, source, f"unknown value {_received(v)}; expected one of {names}", hint)
        return name
    return parse


def _as_choice(*choices: str, aliases: Mapping[str, str] | None = None) -> Parser:
    """A parser to one of a few fixed words (not a registry: ``step``/``epoch``, dtypes)."""
    table = Registry("value")
    for c in choices:
        table.add(c, c, aliases=tuple(a for a, t in (aliases or {}).items() if t == c))
    return _as_name(table)


def _as_int_list(key, v, source):
    if isinstance(v, str):
        v = [p for p in v.replace(",", " ").split() if p]
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        v = [v]
    if not isinstance(v, (list, tuple)) or not v:
        raise _err(key, source, f"expected a list of integers; received {_received(v)}",
                   "e.g. milestones: [30, 60] or --milestones 30,60")
    out = [_as_int(key, x, source, lo=1) for x in v]
    if any(b <= a for a, b in itertools.pairwise(out)):
        raise _err(key, source, f"must be strictly increasing; received {out}")
    return out


def _as_betas(key, v, source):
    if isinstance(v, str):
        v = [p for p in v.replace(",", " ").split() if p]
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise _err(key, source, f"expected two numbers (beta1, beta2); received {_received(v)}",
                   "e.g. betas: [0.9, 0.999] or --betas 0.9,0.999")
    return tuple(_as_float(key, b, source, 0.0, 1.0, hint="each beta is in [0, 1)") for b in v)


def _as_data(key, v, source):
    if not isinstance(v, str) or not v.strip():
        raise _err(key, source, f"expected a data source string; received {_received(v)}",
                   data_forms())
    v = v.strip()
    if v.partition(":")[0] not in DATA_SOURCES and not v.lower().endswith(".npz"):
        raise _err(key, source, f"unknown data source {_received(v)}",
                   f"use {data_forms()} or a path ending in .npz")
    return v


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


def _int_from(lo: int, hint: str | None = None, hi: int = MAX_INT) -> Parser:
    return lambda k, v, s: _as_int(k, v, s, lo=lo, hint=hint, hi=hi)


def _float_in(lo=0.0, hi=math.inf, lo_open=False, hi_open=True, hint=None) -> Parser:
    return lambda k, v, s: _as_float(k, v, s, lo, hi, lo_open, hi_open, hint)


# ------------------------------------------------------------------------------------------------
# declarations


@dataclass(frozen=True)
class Setting:
    """What a :class:`TrainSettings` field declares besides its name and default.

    ``registry``: the field's value names an entry of it (its names are the choices) or, with
    ``hyper_of``, the field is a hyperparameter of that registry's entries (its default and help
    come from them). ``choices``: the few fixed words a field that names no registry takes.
    ``flags``: the command-line spelling when it is not ``--field-name`` (``"--on/--off"`` for
    a switch).
    """

    help: str
    parse: Parser
    registry: Registry | None = None
    hyper_of: Registry | None = None
    choices: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    metavar: str | None = None


def _setting(default: Any, help: str, parse: Parser, **kw: Any) -> Any:
    return field(default=default, metadata={"setting": Setting(help, parse, **kw)})


def _one_of(default: str, help: str, choices: tuple[str, ...],
            aliases: Mapping[str, str] | None = None) -> Any:
    """A field that takes one of a few fixed words (``aliases``: other spellings of them)."""
    return _setting(default, help, _as_choice(*choices, aliases=aliases), choices=choices,
                    metavar="|".join(choices))


def _named(registry: Registry, default: str, help: str, **kw: Any) -> Any:
    """A field whose value is an entry's name: the registry gives the choices and the parser."""
    return _setting(default, help, _as_name(registry), registry=registry, **kw)


def _hyper(registry: Registry, key: str, parse: Parser, **kw: Any) -> Any:
    """A hyperparameter of ``registry``'s entries: default None ("the entry's") and its help."""
    helps = [e.param(key).help for e in registry if key in e.param_names]
    return _setting(None, helps[0], parse, hyper_of=registry, **kw)


@dataclass
class TrainSettings:
    """Validated training settings (see :func:`settings_table`)."""

    data: str = _setting("synthetic", "data source: " + data_forms()
                         + ", or a path ending in .npz", _as_data, aliases=("dataset",),
                         flags=("--data", "-d"), metavar="SOURCE")
    epochs: int = _setting(10, "passes over the training set", _int_from(1, hi=MAX_EPOCHS),
                           aliases=("epoch",), flags=("--epochs", "-e"))
    batch_size: int = _setting(64, "images per step", _int_from(1),
                               aliases=("batch", "batchsize"), flags=("--batch-size", "-b"))
    optimizer: str = _named(OPTIMIZERS, "momentum", "the update rule",
                            aliases=("optim", "opt"), flags=("--optimizer", "-o"))
    lr: float | None = _hyper(OPTIMIZERS, "lr", _float_in(
        hint="a learning rate is a non-negative number such as 0.01"),
        aliases=("learning_rate",))
    momentum: float | None = _hyper(OPTIMIZERS, "momentum",
                                    _float_in(0.0, 1.0, hint="typically 0.9 or 0.99"),
                                    aliases=("rho",))
    betas: tuple[float, float] | None = _hyper(OPTIMIZERS, "betas", _as_betas,
                                               aliases=("beta",), metavar="B1,B2")
    eps: float | None = _hyper(OPTIMIZERS, "eps", _float_in(lo_open=True))
    weight_decay: float | None = _hyper(OPTIMIZERS, "weight_decay", _float_in(hint="e.g. 5e-4"),
                                        flags=("--weight-decay", "--wd"))
    decay_rate: float | None = _hyper(OPTIMIZERS, "decay_rate",
                                      _float_in(0.0, 1.0, hint="typically 0.9 or 0.99"),
                                      aliases=("alpha",))
    bias_correction: bool | None = _hyper(OPTIMIZERS, "bias_correction", _as_bool)
    schedule: str = _named(SCHEDULES, "constant", "learning-rate schedule",
                           aliases=("scheduler", "lr_schedule"))
    schedule_per: str = _one_of("step", "the unit of t (and of warmup, milestones, step_size, "
                                "total)", ("step", "epoch"), aliases={
                                    "iteration": "step", "iter": "step", "steps": "step",
                                    "epochs": "epoch"})
    warmup: int = _setting(0, "linear warm-up length", _int_from(0), aliases=("warmup_steps",))
    milestones: list[int] | None = _hyper(SCHEDULES, "milestones", _as_int_list,
                                          metavar="T1,T2")
    gamma: float | None = _hyper(SCHEDULES, "gamma",
                                 _float_in(0.0, 1.0, lo_open=True, hi_open=False))
    step_size: int | None = _hyper(SCHEDULES, "step_size", _int_from(1))
    k: float | None = _hyper(SCHEDULES, "k", _float_in())
    total: int | None = _hyper(SCHEDULES, "total", _int_from(1))
    min_lr: float | None = _hyper(SCHEDULES, "min_lr", _float_in())
    scale_lr_with_batch: bool = _setting(False, "Goyal et al.: lr *= batch_size / base_batch",
                                         _as_bool,
                                         flags=("--scale-lr-with-batch/--no-scale-lr",))
    base_batch: int = _setting(256, "the batch the base lr was tuned for", _int_from(1))
    init: Any = _setting("he", "weight init: " + ", ".join(
                             f"{e.name}:{e.params[0].name.upper()}" if e.params else e.name
                             for e in INITS) + "; a layer's init: overrides it",
                         _as_init, aliases=("init_scheme", "weight_init"))
    preprocess: str = _named(PREPROCESSORS, "none", "fitted on the training split only",
                             aliases=("preprocessing",))
    seed: int = _setting(0, "init, shuffling and dropout seed", _int_from(
        0, "a non-negative integer"))
    eval_batch_size: int = _setting(1000, "batch for the per-epoch test evaluation",
                                    _int_from(1))
    eval_every: int = _setting(1, "evaluate on the test split every N epochs (0: at the end)",
                               _int_from(0))
    shuffle: bool = _setting(True, "reshuffle the training set every epoch", _as_bool)
    parallel: bool | None = _setting(None, "parallel kernels (auto); --deterministic: serial "
                                     "kernels, bit-reproducible runs", _as_parallel,
                                     flags=("--parallel/--deterministic",))
    compile: str = _one_of("background", "on a first run: background = train on the NumPy "
                           "tier while the kernels compile in another process; wait = compile "
                           "first (--deterministic always waits)", ("background", "wait"))
    dtype: str = _one_of("float32", "floating-point type of the weights and activations",
                         ("float32", "float64"))
    log_every: int = _setting(100, "steps between progress events in JSON output", _int_from(1))
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    # -- derived --------------------------------------------------------------------------------

    def optimizer_hyper(self) -> dict[str, Any]:
        """Every parameter of the optimizer's entry, for :func:`cnncalc.optim.create`: the
        setting where one is given, else the entry's default; ``lr`` is :meth:`base_lr`."""
        entry = OPTIMIZERS.lookup(self.optimizer)
        hyper = {}
        for p in entry.params:
            value = getattr(self, p.name)
            hyper[p.name] = p.default if value is None else value
        hyper["lr"] = self.base_lr()
        return hyper

    def base_lr(self) -> float:
        """``lr`` (the optimizer's default when not given) after the linear scaling rule."""
        lr = self.lr if self.lr is not None else OPTIMIZERS.lookup(self.optimizer).param(
            "lr").default
        if self.scale_lr_with_batch:
            lr = scale_lr_with_batch(lr, self.batch_size, self.base_batch)
        return lr

    def schedule_kwargs(self, steps_per_epoch: int) -> dict[str, Any]:
        """Keyword arguments for :func:`cnncalc.schedules.create` for this run: the schedule
        entry's parameters that are set (``total`` defaults to the run's length; ``step``
        without milestones or step_size drops at a third and two thirds of the run)."""
        entry = SCHEDULES.lookup(self.schedule)
        kw: dict[str, Any] = {}
        for p in entry.params:
            if p.name == "lr":
                continue
            value = getattr(self, p.name)
            if value is not None:
                kw[p.name] = list(value) if isinstance(value, list) else value
        n = self.run_length(steps_per_epoch)
        if "total" in entry.param_names and "total" not in kw:
            kw["total"] = n
        if entry.name == "step" and "milestones" not in kw and "step_size" not in kw:
            kw["milestones"] = sorted({max(1, n // 3), max(2, 2 * n // 3)})
        if not kw.get("warmup"):
            kw.pop("warmup", None)
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
        if d["betas"] is not None:
            d["betas"] = list(d["betas"])
        return d


#: the declared fields, in order: ``{name: dataclasses.Field}`` (metadata["setting"] a Setting)
SETTINGS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainSettings)
                                          if "setting" in f.metadata}
KEYS: tuple[str, ...] = tuple(SETTINGS)
#: key aliases accepted in a spec's ``train:`` mapping, from the fields' declarations
KEY_ALIASES: dict[str, str] = {a: name for name, f in SETTINGS.items()
                               for a in f.metadata["setting"].aliases}


def setting(name: str) -> Setting:
    return SETTINGS[name].metadata["setting"]


def _shown(value: Any) -> str:
    if value is REQUIRED:
        return "required"
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    return str(list(value) if isinstance(value, tuple) else value)


def default_text(name: str) -> str:
    """A field's default for help texts; a hyperparameter lists its entries' defaults."""
    s, f = setting(name), SETTINGS[name]
    if name == "total":
        return "the run's length"
    if s.hyper_of is None:
        d = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        return "auto" if d is None else _shown(d)
    by_default: dict[str, list[str]] = {}
    for e in s.hyper_of:
        if name in e.param_names:
            by_default.setdefault(_shown(e.param(name).default), []).append(e.name)
    if len(by_default) == 1:
        return next(iter(by_default))
    return "; ".join(f"{', '.join(names)}: {d}" for d, names in by_default.items())


def users(name: str) -> tuple[str, ...]:
    """The entries of a hyperparameter's registry that take it (``momentum``: momentum,
    nesterov)."""
    s = setting(name)
    return tuple(e.name for e in s.hyper_of if name in e.param_names)


def meaning(name: str) -> str:
    """A field's help with its choices (a registry's names) or the entries that take it."""
    s = setting(name)
    if s.registry is not None:
        names = [e.name + (f" ({', '.join(a for a in e.aliases if a)})"
                           if any(e.aliases) else "") for e in s.registry]
        return f"{s.help}: {', '.join(names)}"
    if s.choices:
        return f"{s.help}: {', '.join(s.choices)}"
    if s.hyper_of is not None and len(users(name)) < len(s.hyper_of):
        return f"{s.help} ({', '.join(users(name))})"
    return s.help


def value_type(name: str) -> type:
    """The command-line type of a field: its scalar type (bool, int, float, str), or str for
    text that the field's parser reads (lists, pairs, init specs)."""
    annotation = typing.get_type_hints(TrainSettings)[name]
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if len(args) == 1 else annotation
    return base if base in (bool, int, float, str) else str


def option_flags(name: str) -> tuple[str, ...]:
    """The command-line spelling of a field: its declared flags, else ``--field-name``
    (``--field-name/--no-field-name`` for a switch)."""
    s = setting(name)
    if s.flags:
        return s.flags
    dashed = "--" + name.replace("_", "-")
    return (f"{dashed}/--no-{dashed[2:]}",) if value_type(name) is bool else (dashed,)


def settings_table() -> str:
    """A markdown table of every setting: ``train:`` key, option, default, meaning."""
    rows = ["| `train:` key | option | default | meaning |", "|---|---|---|---|"]
    for name in KEYS:
        flags = ", ".join(f"`{f}`" for f in option_flags(name))
        rows.append(f"| `{name}` | {flags} | {default_text(name)} | "
                    f"{meaning(name).replace('|', chr(92) + '|')} |")
    return "\n".join(rows) + "\n"


# ------------------------------------------------------------------------------------------------
# merging


def normalise_key(key: Any, source: str) -> str:
    if not isinstance(key, str):
        raise TrainError(f"training setting names must be strings; received {key!r}",
                         where=source)
    k = key.strip().lower().replace("-", "_")
    if k in SETTINGS:
        return k
    if k in KEY_ALIASES:
        return KEY_ALIASES[k]
    close = difflib.get_close_matches(k, list(KEYS) + list(KEY_ALIASES), n=1, cutoff=0.6)
    hint = f"did you mean {KEY_ALIASES.get(close[0]) or close[0]!r}?" if close else \
        f"known settings: {', '.join(KEYS)}"
    raise TrainError(f"unknown training setting {key!r}", where=source, hint=hint)


def resolve(*layers: tuple[str, Mapping[str, Any] | None]) -> TrainSettings:
    """Merge ``(source_name, mapping)`` layers, later ones winning, and validate every key.

    ``None`` values in a layer mean "not given" and are skipped (so unset CLI options do not
    override the spec); ``no_bias_correction: true`` reads as ``bias_correction: false``.
    Example::

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
            if v is None:
                continue
            if key == "no_bias_correction":
                k, v = "bias_correction", not _as_bool(key, v, source)
            else:
                k = normalise_key(key, source)
            values[k] = setting(k).parse(k, v, source)
            sources[k] = source
    s = TrainSettings(**values)
    s.sources = sources
    _cross_check(s)
    return s


def _cross_check(s: TrainSettings) -> None:
    def src(k):
        return s.sources.get(k, "defaults")

    if s.milestones is not None and s.step_size is not None:
        raise _err("milestones", src("milestones"),
                   "the step schedule takes milestones or step_size, not both",
                   "drop one of them")
    for key in KEYS:
        owner = setting(key).hyper_of
        if owner is None or key not in s.sources:
            continue
        chosen = s.optimizer if owner is OPTIMIZERS else s.schedule
        if key not in owner.lookup(chosen).param_names:
            takers = users(key)
            raise _err(key, src(key), f"is not used by the {chosen} {owner.what} "
                       f"(it belongs to {', '.join(takers)})",
                       f"pick a matching --{owner.what} (e.g. --{owner.what} {takers[0]}) "
                       "or drop it")
    sched = SCHEDULES.lookup(s.schedule)
    for p in sched.params:
        if p.required and p.name not in ("lr", "total") and getattr(s, p.name) is None:
            raise _err(p.name, "defaults", f"the {s.schedule} schedule needs {p.help} "
                       f"{p.name}", f"e.g. --{p.name.replace('_', '-')} 0.1 (per "
                       f"{s.schedule_per})")
    if "total" in sched.param_names and s.total is not None and s.warmup \
            and s.total <= s.warmup:
        raise _err("total", src("total"), f"({s.total}) must exceed warmup ({s.warmup})")
    if s.milestones is not None and s.warmup and s.milestones[0] <= s.warmup:
        raise _err("milestones", src("milestones"),
                   f"{s.milestones} must all come after the warm-up ({s.warmup})",
                   "milestones count from the start of the run, warm-up included")
    lr = s.base_lr()
    if s.min_lr is not None and s.min_lr > lr:
        raise _err("min_lr", src("min_lr"), f"({s.min_lr:g}) exceeds lr ({lr:g})")
