"""YAML text → plain Python data plus a :class:`SourceMap` of positions.

We compose the node tree with PyYAML's *safe* loader and build the data ourselves, so that

* duplicate keys are an error (PyYAML would silently keep the last one),
* every value's line and column is known for error messages, without injecting marker keys
  into the user's data, and
* hostile YAML is refused before it costs time or memory: a tag other than YAML's standard
  scalar, sequence and mapping tags (``!!python/object/apply:...``), an alias that contains
  itself, nesting deeper than :data:`MAX_NESTING`, and aliases that expand to more than
  :data:`MAX_VALUES` values (an "alias bomb") are errors at their line.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path as FilePath

import yaml

from cnncalc.errors import Location, SpecError
from cnncalc.layers.options import shown

Path = tuple

#: deeper nesting than this is no architecture; PyYAML's composer recurses per level
MAX_NESTING = 200
#: values (scalars, lists, mappings) that aliases may add once followed; a file's own values are
#: bounded by MAX_WRITTEN_VALUES
MAX_VALUES = 100_000
#: values written in the file (a written-out 50,000-layer spec of conv and relu has 250,000):
#: counted while the parser streams them, so a megabyte spec of tiny values is refused before
#: the slower composing and building start
MAX_WRITTEN_VALUES = 300_000
#: a spec file larger than this is no architecture (the Inception v3 spec is 30 kB); the
#: limit bounds the YAML parser's time and memory
MAX_SPEC_BYTES = 8 << 20
#: the tags a spec may use: YAML's standard scalars, sequence and mapping
_YAML = "tag:yaml.org,2002:"
ALLOWED_TAGS = frozenset(_YAML + t for t in ("str", "int", "float", "bool", "null", "timestamp",
                                             "seq", "map"))


def tag_text(tag: str) -> str:
    """A tag as the spec wrote it: ``!!python/object`` rather than its expanded form."""
    return shown("!!" + tag[len(_YAML):] if tag.startswith(_YAML) else tag, 80)[1:-1]


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
#: libyaml's parser where PyYAML was built with it: some 30 times faster than PyYAML's own, so a
#: spec of megabytes is read (or refused) in well under a second
FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
#: a syntax error in a spec up to this size is parsed again with PyYAML's own parser, whose
#: messages say what it expected where (libyaml's are terser)
REPARSE_ERRORS_BELOW = 1 << 20


def _construct(node: yaml.Node):
    return _CONSTRUCTOR.construct_object(node, deep=True)


def _at(smap: SourceMap, node: yaml.Node) -> Location:
    return Location(smap.file, node.start_mark.line + 1, node.start_mark.column + 1)


class _Budget:
    """Counts the values built again through aliases (a node met before), and the nodes open on
    the way down (to find cycles)."""

    def __init__(self):
        self.seen: set[int] = set()
        self.values = 0
        self.open: set[int] = set()


def _walk(node: yaml.Node, path: Path, smap: SourceMap, budget: _Budget | None = None):
    budget = budget or _Budget()
    if id(node) in budget.seen:
        budget.values += 1
    else:
        budget.seen.add(id(node))
    if budget.values > MAX_VALUES:
        raise SpecError(f"the spec expands to more than {MAX_VALUES:,} values (aliases "
                        "repeating aliases: a YAML alias bomb?)", location=_at(smap, node),
                        hint="write the layers out, or use a block with repeat:")
    if len(path) > MAX_NESTING:
        raise SpecError(f"the spec nests more than {MAX_NESTING} levels deep",
                        location=_at(smap, node))
    if node.tag not in ALLOWED_TAGS:
        on = f" on '{shown(path[-1], 40).strip(chr(39))}'" if path else ""
        raise SpecError(f"YAML tag '{tag_text(node.tag)}'{on} is not allowed in a spec",
                        location=_at(smap, node),
                        hint="specs use plain values, lists and mappings only; remove the tag")
    if id(node) in budget.open:
        raise SpecError("a YAML alias refers to a value that contains it (an endless value)",
                        location=_at(smap, node), hint="an alias (*name) must refer to an "
                        "anchor (&name) that is complete before it")
    smap.positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
        budget.open.add(id(node))
        try:
            return _walk_collection(node, path, smap, budget)
        finally:
            budget.open.discard(id(node))
    try:
        return _construct(node)
    except ValueError:   # e.g. an integer past Python's 4300-digit conversion limit
        raise SpecError(f"the value {shown(node.value)} cannot be read as a number",
                        location=_at(smap, node),
                        hint="sizes are integers of at most 10 digits") from None


def _walk_collection(node, path: Path, smap: SourceMap, budget: _Budget):
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        seen: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise SpecError("YAML merge keys ('<<') are not supported in specs",
                                hint="write the keys out, or use a block with repeat:",
                                location=_at(smap, key_node))
            if not isinstance(key_node, yaml.ScalarNode):
                raise SpecError("a mapping key must be a plain value",
                                location=_at(smap, key_node))
            if key_node.tag not in ALLOWED_TAGS:
                raise SpecError(f"YAML tag '{tag_text(key_node.tag)}' is not allowed in a spec",
                                location=_at(smap, key_node),
                                hint="specs use plain values, lists and mappings only")
            key = _construct(key_node)
            if key in seen:
                first = seen[key]
                raise SpecError(
                    f"duplicate key {shown(key)} (first at line {first[0]}, column {first[1]})",
                    hint="YAML would silently keep only the last value; remove one of them",
                    location=Location(smap.file, key_node.start_mark.line + 1,
                                      key_node.start_mark.column + 1),
                    path=path + (key,))
            seen[key] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = _walk(value_node, path + (key,), smap, budget)
            # the key's own position is more useful than the value's for "unknown key" errors
            smap.positions[path + (key,)] = seen[key]
        return out
    return [_walk(item, path + (i,), smap, budget) for i, item in enumerate(node.value)]


def _check_nesting(text: str, file: str | None, loader) -> None:
    """Refuse nesting deeper than :data:`MAX_NESTING` and more than :data:`MAX_WRITTEN_VALUES`
    values from the parser's events (which PyYAML produces without recursion) before the
    recursive composer sees them."""
    depth = values = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.NodeEvent):        # a scalar, an alias or a collection start
            values += 1
            if values > MAX_WRITTEN_VALUES:
                mark = event.start_mark
                raise SpecError(f"the spec has more than {MAX_WRITTEN_VALUES:,} values",
                                location=Location(file, mark.line + 1, mark.column + 1),
                                hint="use blocks and repeat: for long, regular networks")
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > MAX_NESTING:
                mark = event.start_mark
                raise SpecError(f"the spec nests more than {MAX_NESTING} levels deep",
                                location=Location(file, mark.line + 1, mark.column + 1))
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1


def _compose(text: str, file: str | None) -> yaml.Node | None:
    """The YAML node tree of ``text`` (nesting checked first), by :data:`FAST_LOADER`; a
    syntax error in a small spec is raised by PyYAML's own parser, for its clearer message."""
    try:
        _check_nesting(text, file, FAST_LOADER)
        return yaml.compose(text, Loader=FAST_LOADER)
    except yaml.YAMLError:
        if FAST_LOADER is yaml.SafeLoader or len(text) >= REPARSE_ERRORS_BELOW:
            raise
    _check_nesting(text, file, yaml.SafeLoader)
    return yaml.compose(text, Loader=yaml.SafeLoader)


def parse_yaml(text: str, file: str | None = None) -> tuple[object, SourceMap]:
    """Parse spec text safely; return ``(data, source_map)``.

    Raises
    ------
    SpecError
        on a YAML syntax error (with its line and column) or a duplicate key.
    """
    smap = SourceMap(file=file)
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(f"the spec is {len(text):,} characters long; a spec may have at most "
                        f"{MAX_SPEC_BYTES:,}", location=Location(file),
                        hint="use blocks and repeat: for long, regular networks")
    try:
        node = _compose(text, file)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        context = f" ({err.context})" if err.context else ""
        if err.context_mark is not None and err.context and "flow" in err.context:
            # An unclosed [ or { is reported where the parser gave up (often the file's end);
            # where it was opened is the line to fix.
            mark = err.context_mark
            context += f", opened at line {mark.line + 1}, not closed"
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        problem = shown(err.problem, 200)[1:-1] if err.problem else shown(str(err), 200)
        raise SpecError(f"malformed YAML: {problem}{context}",
                        hint="check the indentation and the ':' after each key near this line",
                        location=loc) from None
    except yaml.YAMLError as err:
        raise SpecError(f"malformed YAML: {shown(str(err), 200)}", location=Location(file)
                        ) from None
    if node is None:
        return None, smap
    try:
        data = _walk(node, (), smap)
    except yaml.constructor.ConstructorError as err:
        mark = err.problem_mark
        raise SpecError(f"malformed YAML: {shown(err.problem, 200)}",
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
