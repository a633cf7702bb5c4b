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
