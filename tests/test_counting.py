"""Other tools' counting conventions (`analyze --counts-like`) and the training cost."""
import json

import pytest
from typer.testing import CliRunner

import cnncalc
from cnncalc.cli.app import app
from cnncalc.counting import COUNTERS, count_like, other_tools

LENET = """
input: 32x32x1
layers:
  - conv: {filters: 6, size: 5}
  - batchnorm
  - relu
  - maxpool: {size: 2}
  - flatten
  - fc: {units: 10}
"""


def lenet_rows():
    return cnncalc.load(LENET).analyze()


def test_every_counter_has_a_one_line_description():
    for entry in COUNTERS:
        assert entry.help and "\n" not in entry.help


def test_conventions_by_hand():
    report = lenet_rows()
    conv_macs = 28 * 28 * 6 * 25            # 117,600
    fc_macs = 6 * 14 * 14 * 10              # 11,760
    conv_out = 6 * 28 * 28
    assert report["totals"]["macs"] == conv_macs + fc_macs
    # torchinfo: conv params · positions, bn's γ β, fc's params; times the batch
    assert count_like(report, "torchinfo", batch=4).ops == \
        4 * (156 * 28 * 28 + 12 + (1176 * 10 + 10))
    # fvcore: MACs and batchnorm with γ β 2 per element; relu and max pooling skipped
    assert count_like(report, "fvcore", batch=4).ops == 4 * (conv_macs + fc_macs + 2 * conv_out)
    # ptflops: bias adds; batchnorm 2; relu and the pool counted twice (hook and functional)
    assert count_like(report, "ptflops").ops == \
        conv_macs + conv_out + 2 * conv_out + 2 * conv_out + 2 * conv_out + fc_macs + 10
    # thop: batchnorm with γ β 4 per element; relu and max pooling 0
    assert count_like(report, "thop").ops == conv_macs + fc_macs + 4 * conv_out


def test_resnet18_as_the_tools_print_it(specs_dir):
    # the real tools on ResNet-18 (torchinfo 1.8.0, ptflops 0.7.5, thop 0.1.1, fvcore 0.1.5;
    # tests/test_counting_tools.py reruns them when installed): "Total mult-adds (G): 1.81",
    # "1.83 GMac", 1.82 G and 1.82 G
    report = cnncalc.load(specs_dir / "resnet18.yaml").analyze()
    ops = {tool: count_like(report, tool).ops for tool in ("torchinfo", "ptflops", "thop",
                                                           "fvcore")}
    assert ops == {"torchinfo": 1_814_083_944, "ptflops": 1_825_313_768,
                   "thop": 1_824_033_792, "fvcore": 1_819_065_856}
    assert {count_like(report, t).params for t in ("torchinfo", "ptflops", "thop", "fvcore")} \
        == {11_689_512}


def test_footer_names_only_tools_that_differ(specs_dir):
    report = cnncalc.load(specs_dir / "resnet18.yaml").analyze()
    assert set(other_tools(report)) == {"torchinfo", "ptflops", "thop", "fvcore"}
    lenet = cnncalc.load(specs_dir / "lenet5.yaml").analyze()
    assert set(other_tools(lenet)) == {"torchinfo", "ptflops"}   # no batchnorm: the MACs
    res = CliRunner().invoke(app, ["analyze", str(specs_dir / "resnet18.yaml")])
    assert res.exit_code == 0
    assert "other tools would say: torchinfo 1.81 G" in res.output


def test_footer_unit_fits_the_count(tmp_path):
    """A small network's footer is in K (it read "0.00 M"), a mid-sized one's in M."""
    from cnncalc.cli.render import short_count

    assert [short_count(n) for n in (920, 421_642, 1_814_083_944)] == \
        ["0.92 K", "0.42 M", "1.81 G"]
    tiny = ("input: 8x8x1\nlayers:\n  - conv: {filters: 2, size: 3}\n  - flatten\n"
            "  - fc: {units: 3}\n")
    (tmp_path / "tiny.yaml").write_text(tiny)
    res = CliRunner().invoke(app, ["analyze", str(tmp_path / "tiny.yaml")])
    assert res.exit_code == 0, res.output
    footer = [ln for ln in res.output.splitlines() if ln.startswith("other tools would say")]
    assert footer and " K " in footer[0] and "0.00" not in footer[0]


@pytest.mark.parametrize("tool", COUNTERS.names())
def test_counts_like_cli(specs_dir, tool):
    res = CliRunner().invoke(app, ["analyze", str(specs_dir / "lenet5.yaml"), "--counts-like",
                                   tool, "-f", "json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["tool"] == tool and data["counts"] == COUNTERS.lookup(tool).help
    report = cnncalc.load(specs_dir / "lenet5.yaml").analyze()
    assert data["ops"] == count_like(report, tool).ops


def test_unknown_counter_is_a_usage_error(specs_dir):
    res = CliRunner().invoke(app, ["analyze", str(specs_dir / "lenet5.yaml"), "--counts-like",
                                   "flopsy"])
    assert res.exit_code == 2 and "Traceback" not in res.output


def test_training_macs_forward_plus_dx_plus_dw():
    report = cnncalc.load(LENET).analyze(batch=8)
    t = report["totals"]["train_macs"]
    conv_macs, fc_macs = 117_600, 11_760
    # the first conv reads the network input: no dX; the fc needs dX and dW
    assert t == {"forward": conv_macs + fc_macs, "backward_input": fc_macs,
                 "backward_weights": conv_macs + fc_macs,
                 "per_example": 2 * (conv_macs + fc_macs) + fc_macs,
                 "per_step": 8 * (2 * (conv_macs + fc_macs) + fc_macs)}


def test_frozen_layers_need_no_weight_gradient():
    frozen = LENET.replace("{filters: 6, size: 5}", "{filters: 6, size: 5, trainable: false}")
    t = cnncalc.load(frozen).analyze()["totals"]["train_macs"]
    assert t["backward_weights"] == 11_760


def test_readme_counting_tools_table_is_the_generated_one():
    from pathlib import Path

    from cnncalc.counting import counters_table

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert counters_table() in readme
    for entry in COUNTERS:
        if entry.name != "cnncalc":
            assert entry.extra["version"].startswith(entry.name)
