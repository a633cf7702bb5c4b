"""Spec → :class:`~cnncalc.graph.Graph`: name each expanded layer, resolve its ``from:`` and
hand it to the graph, which connects it and propagates shapes.

Names: a layer without ``name`` is called after its type's prefix and a counter kept per block
instance (``conv1``, ``pool2``); inside an instance every name gets the instance's prefix
(``s1.0.conv1``). ``from:`` names an earlier layer, looked up in the enclosing instance first;
inside a block ``from: input`` means the block's input (the layer before the instance, or the
block entry's own ``from:``). Without ``from`` a layer takes the previous layer. ``share:``
names the earlier layer whose parameters a layer uses, looked up like ``from:``.
"""
from __future__ import annotations

import difflib
import os
from collections.abc import Iterator

from cnncalc.errors import SpecError
from cnncalc.graph import INPUT_NAME, Graph, LayerEntry, build_graph, layer_label
from cnncalc.layers import LAYERS
from cnncalc.layers.options import shown
from cnncalc.spec.blocks import BlockExpander
from cnncalc.spec.loader import SourceMap, read_source
from cnncalc.spec.schema import RawLayer, build_layer, read_header, spec_error


def load(spec, *, strict: bool = False, convention: str | None = None,
         file: str | None = None) -> Graph:
    """Build a :class:`Graph` from a spec file path, YAML text, or already-parsed data.

    ``strict``/``convention`` override what the spec says (cs231n's integer rule, Caffe's ceil
    pooling, Darknet's padding; see :mod:`cnncalc.conventions`). A path ending in ``.onnx`` is
    an ONNX model, imported first (:mod:`cnncalc.onnx.importer`, loaded only then).
    """
    if isinstance(spec, (str, os.PathLike)) and "\n" not in str(spec) \
            and str(spec).strip().lower().endswith(".onnx"):
        from cnncalc.onnx.importer import import_model

        imported = import_model(str(spec).strip())
        graph = load(imported.spec_text, strict=strict, convention=convention)
        graph.file = file or str(spec)
        graph.warnings.extend(imported.notes)
        return graph
    data, smap, text = read_source(spec, file)
    header = read_header(data, smap, strict=strict, convention=convention)
    items = BlockExpander(header.blocks, smap).expand(header.layers, ("layers",))
    return build_graph(resolve_entries(items, smap), name=header.name,
                       input_shape=header.input_shape, convention=header.convention,
                       source=text, file=smap.file, train=header.train, source_map=smap)


def resolve_entries(items: list[RawLayer], smap: SourceMap) -> Iterator[LayerEntry]:
    """Each item named, built and with its inputs resolved, in order.

    A generator: the graph connects (and may reject) each entry before the next is named, so
    errors come in the order of the spec's layers.
    """
    known: set[str] = set()
    counters: dict[str, int] = {}        # "<scope>/<prefix>" -> layers named so far
    block_inputs: dict[str, str] = {}    # instance scope -> the name feeding it
    prev = INPUT_NAME
    for index, item in enumerate(items, start=1):
        kind = item.kind
        local = item.name
        if local is None:
            prefix = LAYERS.get(kind).prefix if kind else "layer"
            key = f"{item.scope or ''}/{prefix}"
            counters[key] = counters.get(key, 0) + 1
            local = f"{prefix}{counters[key]}"
        name = f"{item.scope}.{local}" if item.scope else local
        where = layer_label(index, name, kind)
        if name == INPUT_NAME or name in known:
            raise spec_error(smap, SpecError, f"layer name '{name}' is used twice"
                             if name in known else "'input' is reserved for the network input",
                             item.path, where=where, hint="give each layer a unique name:")
        layer = build_layer(item, smap, where)
        refs = _References(item, known, smap, where)
        block_in = None
        if item.scope is not None:
            if item.scope not in block_inputs:
                block_inputs[item.scope] = (refs.find(item.block_input, None, item.path)
                                            if item.block_input is not None else prev)
                prev = block_inputs[item.scope]
            block_in = block_inputs[item.scope]
        yield LayerEntry(name=name, layer=layer, inputs=refs.inputs(prev, block_in),
                         path=item.path, opts_path=item.opts_path, block=item.block,
                         init=item.init, trainable=item.trainable, shares=refs.shares())
        known.add(name)
        prev = name


class _References:
    """Resolves the ``from:`` names of one item against the layers named before it."""

    def __init__(self, item: RawLayer, known: set[str], smap: SourceMap, where: str):
        self.item, self.known, self.smap, self.where = item, known, smap, where

    def inputs(self, prev: str, block_in: str | None) -> list[str]:
        sources = self.item.source
        if sources is None:
            return [prev]
        many = isinstance(sources, list)
        found = []
        for j, src in enumerate(sources if many else [sources]):
            path = self.item.opts_path + (("from", j) if many else ("from",))
            if not isinstance(src, str):
                raise spec_error(self.smap, SpecError,
                                 f"'from' must name layers, got {shown(src)}",
                                 path, where=self.where)
            found.append(self.find(src, block_in, path))
        return found

    def shares(self) -> str | dict | None:
        """The layer named by ``share: <layer>``, or ``{tensor: layer}`` for
        ``share: {weight: <layer>}`` (None without ``share``)."""
        target, path = self.item.share, self.item.share_path
        if target is None:
            return None
        if isinstance(target, dict) and target:
            return {str(tensor): self._share_target(layer, path + (tensor,))
                    for tensor, layer in target.items()}
        return self._share_target(target, path)

    def _share_target(self, target, path) -> str:
        if not isinstance(target, str) or target == INPUT_NAME:
            raise spec_error(self.smap, SpecError, f"'share' must name an earlier layer, got "
                             f"{shown(target)}", path, where=self.where,
                             hint="e.g.  share: conv1  (conv1's parameters), or  share: "
                                  "{weight: fc1}  (only its weight)")
        return self.find(target, None, path, key="share")

    def find(self, src: str, block_in: str | None, path, key: str = "from") -> str:
        """The full name ``src`` refers to: in the item's own instance first, then globally."""
        if src == INPUT_NAME:
            return block_in if block_in is not None else INPUT_NAME
        scope = self.item.scope
        for cand in ((f"{scope}.{src}", src) if scope else (src,)):
            if cand in self.known:
                return cand
        close = difflib.get_close_matches(src, [*self.known, INPUT_NAME], n=1)
        raise spec_error(self.smap, SpecError, f"'{key}: {src}' names no earlier layer", path,
                         where=self.where,
                         hint=(f"did you mean '{close[0]}'? " if close else "")
                         + ("a layer can only take inputs from layers above it, or 'input'"
                            if key == "from" else
                            "a layer can only share the parameters of a layer above it"))
