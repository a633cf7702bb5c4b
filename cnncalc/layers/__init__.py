"""The layer registry: spec names (and aliases) → layer types.

Adding a layer is one class here (with ``@register``), one kernel pair in ``kernels/`` and
rows in the rule tests.
"""
from __future__ import annotations

import difflib

from cnncalc.layers.base import Context, Layer, RFStep, Shape

REGISTRY: dict[str, type[Layer]] = {}
ALIASES: dict[str, str] = {}


def register(cls: type[Layer]) -> type[Layer]:
    kind = cls.kind
    if not kind or kind != kind.lower():
        raise TypeError(f"{cls.__name__}.kind must be a lowercase name, got {kind!r}")
    for name in (kind, *cls.aliases):
        if name in REGISTRY or name in ALIASES:
            raise TypeError(f"layer name {name!r} registered twice ({cls.__name__})")
    REGISTRY[kind] = cls
    for alias in cls.aliases:
        ALIASES[alias] = kind
    return cls


def resolve_kind(name: str) -> str | None:
    """Canonical kind for a spec name or alias (case-insensitive), or None."""
    key = str(name).lower()
    if key in REGISTRY:
        return key
    return ALIASES.get(key)


def suggest_kind(name: str) -> list[str]:
    return difflib.get_close_matches(str(name).lower(), [*REGISTRY, *ALIASES], n=3, cutoff=0.5)


def get(kind: str) -> type[Layer]:
    return REGISTRY[resolve_kind(kind)]


# importing the families registers them
from cnncalc.layers import activation, conv, linear, merge, norm, pool, reshape  # noqa: E402,F401

__all__ = ["REGISTRY", "ALIASES", "register", "resolve_kind", "suggest_kind", "get",
           "Layer", "Shape", "Context", "RFStep"]
