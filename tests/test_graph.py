"""Graph structure: layer forms, default names, branches, blocks."""
import cnncalc


def test_layer_forms_and_default_names():
    g = cnncalc.load("""
input: {width: 28, height: 28, channels: 1}
layers:
  - conv: {filters: 6, size: 5}
  - relu
  - type: maxpool
    size: 2
  - {type: conv, name: mine, K: 2, F: 3}
  - conv: {filters: 4, size: 1}
  - flatten
  - fc: {units: 10}
  - dense: {outputs: 10}
""")
    assert [n.name for n in g.nodes] == ["conv1", "relu1", "pool1", "mine", "conv2", "flatten1",
                                         "fc1", "fc2"]
    assert g.node("pool1").out_shape == (6, 12, 12)


def test_branches_and_concat():
    g = cnncalc.load("""
input: 8x8x4
layers:
  - conv: {name: a, filters: 2, size: 1}
  - conv: {name: b, from: input, filters: 3, size: 3, pad: 1}
  - concat: {from: [a, b, input]}
""")
    assert g.output_shape == (9, 8, 8)
    assert g.nodes[-1].inputs == ["a", "b", "input"]


def test_repeat_block_with_parameters():
    g = cnncalc.load("""
input: 16x16x3
blocks:
  unit:
    params: {width: 8}
    layers:
      - conv: {filters: $width, size: 3, pad: 1}
      - relu
layers:
  - {block: unit, name: s1, repeat: 2}
  - {block: unit, name: s2, with: {width: 4}}
""")
    assert [n.name for n in g.nodes] == ["s1.0.conv1", "s1.0.relu1", "s1.1.conv1", "s1.1.relu1",
                                         "s2.conv1", "s2.relu1"]
    assert g.node("s1.1.conv1").in_shape == (8, 16, 16)
    assert g.output_shape == (4, 16, 16)


def test_from_input_inside_block_is_block_input():
    g = cnncalc.load("""
input: 8x8x4
blocks:
  res:
    - conv: {name: c, filters: 4, size: 3, pad: 1}
    - add: {name: sum, from: [c, input]}
layers:
  - conv: {name: stem, filters: 4, size: 1}
  - {block: res, name: r, repeat: 2}
""")
    assert g.node("r.0.sum").inputs == ["r.0.c", "stem"]
    assert g.node("r.1.sum").inputs == ["r.1.c", "r.0.sum"]


def test_inline_repeat():
    g = cnncalc.load("input: 8x8x1\nlayers:\n  - repeat: 3\n    layers: [relu]\n")
    assert len(g) == 3


def test_param_and_total_consistency(specs_dir):
    from cnncalc.layers.base import prod
    g = cnncalc.load(specs_dir / "resnet18.yaml")
    t = g.analyze()["totals"]
    assert sum(prod(s) for s in g.param_shapes().values()) == t["trainable_params"]


def _chain_spec(n: int) -> str:
    """``n`` relus, each naming the one before it in ``from:`` (a lookup per layer)."""
    lines = ["input: 8x8x2", "layers:", "  - relu: {name: r0}"]
    lines += [f"  - relu: {{name: r{i}, from: r{i - 1}}}" for i in range(1, n)]
    return "\n".join(lines) + "\n"


def _lines_executed_in_cnncalc(fn) -> int:
    """How many lines of cnncalc's own Python code ``fn()`` executes (a count, not a time)."""
    import sys

    count = 0

    def tracer(frame, event, arg):
        nonlocal count
        if "cnncalc" in frame.f_code.co_filename:
            count += 1
            return tracer
        return None

    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(None)
    return count


def test_building_is_linear_in_the_number_of_layers():
    # A scan of the nodes per lookup makes 4x the layers cost ~16x the work (measured: ~9x at
    # these sizes, where the per-layer work still weighs); building by dict lookups costs 4x.
    small, large = (_chain_spec(n) for n in (200, 800))
    work = [_lines_executed_in_cnncalc(lambda t=t: cnncalc.load(t)) for t in (small, large)]
    assert work[1] / work[0] < 5


def test_build_graph_from_entries_and_its_guards():
    import pytest

    from cnncalc.conventions import get_convention
    from cnncalc.errors import SpecError
    from cnncalc.graph import LayerEntry, build_graph
    from cnncalc.layers import LAYERS
    from cnncalc.layers.base import Shape

    conv = LAYERS.get("conv")(out_channels=4, kernel_size=(3, 3), stride=(1, 1),
                              padding=((1, 1), (1, 1)))
    relu = LAYERS.get("relu")()
    add = LAYERS.get("add")()
    g = build_graph([LayerEntry("c", conv, ["input"]), LayerEntry("r", relu, ["c"]),
                     LayerEntry("sum", add, ["r", "c"])],
                    name="n", input_shape=Shape(2, 8, 8), convention=get_convention(None))
    assert [n.name for n in g] == ["c", "r", "sum"] and g.output_shape == (4, 8, 8)
    assert g.node("sum").inputs == ["r", "c"] and g.node("r").rf.size == (3, 3)
    with pytest.raises(SpecError, match="taken"):
        g.connect(LayerEntry("r", relu, ["sum"]))
    with pytest.raises(SpecError, match="not earlier layers"):
        g.connect(LayerEntry("r2", relu, ["nope"]))
    with pytest.raises(KeyError):
        g.node("nope")


def test_node_lookup_follows_a_trimmed_node_list():
    import pytest

    g = cnncalc.load("input: 8x8x1\nlayers: [relu, relu, relu]\n")
    g.nodes.pop()
    assert g.node("relu2").index == 2
    with pytest.raises(KeyError):
        g.node("relu3")


def test_graph_module_does_not_import_the_spec_language():
    # data flows spec -> graph: the spec builds graphs by calling graph.py, never the reverse
    import ast
    from pathlib import Path

    import cnncalc.graph

    tree = ast.parse(Path(cnncalc.graph.__file__).read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m and m.startswith("cnncalc.spec") for m in imported)
