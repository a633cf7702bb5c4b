"""`cnncalc layer` and `cnncalc explain`: the lecture's numbers, and every worked formula ends
with the rule's own value (no second copy of a formula)."""
import json
import re

import pytest
from typer.testing import CliRunner

import cnncalc
from cnncalc.cli import app
from cnncalc.homework.calc import layer_calc
from cnncalc.homework.explain import explain

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def last_value(text: str) -> str:
    """The result a worked formula states: what follows its last '=' (and any '→')."""
    tail = text.rsplit("=", 1)[1].split("→")[-1]
    return tail.split("(")[0].strip().replace(",", "")


# ---- lecture examples ------------------------------------------------------------------------

def test_lecture_conv_32x32x3():
    res = run("layer", "conv", "--input", "32x32x3", "--filters", 10, "--size", 5,
              "--stride", 1, "--pad", 2)
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "32x32x10" in out
    assert "(32 - 5 + 2·2)/1 + 1 = 32" in out
    assert "5·5·3 + 1 = 76" in out
    assert "= 760" in out


def test_lecture_letters_and_json():
    res = run("layer", "conv", "-i", "32x32x3", "-K", 10, "-F", 5, "-S", 1, "-P", 2,
              "--format", "json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["output"] == "32x32x10"
    assert (d["params"], d["weights"], d["biases"]) == (760, 750, 10)
    assert d["macs"] == 32 * 32 * 10 * 5 * 5 * 3
    per = [s for s in d["steps"] if s["symbol"] == "per filter"][0]
    assert per["value"] == 76 and per["worked"].startswith("5·5·3 + 1")


@pytest.mark.parametrize("size,stride,pad,out", [(3, 1, 0, 5), (3, 2, 0, 3), (3, 1, 1, 7)])
def test_lecture_7x7(size, stride, pad, out):
    d = layer_calc("conv", "7x7x1", {"K": 1, "F": size, "S": stride, "P": pad})
    assert d["output"] == f"{out}x{out}x1"


def test_strict_7x7_stride3_exits_2():
    res = run("layer", "conv", "--input", "7x7x1", "--filters", 1, "--size", 3, "--stride", 3,
              "--strict")
    assert res.exit_code == 2
    assert "(7 - 3 + 2·0)/3 + 1 = 2.33" in res.stderr
    assert "Traceback" not in res.output


def test_non_integer_floor_is_shown():
    d = layer_calc("conv", "7x7x1", {"K": 1, "F": 3, "S": 3})
    w = [s for s in d["steps"] if s["symbol"].startswith("W2")][0]
    assert w["worked"] == "(7 - 3 + 2·0)/3 + 1 = 2.33 → 2 (floor)"
    assert d["warnings"]


def test_pool_and_fc():
    d = layer_calc("pool", "32x32x10", {"size": 2, "stride": 2})
    assert d["output"] == "16x16x10" and d["params"] == 0
    d = layer_calc("fc", "5x5x16", {"units": 120})
    assert d["output"] == "1x1x120" and d["params"] == 48120 and d["macs"] == 48000
    res = run("layer", "fc", "-i", "400", "-N", 10)
    assert res.exit_code == 0 and "4,010" in res.stdout


def test_conventions_in_layer():
    # Caffe pools with ceil; darknet's conv pad=1 means floor(F/2); its maxpool pad is total
    assert layer_calc("pool", "7x7x1", {"size": 2})["output"] == "3x3x1"
    assert layer_calc("pool", "7x7x1", {"size": 2}, convention="caffe")["output"] == "4x4x1"
    d = layer_calc("conv", "13x13x3", {"K": 4, "F": 5, "P": 1}, convention="darknet")
    assert d["output"] == "13x13x4" and any("floor(F/2)" in n for n in d["notes"])
    d = layer_calc("pool", "13x13x4", {"size": 2, "stride": 1}, convention="darknet")
    assert d["output"] == "13x13x4"


@pytest.mark.parametrize("args", [
    ["layer", "conv", "-i", "32x32x3", "-F", 5],            # no filters
    ["layer", "pool", "-i", "32x32x3", "-K", 3, "-F", 2],   # pool takes no filters
    ["layer", "conv", "-i", "3x3x1", "-K", 1, "-F", 5],     # kernel larger than input
    ["layer", "conw", "-i", "3x3x1"],                       # unknown kind
    ["layer", "conv", "-i", "3xx3", "-K", 1, "-F", 1],      # malformed input
])
def test_layer_bad_input_exits_2(args):
    res = run(*args)
    assert res.exit_code == 2, res.output
    assert "error" in res.stderr and "Traceback" not in res.output


# ---- explain -----------------------------------------------------------------------------------

SPECS = ["lenet5.yaml", "alexnet.yaml", "vgg16.yaml", "resnet18.yaml", "cifar_bn.yaml",
         "inception_block.yaml", "lecture_7x7_stride2.yaml"]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("convention", ["pytorch", "caffe", "darknet"])
def test_worked_text_states_the_rules_value(specs_dir, spec, convention):
    try:
        graph = cnncalc.load(specs_dir / spec, convention=convention)
    except cnncalc.ShapeError:
        pytest.skip(f"{spec} does not build under {convention} (its maxpool padding differs)")
    report = explain(graph)
    rows = {r["name"]: r for r in graph.analyze()["layers"]}
    for layer in report["layers"]:
        row = rows[layer["name"]]
        for s in layer["steps"]:
            assert last_value(s["text"]) == str(s["value"]), s["text"]
            if s["symbol"] == "params":
                assert s["value"] == row["params"]
            if s["symbol"] == "MACs":
                assert s["value"] == row["macs"]
            if s["symbol"] == "volume":
                o = row["output"]
                assert s["value"] == f"{o['width']}x{o['height']}x{o['depth']}"
            if s["symbol"] in ("W2", "W2 = H2"):
                assert s["value"] == row["output"]["width"]
            if s["symbol"] == "H2":
                assert s["value"] == row["output"]["height"]
            if s["symbol"] in ("r", "r_h"):
                assert s["value"] == row["rf"]["size"][0]
            if s["symbol"] in ("r", "r_w"):
                assert s["value"] == row["rf"]["size"][1]
            if s["symbol"] in ("j", "j_h"):
                assert s["value"] == row["rf"]["stride"][0]
    totals = {s["symbol"]: s for s in report["totals"]}
    t = graph.analyze()["totals"]
    assert totals["total params"]["value"] == t["trainable_params"]
    assert totals["total MACs"]["value"] == t["macs"]
    for s in report["totals"]:
        assert last_value(s["text"]) == str(s["value"])


def test_explain_lenet_text_and_markdown(specs_dir):
    res = run("explain", specs_dir / "lenet5.yaml", "--layer", "conv2")
    assert res.exit_code == 0, res.output
    assert "(14 - 5 + 2·0)/1 + 1 = 10" in res.stdout
    assert "(5·5·6)·16 + 16 = 151·16 = 2,416" in res.stdout
    assert "10·10·16·(5·5·6) = 240,000" in res.stdout
    assert "6 + (5 - 1)·2 = 14" in res.stdout
    res = run("explain", specs_dir / "lenet5.yaml", "--format", "markdown")
    assert res.exit_code == 0
    assert "### 1. conv1" in res.stdout and "`total params = " in res.stdout
    assert "61,706`" in res.stdout


def test_explain_json_and_bad_layer(specs_dir):
    res = run("explain", specs_dir / "lenet5.yaml", "-f", "json", "-l", "4")
    d = json.loads(res.stdout)
    assert [l["name"] for l in d["layers"]] == ["conv2"]
    res = run("explain", specs_dir / "lenet5.yaml", "-l", "conv9")
    assert res.exit_code == 2 and "conv9" in res.stderr


def test_explain_strict_and_dilation():
    graph = cnncalc.load({"input": "9x9x2", "layers": [
        {"conv": {"K": 4, "F": 3, "dilation": 2, "groups": 2, "bias": False}}]})
    (layer,) = explain(graph)["layers"]
    texts = [s["text"] for s in layer["steps"]]
    assert "F_eff = d·(F - 1) + 1 = 2·(3 - 1) + 1 = 5" in texts
    assert any(t.endswith("(3·3·(2/2))·4 = 36") for t in texts)
    assert re.search(r"\(9 - 5 \+ 2·0\)/1 \+ 1 = 5$", "\n".join(texts), re.MULTILINE)
