"""The spec language: YAML text → checked, expanded layer entries → a
:class:`~cnncalc.graph.Graph`.

* :mod:`~cnncalc.spec.loader`: YAML with line numbers (safe loader, duplicate keys refused);
* :mod:`~cnncalc.spec.schema`: the top-level keys, the input size, one layer entry and its
  options;
* :mod:`~cnncalc.spec.blocks`: ``blocks:``, ``repeat:`` and ``$var`` expansion;
* :mod:`~cnncalc.spec.build`: names, ``from:`` references and :func:`load`.
"""
from cnncalc.spec.build import load
from cnncalc.spec.loader import SourceMap, parse_yaml, read_source

__all__ = ["SourceMap", "load", "parse_yaml", "read_source"]
