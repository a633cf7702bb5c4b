"""Receptive fields through merges: per axis, the union of the branches' windows."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import cnncalc
from cnncalc.receptive_field import RField, merge_fields

SYMMETRIC = """name: sym
input: 31x31x1
layers:
  - conv: {name: wide, from: input, filters: 1, kernel_size: [1, 15], padding: [0, 7]}
  - conv: {name: tall, from: input, filters: 1, kernel_size: [15, 1], padding: [7, 0]}
  - conv: {name: small, from: input, filters: 1, kernel_size: [9, 1], padding: [4, 0]}
  - concat: {name: cat, from: [wide, small, tall]}
"""


def test_a_symmetric_network_has_a_symmetric_field():
    rows = {r["name"]: r for r in cnncalc.load(SYMMETRIC).analyze()["layers"]}
    assert rows["wide"]["rf"]["size"] == [1, 15] and rows["tall"]["rf"]["size"] == [15, 1]
    # chosen by area, the merge kept one branch (1x15); the union of the windows is 15x15
    assert rows["cat"]["rf"] == {"size": [15, 15], "stride": [1, 1], "start": [0, 0]}
    assert not rows["cat"]["warnings"]


def test_misaligned_centres_widen_the_union_and_warn():
    a = RField((3, 3), (1, 1), (0.0, 0.0))   # covers [-1, 1]
    b = RField((3, 3), (1, 1), (2.0, 0.0))   # covers [1, 3] on the first axis
    merged, aligned = merge_fields([a, b])
    assert merged == RField((5, 3), (1, 1), (1.0, 0.0)) and not aligned


@given(st.lists(st.tuples(st.integers(1, 50), st.integers(-20, 20)), min_size=1, max_size=4))
def test_union_contains_every_branch_window_and_equals_the_largest_when_centred(windows):
    # a real field's first pixel is a whole pixel: its centre is first + (size - 1)/2
    branches = [(n, first + (n - 1) / 2) for n, first in windows]
    fields = [RField((n, n), (2, 2), (c, c)) for n, c in branches]
    merged, aligned = merge_fields(fields)
    lo = merged.start[0] - (merged.size[0] - 1) / 2
    hi = merged.start[0] + (merged.size[0] - 1) / 2
    for n, c in branches:
        assert lo <= c - (n - 1) / 2 and c + (n - 1) / 2 <= hi
    assert lo == min(c - (n - 1) / 2 for n, c in branches)  # and no wider than needed
    if len({c for _, c in branches}) == 1:
        assert merged.size[0] == max(n for n, _ in branches) and aligned


@pytest.mark.parametrize("spec", ["inception_block.yaml", "resnet18.yaml"])
def test_shipped_branching_specs_have_symmetric_fields(specs_dir, spec):
    for row in cnncalc.load(specs_dir / spec).analyze()["layers"]:
        rf = row["rf"]
        assert rf["size"][0] == rf["size"][1] and rf["start"][0] == rf["start"][1], row["name"]


@pytest.mark.parametrize("spec", ["inception_v3.yaml", "inception_v4.yaml", "googlenet.yaml",
                                  "densenet121.yaml", "mobilenet_v2.yaml"])
def test_every_merge_of_a_symmetric_network_is_symmetric(specs_dir, spec):
    # inside a branch a 1x7 conv has a 1x7-shaped field; where the branches meet, the union
    # of their windows is square again
    merges = [row for row in cnncalc.load(specs_dir / spec).analyze()["layers"]
              if row["type"] in ("concat", "add")]
    assert merges
    for row in merges:
        rf = row["rf"]
        assert rf["size"][0] == rf["size"][1] and rf["start"][0] == rf["start"][1], row["name"]


def test_explain_shows_the_merge_union_with_numbers(specs_dir):
    from cnncalc.homework.explain import explain

    g = cnncalc.load(specs_dir / "inception_block.yaml")
    (layer,) = explain(g, "output")["layers"]
    (step,) = [s for s in layer["steps"] if s["symbol"] == "r_merge"]
    assert step["value"] == 5
    assert step["worked"] == ("b1_relu [0, 0] ∪ b2_relu2 [-1, 1] ∪ b3_relu2 [-2, 2] ∪ "
                              "b4_relu [-1, 1] = [-2, 2]: 2 - (-2) + 1 = 5")
    assert any("union of the branches' windows" in n for n in layer["notes"])
