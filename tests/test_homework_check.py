"""`cnncalc check`: right and wrong answers files, notations, exit codes 0/1/2."""
import json

import pytest
from typer.testing import CliRunner

from cnncalc.cli import app
from cnncalc.homework.check import check, parse_count, parse_rf, parse_volume

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("v", [760, "760", 7.6e2, "7.6e2", "7.6e+2", "760.0", " 760 ", "0.76k"])
def test_count_notations(v):
    assert parse_count(v) == 760


def test_count_thousands_and_rejects():
    assert parse_count("61,706") == 61706
    assert parse_count("61 706") == 61706
    assert parse_count("416.52k") == 416520
    assert parse_count(2.5) == 2.5
    for bad in ("lots", None, True, [1], "1,2,3,4"):
        with pytest.raises(ValueError):
            parse_count(bad)


@pytest.mark.parametrize("v", ["32x32x10", "32 x 32 x 10", "32×32×10", [32, 32, 10],
                               "[32, 32, 10]", "(32,32,10)",
                               {"width": 32, "height": 32, "depth": 10}])
def test_volume_notations(v):
    assert parse_volume(v) == (32, 32, 10)


def test_rf_notations():
    assert parse_rf(5) == {"size": (5, 5), "stride": None}
    assert parse_rf([14, 2]) == {"size": (14, 14), "stride": (2, 2)}
    assert parse_rf("[14, 2]") == {"size": (14, 14), "stride": (2, 2)}
    assert parse_rf({"size": 14, "stride": 2}) == {"size": (14, 14), "stride": (2, 2)}


def test_shipped_answers_all_right(specs_dir):
    res = run("check", specs_dir / "lenet5.yaml", specs_dir / "answers_lenet5.yaml")
    assert res.exit_code == 0, res.output
    assert "score: 20/20" in res.stdout and "wrong" not in res.stdout


WRONG = """\
layers:
  conv1: {output: 32x32x6, params: 150, rf: 5}
  pool1: {rf: [6, 1]}
  conv2: {macs: "2.4e5"}
totals: {params: "61,706", macs: 7.6e2}
"""


def test_wrong_answers_exit_1_with_worked_formula(specs_dir, tmp_path):
    ans = tmp_path / "answers.yaml"
    ans.write_text(WRONG)
    res = run("check", specs_dir / "lenet5.yaml", ans)
    assert res.exit_code == 1, res.output
    out = res.stdout
    assert "score: 3/7" in out
    assert "conv1 output: 32x32x6  → correct: 28x28x6" in out
    assert "(28 - 5 + 2·2)/1 + 1 = 28" in out
    assert "(5·5·1)·6 + 6 = 26·6 = 156" in out
    assert "1·2 = 2" in out                      # pool1's jump
    assert "= 416,520" in out

    res = run("check", specs_dir / "lenet5.yaml", ans, "--format", "json")
    assert res.exit_code == 1
    d = json.loads(res.stdout)
    assert (d["right"], d["total"], d["all_right"]) == (3, 7, False)
    by = {(r["layer"], r["quantity"]): r for r in d["results"]}
    assert by[("conv1", "params")]["correct"] == 156 and not by[("conv1", "params")]["ok"]
    assert by[("conv2", "macs")]["ok"] and by[("totals", "params")]["ok"]
    assert by[("totals", "macs")]["correct"] == 416520
    assert by[("conv1", "rf")]["worked"] == []

    res = run("check", specs_dir / "lenet5.yaml", ans, "--format", "markdown")
    assert res.exit_code == 1 and "**Score: 3/7**" in res.stdout


def test_convention_from_answers_file_and_flag(specs_dir):
    spec = {"input": "7x7x1", "layers": [{"maxpool": {"size": 2}}]}
    caffe = {"convention": "caffe", "layers": {"pool1": {"output": "4x4x1"}}}
    assert check(spec, caffe)["all_right"]
    assert not check(spec, {"layers": {"pool1": {"output": "4x4x1"}}})["all_right"]
    assert check(spec, {"layers": {"pool1": {"output": "4x4x1"}}},
                 convention="caffe")["all_right"]


@pytest.mark.parametrize("text,needle", [
    ("layers:\n  conv9: {params: 3}\n", "no layer 'conv9'"),
    ("layers:\n  conv1: {parms: 3}\n", "unknown claim 'parms'"),
    ("layers:\n  conv1: {params: lots}\n", "expected a number"),
    ("layers:\n  conv1: {output: 28x28}\n", "expected a volume"),
    ("layer:\n  conv1: {params: 3}\n", "unknown key 'layer'"),
    ("totals: {bananas: 3}\n", "unknown claim 'bananas'"),
    ("layers: [1, 2]\n", "must map layer names"),
    ("layers:\n  conv1: {params: 3\n", "malformed YAML"),
    ("{}\n", "claims nothing"),
    ("convention: keras\nlayers:\n  conv1: {params: 156}\n", "unknown convention"),
])
def test_bad_answers_exit_2(specs_dir, tmp_path, text, needle):
    ans = tmp_path / "answers.yaml"
    ans.write_text(text)
    res = run("check", specs_dir / "lenet5.yaml", ans)
    assert res.exit_code == 2, res.output
    assert needle in res.stderr and "Traceback" not in res.output


def test_missing_files_exit_2(specs_dir, tmp_path):
    assert run("check", specs_dir / "lenet5.yaml", tmp_path / "nope.yaml").exit_code == 2
    assert run("check", tmp_path / "nope.yaml", specs_dir / "answers_lenet5.yaml").exit_code == 2


def test_layer_by_index_and_strict(specs_dir):
    assert check(specs_dir / "lenet5.yaml", {"layers": {4: {"params": 2416}}})["all_right"]
    res = run("check", specs_dir / "lecture_7x7_stride3.yaml", specs_dir / "answers_lenet5.yaml",
              "--strict")
    assert res.exit_code == 2 and "2.33" in res.stderr


def test_shipped_lecture_answers(specs_dir):
    res = run("check", specs_dir / "lecture_conv_32x32x3.yaml",
              specs_dir / "answers_lecture_conv.yaml", "--strict", "-f", "json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["score"] == "7/7" and d["convention"] == "cs231n"
