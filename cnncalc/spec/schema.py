"""The spec language's keys: the top level, the input size and one layer entry.

A spec is a mapping::

    name: lenet5               # optional
    input: 32x32x3             # W x H x D, [W, H, D] or {width, height, channels}
    convention: pytorch        # optional; or strict: true
    blocks: {...}              # optional, see cnncalc.spec.blocks
    layers:
      - conv: {filters: 6, size: 5}        # one-key form, options under the type
      - {type: maxpool, size: 2}            # or the type as a key among the options
      - relu                                # or a bare type name

A layer entry may also carry ``name``, ``from`` (its inputs), ``init``, ``trainable: false``
(its parameters are frozen: counted, but not trained) and ``share: <layer>`` (it computes with
that earlier layer's parameters: a module used twice; they are counted once) or
``share: {weight: <layer>}`` (only the named tensors: tied weights).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass

from cnncalc.conventions import Convention, get_convention
from cnncalc.errors import ShapeError, SpecError
from cnncalc.graph import MAX_DIM
from cnncalc.layers import LAYERS
from cnncalc.layers.base import Layer, Shape
from cnncalc.layers.options import (all_spellings, boolean, canonical_option, other_spellings,
                                    positive_int, shown)

TOP_LEVEL_KEYS = ("name", "description", "input", "layers", "blocks", "strict", "convention",
                  "train", "classes")
#: keys of a layer entry that are not layer options
LAYER_META_KEYS = ("type", "name", "from", "init", "trainable", "share")
#: longest network or layer name: names are printed in every table, title and error
MAX_NAME_LENGTH = 200
INPUT_HINT = "write the input as WxHxD, e.g. 32x32x3, or {width: 32, height: 32, channels: 3}"


def spec_error(smap, cls, message, path=None, *, where=None, hint=None):
    """A :class:`SpecError` (or subclass ``cls``) located at ``path`` in the spec text."""
    return cls(message, where=where, hint=hint, location=smap.locate(path), path=path)


@dataclass
class Header:
    """The top-level settings of a spec, checked."""

    name: str
    input_shape: Shape
    convention: Convention
    layers: list
    blocks: dict
    train: dict


def read_header(data, smap, *, strict: bool = False, convention: str | None = None) -> Header:
    """Check the top-level keys; ``strict``/``convention`` override what the spec says."""
    if not isinstance(data, dict):
        raise spec_error(smap, SpecError, "a spec must be a YAML mapping with 'input' and "
                         "'layers'", (),
                         hint="start with:  name: mynet\\n  input: 32x32x3\\n  layers: ...")
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            close = difflib.get_close_matches(str(key), TOP_LEVEL_KEYS, n=1)
            raise spec_error(smap, SpecError, f"unknown top-level key '{key}'", (key,),
                             hint=(f"did you mean '{close[0]}'?" if close else
                                   f"allowed keys: {', '.join(TOP_LEVEL_KEYS)}"))
    if "strict" in data and not strict:
        try:
            strict = boolean(data["strict"])
        except ValueError as err:
            raise spec_error(smap, SpecError, f"strict: {err}", ("strict",)) from None
    try:
        conv = get_convention(convention or data.get("convention"), strict)
    except SpecError as err:
        raise spec_error(smap, SpecError, err.message, ("convention",), hint=err.hint) from None
    if "input" not in data:
        raise spec_error(smap, SpecError, "the spec has no 'input'", (),
                         hint="add e.g.  input: 32x32x3   (width x height x depth)")
    input_shape = parse_input(data["input"], smap)
    layers = data.get("layers")
    if not isinstance(layers, list) or not layers:
        raise spec_error(smap, SpecError, "'layers' must be a non-empty list",
                         ("layers",) if "layers" in data else (),
                         hint="list the layers under 'layers:', one '- ' item each")
    blocks = data.get("blocks") or {}
    if not isinstance(blocks, dict):
        raise spec_error(smap, SpecError, "'blocks' must map block names to lists of layers",
                         ("blocks",))
    train = data.get("train") or {}
    if not isinstance(train, dict):
        raise spec_error(smap, SpecError, "'train' must be a mapping of training settings",
                         ("train",))
    name = _name(data.get("name", "network"), smap, ("name",))
    return Header(name, input_shape, conv, layers, blocks, train)


def parse_input(raw, smap) -> Shape:
    """``WxHxD`` (``WxH`` means depth 1), ``[W, H, D]`` or ``{width, height, channels}``."""
    path = ("input",)
    try:
        if isinstance(raw, str):
            parts = [p.strip() for p in raw.lower().replace("×", "x").split("x")]
            if len(parts) == 2:
                parts.append("1")
            if len(parts) != 3:
                raise ValueError
            w, h, c = (positive_int(p) for p in parts)
        elif isinstance(raw, dict):
            unknown = set(raw) - {"width", "height", "channels", "depth", "W", "H", "D", "C"}
            if unknown:
                raise ValueError
            w = positive_int(raw.get("width", raw.get("W")))
            h = positive_int(raw.get("height", raw.get("H")))
            c = positive_int(raw.get("channels", raw.get("depth", raw.get("D", raw.get("C", 1)))))
        elif isinstance(raw, list) and len(raw) == 3:
            w, h, c = (positive_int(p) for p in raw)
        else:
            raise ValueError
    except (ValueError, TypeError) as err:
        too_big = " of at most 2,147,483,647" if "at most" in str(err) else ""
        raise spec_error(smap, SpecError, f"malformed input {shown(raw)}: sizes must be "
                         f"positive integers{too_big}", path, hint=INPUT_HINT) from None
    if max(w, h, c) > MAX_DIM:
        raise spec_error(smap, ShapeError, f"input {w}x{h}x{c} has a dimension over 2^31 - 1",
                         path, hint="check the input size")
    return Shape(c, h, w)


@dataclass
class RawLayer:
    """A layer entry after block expansion, before its options are parsed."""

    raw_kind: object
    name: str | None
    opts: dict
    path: tuple
    source: object = None
    scope: str | None = None        # instance prefix inside a block ("layer1.0")
    block: str | None = None
    init: object = None
    block_input: str | None = None   # the block entry's `from:` (its first instance's input)
    kind_path: tuple = ()            # where the type name sits (for "unknown type" errors)
    opts_path: tuple = ()            # where the options sit
    trainable: bool = True           # False: the layer's parameters are frozen
    share: object = None             # the `share:` reference, as written
    share_path: tuple = ()           # where it sits

    @property
    def kind(self) -> str | None:
        """The canonical layer type, or None when the name is unknown."""
        return LAYERS.canonical(self.raw_kind)


def parse_entry(entry, p, smap, scope=None, block=None) -> RawLayer:
    """One item of a ``layers:`` list (block parameters already substituted)."""
    if isinstance(entry, str):
        return RawLayer(entry, None, {}, p, None, scope, block, kind_path=p, opts_path=p)
    if not isinstance(entry, dict) or not entry:
        raise spec_error(smap, SpecError, f"a layer must be a type name or a mapping, got "
                         f"{shown(entry)}", p,
                         hint="e.g.  - relu   or   - conv: {filters: 6, size: 5}")
    if "type" in entry:
        opts = {k: v for k, v in entry.items() if k not in LAYER_META_KEYS}
        return RawLayer(entry["type"], _name(entry.get("name"), smap, p + ("name",)), opts, p,
                        entry.get("from"),
                        scope, block, entry.get("init"), kind_path=p + ("type",), opts_path=p,
                        trainable=trainable_flag(entry, p, smap), share=entry.get("share"),
                        share_path=p + ("share",))
    meta = {k: v for k, v in entry.items() if k in LAYER_META_KEYS}
    rest = [k for k in entry if k not in meta]
    if len(rest) != 1:
        raise spec_error(smap, SpecError, "a layer mapping needs exactly one layer type key, "
                         f"got {rest or 'none'}", p,
                         hint="write  - conv: {filters: 6, size: 5}  or use  type: conv")
    kind = rest[0]
    kind_path = p + (kind,)
    body = entry[kind]
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise spec_error(smap, SpecError, f"the options of '{kind}' must be a mapping, "
                         f"got {shown(body)}", kind_path, hint=f"e.g.  - {kind}: {{...}}")
    if "type" in body:
        raise spec_error(smap, SpecError, "'type' inside a one-key layer mapping",
                         kind_path + ("type",), hint="use one form or the other")
    opts = {k: v for k, v in body.items() if k not in LAYER_META_KEYS}
    name_path = kind_path + ("name",) if "name" in body else p + ("name",)
    return RawLayer(kind, _name(body.get("name", meta.get("name")), smap, name_path), opts, p,
                    body.get("from", meta.get("from")), scope, block,
                    body.get("init", meta.get("init")), kind_path=kind_path, opts_path=kind_path,
                    trainable=(trainable_flag(body, kind_path, smap)
                               and trainable_flag(meta, p, smap)),
                    share=body.get("share", meta.get("share")),
                    share_path=(kind_path if "share" in body else p) + ("share",))


def trainable_flag(entry: dict, p, smap) -> bool:
    """The entry's ``trainable:`` flag (default true), checked."""
    if "trainable" not in entry:
        return True
    try:
        return boolean(entry["trainable"])
    except (ValueError, TypeError) as err:
        raise spec_error(smap, SpecError, f"trainable: {err}", p + ("trainable",),
                         hint="write  trainable: false  to freeze the layer's parameters"
                         ) from None


def _name(value, smap, path) -> str | None:
    """A layer's or the network's name as text, at most :data:`MAX_NAME_LENGTH` characters."""
    if value is None:
        return None
    text = str(value)
    if len(text) > MAX_NAME_LENGTH:
        raise spec_error(smap, SpecError, f"the name is {len(text):,} characters long; a name "
                         f"may have at most {MAX_NAME_LENGTH}", path,
                         hint="give a short name; put longer text under 'description:'")
    return text


def build_layer(item: RawLayer, smap, where: str) -> Layer:
    """The layer object for ``item``: its type looked up, each option parsed once.

    An option may be spelled as its canonical name, a shared alias (``K``, ``filters``) or a
    layer-specific one; two spellings of one option, unknown options and missing required
    ones are errors at the option's line.
    """
    kind = item.kind
    if kind is None:
        close = LAYERS.suggest(item.raw_kind, n=3)
        raise spec_error(smap, SpecError, f"unknown layer type '{item.raw_kind}'",
                         item.kind_path, where=where,
                         hint=(f"did you mean {' or '.join(repr(c) for c in close)}? "
                               if close else "") + "`cnncalc layers` lists every type")
    cls = LAYERS.get(kind)
    parsed: dict = {}
    spelled: dict = {}
    for key, value in item.opts.items():
        canon = canonical_option(cls, key)
        path = item.opts_path + (key,)
        if canon is None:
            close = difflib.get_close_matches(str(key), all_spellings(cls), n=1)
            raise spec_error(smap, SpecError, f"unknown option '{key}' for {kind}", path,
                             where=where,
                             hint=(f"did you mean '{close[0]}'? " if close else "")
                             + f"{kind} takes: {', '.join(cls.options) or 'none'}")
        if canon in parsed:
            raise spec_error(smap, SpecError, f"'{key}' and '{spelled[canon]}' both set "
                             f"{canon}", path, where=where, hint="keep one of them")
        try:
            parsed[canon] = cls.options[canon].parse(value)
        except ValueError as err:
            raise spec_error(smap, SpecError, f"{key}: {err}", path, where=where,
                             hint=cls.options[canon].doc or None) from None
        spelled[canon] = key
    for canon, opt in cls.options.items():
        if opt.required and canon not in parsed:
            others = other_spellings(cls, canon)
            raise spec_error(smap, SpecError, f"{kind} needs '{canon}'"
                             + (f" (also written {', '.join(others[:3])})" if others else ""),
                             item.opts_path, where=where, hint=opt.doc or None)
    return cls(**parsed)

