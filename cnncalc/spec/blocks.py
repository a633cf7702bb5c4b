"""Blocks, ``repeat:`` and ``$var`` parameters: a spec's ``layers:`` list → a flat list of
:class:`~cnncalc.spec.schema.RawLayer`.

::

    blocks:
      unit:                       # a named block: a list of layers, or
        params: {width: 8}        # {params: defaults, layers: [...]}
        layers:
          - conv: {filters: $width, size: 3, pad: 1}
    layers:
      - {block: unit, name: s1, repeat: 2, with: {width: 16}}   # instances s1.0, s1.1
      - repeat: 3                                                # an inline, unnamed block
        layers: [relu]

Layers inside an instance are scoped by its name (``s1.0.conv1``). Instances of a block
without a ``name`` are numbered per block (``unit1``, ``unit2``, ...).
"""
from __future__ import annotations

import difflib
import re

from cnncalc.errors import SpecError
from cnncalc.layers.options import positive_int, shown
from cnncalc.spec.schema import RawLayer, trainable_flag, parse_entry, spec_error

#: how deep blocks may use blocks; deeper is almost surely a block that uses itself
MAX_DEPTH = 16
#: layers a spec may expand to; past this a `repeat:` is a typo, not a network (DenseNet-121
#: has about 430)
MAX_LAYERS = 50_000
BLOCK_ENTRY_KEYS = ("block", "from", "layers", "name", "repeat", "trainable", "with")
_VAR = re.compile(r"^\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?$")


class BlockExpander:
    """Expands one spec's ``layers:`` against its ``blocks:``."""

    def __init__(self, blocks: dict, smap):
        self.blocks = blocks
        self.smap = smap
        self.instances: dict[str, int] = {}   # block name -> unnamed instances so far
        self.expanded = 0                     # layers expanded so far

    def _count(self, n: int, path, add: bool = True) -> None:
        """Add ``n`` layers to the expansion (or, with ``add=False``, only check that they
        would fit), refusing more than :data:`MAX_LAYERS`."""
        if self.expanded + n > MAX_LAYERS:
            raise spec_error(self.smap, SpecError, f"the spec expands to more than "
                             f"{MAX_LAYERS:,} layers", path,
                             hint="check the repeat: counts (and blocks that repeat blocks)")
        if add:
            self.expanded += n

    def expand(self, entries, path, scope=None, args=None, depth=0, block=None) -> list[RawLayer]:
        """Every layer of ``entries`` in order, blocks and repeats unrolled."""
        if depth > MAX_DEPTH:
            raise spec_error(self.smap, SpecError, f"blocks nest more than {MAX_DEPTH} deep "
                             "(a block uses itself?)", path)
        args = args or {}
        items: list[RawLayer] = []
        for i, entry in enumerate(entries):
            p = path + (i,)
            if isinstance(entry, dict) and ("block" in entry or "repeat" in entry):
                items.extend(self.expand_block(entry, p, scope, args, depth))
            else:
                if isinstance(entry, dict):
                    entry = self.substitute(entry, args, p)
                self._count(1, p)
                items.append(parse_entry(entry, p, self.smap, scope, block))
        return items

    def expand_block(self, entry, p, scope, args, depth) -> list[RawLayer]:
        for key in entry:
            if key not in BLOCK_ENTRY_KEYS:
                raise spec_error(self.smap, SpecError, f"unknown key '{key}' in a block entry",
                                 p + (key,),
                                 hint=f"a block entry takes: {', '.join(BLOCK_ENTRY_KEYS)}")
        try:
            repeat = positive_int(entry.get("repeat", 1))
        except ValueError as err:
            raise spec_error(self.smap, SpecError, f"repeat: {err}", p + ("repeat",)) from None
        if "block" in entry:
            bname = entry["block"]
            body, body_path, defaults = self.block_body(bname, p)
        else:
            bname, body, body_path, defaults = None, entry.get("layers"), p + ("layers",), {}
            if not isinstance(body, list) or not body:
                raise spec_error(self.smap, SpecError, "a 'repeat' entry needs a non-empty "
                                 "'layers' list", p,
                                 hint="e.g.  - repeat: 3\n    layers: [conv: {...}, relu]")
        self._count(repeat * len(body), p + ("repeat",), add=False)  # before unrolling any
        with_args = entry.get("with") or {}
        if not isinstance(with_args, dict):
            raise spec_error(self.smap, SpecError, "'with' must map block parameters to values",
                             p + ("with",))
        new_args = {**args, **defaults, **self.substitute(with_args, args, p + ("with",))}
        base = entry.get("name")
        if base is not None and not isinstance(base, (str, int)):
            raise spec_error(self.smap, SpecError, "a block entry's 'name' must be a plain "
                             f"name, got {shown(base)}", p + ("name",))
        if base is None:
            key = bname or "block"
            self.instances[key] = self.instances.get(key, 0) + 1
            base = f"{key}{self.instances[key]}"
        base = f"{scope}.{base}" if scope else str(base)
        first_from = entry.get("from")
        frozen = not trainable_flag(entry, p, self.smap)   # `trainable: false` freezes every layer
        items = []
        for r in range(repeat):
            inner = self.expand(body, body_path, f"{base}.{r}" if repeat > 1 else base,
                                new_args, depth + 1, bname)
            if r == 0 and first_from is not None:
                for it in inner:
                    it.block_input = first_from
            if frozen:
                for it in inner:
                    it.trainable = False
            items.extend(inner)
        return items

    def block_body(self, bname, p) -> tuple[list, tuple, dict]:
        """``(layers, their path, parameter defaults)`` of the named block."""
        if not isinstance(bname, str):
            raise spec_error(self.smap, SpecError, f"'block' must name a block, got "
                             f"{shown(bname)}", p + ("block",),
                             hint="e.g.  - {block: unit, repeat: 2}")
        if bname not in self.blocks:
            close = difflib.get_close_matches(str(bname), [str(b) for b in self.blocks], n=1)
            raise spec_error(self.smap, SpecError, f"unknown block '{bname}'", p + ("block",),
                             hint=(f"did you mean '{close[0]}'?" if close else
                                   (f"defined blocks: {', '.join(map(repr, self.blocks))}"
                                    if self.blocks else
                                    "define it under the top-level 'blocks:'")))
        body = self.blocks[bname]
        body_path = ("blocks", bname)
        defaults = {}
        if isinstance(body, dict):
            defaults = body.get("params") or {}
            if not isinstance(defaults, dict):
                raise spec_error(self.smap, SpecError, f"block '{bname}': 'params' must map "
                                 "parameter names to default values", body_path + ("params",))
            body = body.get("layers")
            body_path = body_path + ("layers",)
        if not isinstance(body, list) or not body:
            raise spec_error(self.smap, SpecError, f"block '{bname}' must be a non-empty list "
                             "of layers", ("blocks", bname))
        return body, body_path, defaults

    def substitute(self, value, args, path):
        """``value`` with every ``$name`` (or ``${name}``) replaced by its block argument."""
        if isinstance(value, str):
            m = _VAR.match(value.strip())
            if m:
                name = m.group(1)
                if name not in args:
                    raise spec_error(self.smap, SpecError, f"block parameter '${name}' has no "
                                     "value", path, hint=f"pass it with  with: {{{name}: ...}}")
                return args[name]
            return value
        if isinstance(value, list):
            return [self.substitute(v, args, path + (i,)) for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {k: self.substitute(v, args, path + (k,)) for k, v in value.items()}
        return value
