"""`cnncalc conv`: the lecture's two examples verbatim, properties against a direct double sum,
and bad matrices."""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cnncalc.cli import app
from cnncalc.homework.conv2d import conv2d, parse_matrix, rotate180

runner = CliRunner()

A = "1,3,1; 0,-1,1; 2,2,-1"
B = "1,2; 0,-1"
IMAGE = [[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0]]
KERNEL = [[1, 0, 1], [0, 1, 0], [1, 0, 1]]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def full_reference(a, b):
    """(A ∗ B)ᵢⱼ = Σₛ Σₜ Aₛₜ B₍ᵢ₋ₛ,ⱼ₋ₜ₎, the lecture's definition, summed directly."""
    m, n = len(a), len(a[0])
    p, q = len(b), len(b[0])
    out = [[0] * (n + q - 1) for _ in range(m + p - 1)]
    for i in range(m + p - 1):
        for j in range(n + q - 1):
            out[i][j] = sum(a[s][t] * b[i - s][j - t] for s in range(m) for t in range(n)
                            if 0 <= i - s < p and 0 <= j - t < q)
    return out


def test_lecture_example_1_full_convolution():
    r = conv2d(A, B)
    assert r["operation"] == "convolution" and r["flipped"]
    assert r["output"] == [[1, 5, 7, 2], [0, -2, -4, 1], [2, 6, 4, -3], [0, -2, -2, 1]]
    assert r["output"] == full_reference(parse_matrix(A)[0], parse_matrix(B)[0])


def test_lecture_example_1_cli_steps():
    res = run("conv", A, B, "--steps")
    assert res.exit_code == 0, res.output
    assert "convolution (kernel rotated 180°)" in res.stdout
    assert "out[0,1] = 0·(-1) + 0·0 + 1·2 + 3·1 = 5" in res.stdout
    assert "   1  5  7  2" in res.stdout


def test_lecture_example_2_convolved_feature():
    for correlate in (False, True):
        r = conv2d(IMAGE, KERNEL, mode="valid", correlate=correlate, steps=True)
        assert r["output"] == [[4, 3, 4], [2, 4, 3], [2, 3, 4]]
        assert r["output"][0][0] == 4
        first = r["steps"][0]
        assert first["terms"] == [[1, 1], [1, 0], [1, 1], [0, 0], [1, 1], [1, 0], [0, 1],
                                  [0, 0], [1, 1]]
    res = run("conv", "; ".join(",".join(map(str, r)) for r in IMAGE), "1,0,1;0,1,0;1,0,1",
              "--mode", "valid", "--correlate", "--format", "json")
    d = json.loads(res.stdout)
    assert d["operation"] == "cross-correlation" and d["output"][0][0] == 4


def test_modes_stride_pad_and_depth():
    img = IMAGE
    assert conv2d(img, KERNEL, mode="same")["output_shape"] == [5, 5]
    assert conv2d(img, KERNEL, mode="valid", stride=2)["output"] == [[4, 4], [2, 4]]
    assert conv2d(img, KERNEL, mode="valid", pad=1)["output_shape"] == [5, 5]
    # a depth-2 input with one 2-deep filter: the slices' correlations add up
    r = conv2d("1,2;3,4 | 5,6;7,8", "1 | 2", mode="valid", correlate=True)
    assert r["output"] == [[11, 14], [17, 20]]
    assert r["input_shape"] == [2, 2, 2] and r["kernel_shape"] == [2, 1, 1]


def test_matrix_notations_and_file(tmp_path):
    assert parse_matrix("[[1, 2], [3, 4]]") == [[[1, 2], [3, 4]]]
    assert parse_matrix("1 2\n3 4") == [[[1, 2], [3, 4]]]
    assert parse_matrix("0.5, 1/4") == [[[0.5, __import__("fractions").Fraction(1, 4)]]]
    f = tmp_path / "a.txt"
    f.write_text("1 3 1\n0 -1 1\n2 2 -1\n")
    assert run("conv", f, B, "-f", "json").exit_code == 0
    deep = tmp_path / "deep.txt"
    deep.write_text("1 2\n3 4\n\n5 6\n7 8\n")
    assert parse_matrix(str(deep)) == [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]


@pytest.mark.parametrize("a,b,extra,needle", [
    ("1,2;3", "1", [], "ragged"),
    ("1,x;3,4", "1", [], "not a number"),
    ("1,2;3,4", "1,2,3;4,5,6;7,8,9", ["--mode", "valid"], "larger than the input"),
    ("1,2;3,4 | 1,1;1,1", "1", [], "depth"),
    ("1,2;3,4", "1", ["--mode", "same", "--pad", "1"], "contradicts"),
    ("", "1", [], "empty"),
    ("1,2;3,4 | 1;2", "1 | 1", [], "differ in size"),
])
def test_bad_matrices_exit_2(a, b, extra, needle):
    res = run("conv", a, b, *extra)
    assert res.exit_code == 2, res.output
    assert needle in res.stderr and "Traceback" not in res.output


def test_bad_stride_exits_2():
    assert run("conv", "1,2;3,4", "1", "--stride", 0).exit_code == 2


matrices = st.integers(1, 5).flatmap(lambda h: st.integers(1, 5).flatmap(
    lambda w: st.lists(st.lists(st.integers(-9, 9), min_size=w, max_size=w),
                       min_size=h, max_size=h)))


@settings(max_examples=80, deadline=None)
@given(matrices, matrices)
def test_full_convolution_equals_double_sum(a, b):
    assert conv2d(a, b, mode="full")["output"] == full_reference(a, b)


@settings(max_examples=80, deadline=None)
@given(matrices, matrices, st.sampled_from(["full", "valid", "same"]), st.integers(1, 3))
def test_correlation_is_convolution_with_rotated_kernel(a, b, mode, stride):
    if mode == "valid" and (len(b) > len(a) or len(b[0]) > len(a[0])):
        return
    corr = conv2d(a, b, mode=mode, stride=stride, correlate=True)["output"]
    conv = conv2d(a, rotate180(b), mode=mode, stride=stride)["output"]
    assert corr == conv


@settings(max_examples=50, deadline=None)
@given(matrices, matrices)
def test_full_convolution_commutes(a, b):
    assert conv2d(a, b)["output"] == conv2d(b, a)["output"]
