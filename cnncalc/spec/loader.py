"""YAML text → plain Python data plus a :class:`SourceMap` of positions.

We compose the node tree with PyYAML's *safe* loader and build the data ourselves, so that

* duplicate keys are an error (PyYAML would silently keep the last one), and
* every value's line and column is known for error messages, without injecting marker keys
  into the user's data.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path as FilePath

import yaml

from cnncalc.errors import Location, SpecError

Path = tuple


@dataclass
class SourceMap:
    """Maps a data path such as ``("layers", 2, "conv", "stride")`` to its 1-based position."""

    file: str | None = None
    positions: dict = field(default_factory=dict)

    def locate(self, path: Path | None) -> Location | None:
        """The position of ``path``, or of its nearest ancestor that has one."""
        if path is None:
            return Location(self.file) if self.file else None
        path = tuple(path)
        while True:
            if path in self.positions:
                line, col = self.positions[path]
                return Location(self.file, line, col)
            if not path:
                return Location(self.file) if self.file else None
            path = path[:-1]


_CONSTRUCTOR = yaml.SafeLoader("")


def _construct(node: yaml.Node):
    return _CONSTRUCTOR.construct_object(node, deep=True)


def _walk(node: yaml.Node, path: Path, smap: SourceMap):
    smap.positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        seen: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise SpecError("YAML merge keys ('<<') are not supported in specs",
                                hint="write the keys out, or use a block with repeat:",
                                location=Location(smap.file, key_node.start_mark.line + 1,
                                                  key_node.start_mark.column + 1))
            key = _construct(key_node)
            if isinstance(key, (list, dict)):
                raise SpecError("a mapping key must be a plain value",
                                location=Location(smap.file, key_node.start_mark.line + 1,
                                                  key_node.start_mark.column + 1))
            if key in seen:
                first = seen[key]
                raise SpecError(
                    f"duplicate key '{key}' (first at line {first[0]}, column {first[1]})",
                    hint="YAML would silently keep only the last value; remove one of them",
                    location=Location(smap.file, key_node.start_mark.line + 1,
                                      key_node.start_mark.column + 1),
                    path=path + (key,))
            seen[key] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = _walk(value_node, path + (key,), smap)
            # the key's own position is more useful than the value's for "unknown key" errors
            smap.positions[path + (key,)] = seen[key]
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_walk(item, path + (i,), smap) for i, item in enumerate(node.value)]
    return _construct(node)


def parse_yaml(text: str, file: str | None = None) -> tuple[object, SourceMap]:
    """Parse spec text safely; return ``(data, source_map)``.

    Raises
    ------
    SpecError
        on a YAML syntax error (with its line and column) or a duplicate key.
    """
    smap = SourceMap(file=file)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        context = f" ({err.context})" if err.context else ""
        if err.context_mark is not None and err.context and "flow" in err.context:
            # An unclosed [ or { is reported where the parser gave up (often the file's end);
            # where it was opened is the line to fix.
            mark = err.context_mark
            context += f", opened at line {mark.line + 1}, not closed"
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        problem = err.problem or str(err)
        raise SpecError(f"malformed YAML: {problem}{context}",
                        hint="check the indentation and the ':' after each key near this line",
                        location=loc) from None
    except yaml.YAMLError as err:
        raise SpecError(f"malformed YAML: {err}", location=Location(file)) from None
    if node is None:
        return None, smap
    try:
        data = _walk(node, (), smap)
    except yaml.constructor.ConstructorError as err:
        mark = err.problem_mark
        raise SpecError(f"malformed YAML: {err.problem}",
                        location=Location(file, mark.line + 1, mark.column + 1) if mark else None
                        ) from None
    return data, smap


def read_source(spec, file: str | None = None) -> tuple[object, SourceMap, str]:
    """``(data, source_map, text)`` from a spec file path, YAML text or already-parsed data.

    A string is a path when it is one line ending in ``.yaml``/``.yml``; otherwise it is the
    YAML text itself. Parsed data comes with an empty source map and no text.
    """
    if isinstance(spec, FilePath) or (isinstance(spec, str) and "\n" not in spec
                                      and spec.strip().endswith((".yaml", ".yml"))):
        path = FilePath(spec)
        if not path.exists():
            raise SpecError(f"spec file '{path}' not found",
                            hint="give the path of a YAML spec, e.g. specs/lenet5.yaml")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise SpecError(f"cannot read spec file '{path}': {err}") from None
        file = file or str(path)
    elif isinstance(spec, str):
        text = spec
    else:
        return spec, SourceMap(file=file), ""
    data, smap = parse_yaml(text, file)
    return data, smap, text
