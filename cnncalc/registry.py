"""One small registry type for every named concept: layer types, optimizers, schedules, inits,
preprocessors, conventions and data sources.

An :class:`Entry` holds the canonical name, its aliases, the object, the declared parameters
(name, default, help) and a line of help. Everything that needs the names reads them from here:
settings validation, CLI choices and help, ``cnncalc layers``, docs tables and test
parametrisation. A name is looked up forgivingly (case, surrounding blanks and ``-`` for ``_``
do not matter), and an unknown name raises the registry's error with the closest match.

>>> colours = Registry("colour")
>>> _ = colours.add("red", (255, 0, 0), aliases=("rouge",), help="the colour of blood")
>>> colours.lookup(" Rouge ").name
'red'
>>> colours.canonical("blue") is None
True
"""
from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from cnncalc.errors import CnnCalcError

__all__ = ["REQUIRED", "Entry", "Param", "Registry", "doc_line", "normalize", "signature_params"]


class _Required:
    """The default of a parameter that has none: it must be given."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "REQUIRED"

    def __reduce__(self):
        return (_Required, ())


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Param:
    """One declared parameter of an entry: its name, default (``REQUIRED`` if none) and help."""

    name: str
    default: Any = None
    help: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class Entry:
    """A registered name: canonical ``name``, ``aliases``, the ``obj`` and its ``params``.

    ``extra`` holds facts a consumer derives from the entry (an optimizer's state multiplier,
    a convention's rounding flags) so they are written next to the name, once.
    """

    name: str
    obj: Any
    aliases: tuple[str, ...] = ()
    params: tuple[Param, ...] = ()
    help: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def defaults(self) -> dict[str, Any]:
        """``{parameter: default}`` for the parameters that have one."""
        return {p.name: p.default for p in self.params if not p.required}

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)


def signature_params(cls: type, help_attr: str = "param_help") -> tuple[Param, ...]:
    """The constructor's positional-or-keyword parameters as :class:`Param` s: each default
    from the signature (``REQUIRED`` where there is none), each help from the ``help_attr``
    mappings of the class and its bases (a subclass's line wins). Keyword-only parameters
    (alternative spellings such as ``rho=``) are left out. So a default is written once, in
    the signature.

    >>> class Rule:
    ...     param_help = {"lr": "learning rate"}
    ...     def __init__(self, lr, decay=0.9, *, alpha=None): ...
    >>> [(p.name, p.default, p.help) for p in signature_params(Rule)]
    [('lr', REQUIRED, 'learning rate'), ('decay', 0.9, '')]
    """
    helps: dict[str, str] = {}
    for c in reversed(cls.__mro__):
        helps.update(c.__dict__.get(help_attr, {}))
    return tuple(Param(p.name, REQUIRED if p.default is p.empty else p.default,
                       helps.get(p.name, ""))
                 for p in inspect.signature(cls).parameters.values()
                 if p.kind is p.POSITIONAL_OR_KEYWORD)


def doc_line(obj: Any) -> str:
    """The first line of ``obj``'s docstring: an entry's help when the object documents itself."""
    lines = (obj.__doc__ or "").strip().splitlines()
    return lines[0] if lines else ""


def normalize(name: str) -> str:
    """The lookup key of a name: stripped, lower case, ``-`` and blanks read as ``_``."""
    return "_".join(str(name).strip().lower().replace("-", "_").split())


class Registry:
    """Named entries of one concept (``what`` names it in messages, e.g. ``"optimizer"``).

    ``error`` is the exception class raised for an unknown name (a :class:`CnnCalcError`
    subclass, so the CLI turns it into exit code 2 with the hint).
    """

    def __init__(self, what: str, *, error: type[CnnCalcError] = CnnCalcError):
        self.what = what
        self.error = error
        self._entries: dict[str, Entry] = {}
        self._keys: dict[str, str] = {}  # normalized name or alias -> canonical name

    # -- building -------------------------------------------------------------------------------

    def add(self, name: str, obj: Any, *, aliases: tuple[str, ...] | list[str] = (),
            params: tuple[Param, ...] | list[Param] = (), help: str = "",
            **extra: Any) -> Entry:
        """Register ``obj`` under ``name`` and ``aliases``; a name taken twice is a TypeError."""
        entry = Entry(name, obj, tuple(aliases), tuple(params), help, MappingProxyType(extra))
        keys = [normalize(n) for n in (name, *entry.aliases)]
        for key in keys:
            if key in self._keys:
                raise TypeError(f"{self.what} name {key!r} registered twice "
                                f"({self._keys[key]!r} and {name!r})")
        self._entries[name] = entry
        for key in keys:
            self._keys[key] = name
        return entry

    def register(self, name: str | None = None, **kw: Any) -> Callable[[Any], Any]:
        """Decorator form of :meth:`add`; the name defaults to the object's ``name`` attribute."""
        def deco(obj):
            self.add(name or obj.name, obj, **kw)
            return obj
        return deco

    # -- reading --------------------------------------------------------------------------------

    def canonical(self, name: Any) -> str | None:
        """The canonical name for ``name`` or one of its aliases; None when unknown."""
        if not isinstance(name, str):
            return None
        return self._keys.get(normalize(name))

    def suggest(self, name: Any, n: int = 1) -> list[str]:
        """Up to ``n`` registered names or aliases closest to ``name``."""
        return difflib.get_close_matches(normalize(str(name)), list(self._keys), n=n, cutoff=0.5)

    def lookup(self, name: Any) -> Entry:
        """The entry for ``name``; unknown or non-string names raise ``self.error`` with a hint."""
        key = self.canonical(name)
        if key is None:
            if not isinstance(name, str):
                raise self.error(f"{self.what} name must be a string; got {name!r}",
                                 hint=f"one of: {', '.join(self.names())}")
            close = self.suggest(name)
            raise self.error(f"unknown {self.what} {name!r}",
                             hint=(f"did you mean {close[0]!r}? " if close else "")
                             + f"one of: {', '.join(self.names())}")
        return self._entries[key]

    def get(self, name: Any) -> Any:
        """The registered object for ``name`` (see :meth:`lookup`)."""
        return self.lookup(name).obj

    def names(self) -> tuple[str, ...]:
        """Canonical names, in registration order (CLI choices, docs tables)."""
        return tuple(self._entries)

    def aliases(self) -> dict[str, str]:
        """``{alias: canonical}`` for every alias."""
        return {a: e.name for e in self._entries.values() for a in e.aliases}

    def entries(self) -> tuple[Entry, ...]:
        return tuple(self._entries.values())

    def __iter__(self) -> Iterator[Entry]:
        return iter(tuple(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: Any) -> bool:
        return self.canonical(name) is not None

    def __getitem__(self, name: str) -> Entry:
        return self.lookup(name)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {list(self._entries)})"


class LazyModule:
    """A module imported on first attribute access.

    A registry's module is imported for its names alone by ``cnncalc analyze`` (CLI help and
    choices); the implementations behind the names may need NumPy, which costs about 100 ms of
    start-up that analysing a spec never uses. ``np = LazyModule("numpy")`` defers that cost to
    the first ``np.something`` an optimizer actually runs.
    """

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        import importlib

        module = importlib.import_module(self._name)
        self.__dict__.update(vars(module))  # later look-ups are plain attribute reads
        return getattr(module, attr)
