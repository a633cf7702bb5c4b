"""Warnings on canonical networks: under the default convention floor that drops only padding
(or only what a stride skips anyway) is no warning; lost input rows are one warning, with a
fix only when it keeps the output size; cs231n/--strict keep the lecture's integer rule."""
import pytest

import cnncalc
from cnncalc.errors import ShapeError
from cnncalc.homework.explain import explain

LECTURE_ONLY = {"lecture_7x7_stride3"}   # the lecture's deliberate non-integer example


def canonical_specs(specs_dir):
    return sorted(p for p in specs_dir.glob("*.yaml")
                  if not p.name.startswith("answers_") and p.stem not in LECTURE_ONLY)


#: true losses in canonical networks: SqueezeNet 1.0's unpadded 7x7/2 stem on 224 pixels
#: never sees the last row and column ((224 - 7)/2 + 1 = 109.5)
REAL_LOSSES = {"squeezenet1_0": "input rows and columns (223, 0-based) are never seen"}


def test_shipped_canonical_specs_have_no_warnings(specs_dir):
    for path in canonical_specs(specs_dir):
        warnings = cnncalc.load(path).analyze()["warnings"]
        if path.stem in REAL_LOSSES:
            (w,) = warnings
            assert REAL_LOSSES[path.stem] in w
        else:
            assert warnings == [], path.name


def test_resnet18_floor_is_explained_as_notes_not_warnings(specs_dir):
    g = cnncalc.load(specs_dir / "resnet18.yaml")
    assert g.warnings == []
    stem = explain(g, "conv1")["layers"][0]
    assert any("drops only padding" in n for n in stem["notes"])
    shortcut = explain(g, "layer2.0.downsample.0")["layers"][0]
    assert any("the stride skips anyway" in n for n in shortcut["notes"])


def test_lost_rows_warn_once_with_a_fix_that_keeps_the_output_size():
    g = cnncalc.load("input: 7x7x1\nlayers:\n  - conv: {K: 1, F: 3, S: 3}\n")
    (w,) = g.warnings
    assert "never seen" in w
    assert "use stride 4 or kernel 4 (each keeps output 2)" in w
    for fix in ({"K": 1, "F": 3, "S": 4}, {"K": 1, "F": 4, "S": 3}):
        fixed = cnncalc.load({"input": "7x7x1", "layers": [{"conv": fix}]})
        assert fixed.output_shape == g.output_shape and fixed.warnings == []


def test_no_fix_is_offered_when_none_keeps_the_output_size():
    # a 3-wide (dilated 2x2) window at stride 2 on 8 rows: output 3, row 7 never seen; no
    # stride divides the span 5 into 2 steps, no padding is both even and non-negative, and a
    # dilated kernel's size is not offered
    g = cnncalc.load("input: 8x8x1\nlayers:\n  - conv: {K: 1, F: 2, S: 2, dilation: 2}\n")
    (w,) = g.warnings
    assert "never seen" in w and "use" not in w
    g = cnncalc.load("input: 8x8x1\nlayers:\n  - conv: {K: 1, F: 2, S: 3, dilation: 2}\n")
    assert g.warnings[0].endswith("use stride 5 (keeps output 2)")


def test_ceil_mode_covers_every_row_and_does_not_warn():
    g = cnncalc.load("input: 112x112x3\nlayers:\n  - maxpool: {F: 3, S: 2, ceil_mode: true}\n")
    assert g.output_shape == (3, 56, 56) and g.warnings == []


@pytest.mark.parametrize("how", [{"strict": True}, {"convention": "cs231n"}])
def test_strict_keeps_the_lecture_rule_on_resnet18(specs_dir, how):
    with pytest.raises(ShapeError, match="not an integer"):
        cnncalc.load(specs_dir / "resnet18.yaml", **how)


def test_buffers_have_their_own_line_under_the_table(specs_dir):
    from typer.testing import CliRunner

    from cnncalc.cli.app import app

    out = CliRunner().invoke(app, ["analyze", str(specs_dir / "resnet18.yaml")]).output
    assert "params: 11,689,512\n" in out and "buffers: 9,600 (batchnorm running" in out
    out = CliRunner().invoke(app, ["analyze", str(specs_dir / "lenet5.yaml")]).output
    assert "buffers:" not in out
    csv_text = CliRunner().invoke(app, ["analyze", str(specs_dir / "resnet18.yaml"),
                                        "-f", "csv"]).output
    header, *_, total = csv_text.splitlines()
    assert header.split(",")[9] == "buffers"
    assert total.split(",")[6:10] == ["11689512", "", "", "9600"]
