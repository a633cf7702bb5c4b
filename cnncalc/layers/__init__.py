"""The layer registry: spec names (and aliases) → layer types.

Adding a layer is one class in a family module (with ``@register``, naming its kernel pair or
op), the kernel pair in ``kernels/``, and one case in ``tests/reference.py``'s ``KINDS``. Each entry of :data:`LAYERS` holds the class, its aliases, its options
as parameters (name, default, help) and its one-line summary; ``cnncalc layers``, the spec
parser and the rule tests read them from there.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping

from cnncalc.errors import SpecError
from cnncalc.layers.base import Context, Layer, RFStep, Shape
from cnncalc.registry import REQUIRED, Param, Registry

LAYERS = Registry("layer type", error=SpecError)


def option_params(cls: type[Layer]) -> tuple[Param, ...]:
    """A layer's options as registry parameters: name, default (``REQUIRED``), help."""
    return tuple(Param(name, REQUIRED if opt.required else opt.default, opt.doc)
                 for name, opt in cls.options.items())


def register(cls: type[Layer]) -> type[Layer]:
    """Class decorator: register ``cls`` under its ``kind`` and ``aliases``."""
    kind = cls.kind
    if not kind or kind != kind.lower():
        raise TypeError(f"{cls.__name__}.kind must be a lowercase name, got {kind!r}")
    LAYERS.add(kind, cls, aliases=cls.aliases, params=option_params(cls), help=cls.summary)
    return cls


class _Classes(Mapping):
    """``{kind: layer class}``, read from :data:`LAYERS` (canonical kinds only)."""

    def __getitem__(self, kind: str) -> type[Layer]:
        if LAYERS.canonical(kind) != kind:
            raise KeyError(kind)
        return LAYERS.get(kind)

    def __iter__(self) -> Iterator[str]:
        return iter(LAYERS.names())

    def __len__(self) -> int:
        return len(LAYERS)


#: kind → layer class, for callers that want a plain mapping
REGISTRY: Mapping[str, type[Layer]] = _Classes()


def resolve_kind(name: str) -> str | None:
    """Canonical kind for a spec name or alias (case-insensitive), or None."""
    return LAYERS.canonical(name)


def suggest_kind(name: str) -> list[str]:
    """Up to three registered kinds or aliases close to ``name``."""
    return LAYERS.suggest(name, n=3)


def get(kind: str) -> type[Layer]:
    """The layer class for a kind or alias; an unknown name raises :class:`SpecError`."""
    return LAYERS.get(kind)


# importing the families registers them
from cnncalc.layers import activation, conv, linear, merge, norm, pool, reshape  # noqa: E402,F401

__all__ = ["LAYERS", "REGISTRY", "register", "resolve_kind", "suggest_kind", "get",
           "option_params", "Layer", "Shape", "Context", "RFStep"]
