"""Receptive fields: the Araujo et al. recurrence against a direct dependency count."""
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import cnncalc


def support_of_output(unit: int, layers) -> tuple[int, int]:
    """Input indices (padding included, so possibly negative) that output `unit` depends on."""
    idx = {unit}
    for k, s, p, d in reversed(layers):
        idx = {o * s - p + j * d for o in idx for j in range(k)}
    return min(idx), max(idx)


layer_params = st.tuples(st.integers(1, 5), st.integers(1, 3), st.integers(0, 2),
                         st.integers(1, 2))


@settings(max_examples=60, deadline=None)
@given(st.lists(layer_params, min_size=1, max_size=5))
def test_rf_matches_dependency_count(layers):
    layers = [(k, s, min(p, (d * (k - 1) + 1) // 2), d) for k, s, p, d in layers]
    spec = {"input": "256x256x1", "layers": [
        {"conv": {"K": 1, "F": k, "S": s, "P": p, "dilation": d}} for k, s, p, d in layers]}
    try:
        node = cnncalc.load(spec).nodes[-1]
    except cnncalc.ShapeError:  # strides shrank the input below a kernel: not a valid net
        assume(False)
    lo, hi = support_of_output(0, layers)
    lo1, _ = support_of_output(1, layers)
    assert node.rf.size[0] == hi - lo + 1
    assert node.rf.start[0] == (lo + hi) / 2
    assert node.rf.stride[0] == lo1 - lo


def test_lecture_rf_of_stacked_3x3():
    # two 3x3 convs see 5x5, three see 7x7
    spec = {"input": "32x32x3", "layers": [{"conv": {"K": 4, "F": 3, "P": 1}}] * 3}
    g = cnncalc.load(spec)
    assert [n.rf.size[0] for n in g.nodes] == [3, 5, 7]


def test_merge_of_misaligned_branches_warns():
    spec = """
input: 16x16x1
layers:
  - conv: {name: a, filters: 2, size: 3, pad: 1}
  - conv: {name: b, from: input, filters: 2, size: 2}
  - zeropad: {padding: {top: 1, left: 1}}
  - add: {from: [a, pad1]}
"""
    g = cnncalc.load(spec)
    assert any("not aligned" in w for w in g.warnings)


def test_aligned_resnet_merges_do_not_warn(specs_dir):
    g = cnncalc.load(specs_dir / "resnet18.yaml")
    assert not any("not aligned" in w for w in g.warnings)


def test_rf_exceeds_input_flag(specs_dir):
    rows = cnncalc.load(specs_dir / "lenet5.yaml").analyze()["layers"]
    assert not rows[0]["rf_exceeds_input"]          # conv1 sees 5x5
    assert rows[3]["rf"]["size"] == [14, 14]        # conv2
    assert rows[-1]["rf_exceeds_input"]             # fc covers 32 > 28 (padding included)


def test_dilation_counts():
    g = cnncalc.load({"input": "32x32x1", "layers": [{"conv": {"K": 1, "F": 3, "dilation": 2}}]})
    assert g.nodes[0].rf.size == (5, 5)
