"""`cnncalc report`, `analyze --format svg`, `check --report` and `train --out`'s report.html,
without a browser (the browser checks are in test_report_browser.py).

Golden files: tests/golden/*.svg pin `cnncalc analyze SPEC --format svg` for two small specs.
After an intended change to the drawing, regenerate them with
``CNNCALC_UPDATE_GOLDEN=1 python -m pytest -q tests/test_report.py`` and review the diff.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cnncalc
from cnncalc.cli.app import app
from cnncalc.report import architecture_svg, render
from cnncalc.report.architecture import group_layers, window
from cnncalc.report.sources import from_spec
from cnncalc.report.svg import Scale

runner = CliRunner()
SPECS = Path(__file__).resolve().parent.parent / "specs"
GOLDEN = Path(__file__).resolve().parent / "golden"
REPORT_SPECS = ("lenet5", "alexnet", "resnet18", "inception_block")


def analysis(name: str, **kw) -> dict:
    return cnncalc.load(SPECS / f"{name}.yaml").analyze(**kw)


@pytest.mark.parametrize("name", ["lenet5", "inception_block"])
def test_svg_matches_golden(name):
    r = runner.invoke(app, ["analyze", str(SPECS / f"{name}.yaml"), "--format", "svg"])
    assert r.exit_code == 0, r.output
    golden = GOLDEN / f"{name}.svg"
    if os.environ.get("CNNCALC_UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(r.stdout, encoding="utf-8")
    assert r.stdout == golden.read_text(encoding="utf-8")


def test_lenet_is_drawn_as_the_lecture_draws_it():
    a = analysis("lenet5")
    nodes = group_layers(a)
    # ReLUs fold into the conv/fc before them; flatten and pools keep their own volume
    assert [n.key for n in nodes] == ["input", "relu1", "pool1", "relu2", "pool2", "flatten1",
                                      "relu3", "relu4", "fc3"]
    assert [m["name"] for m in nodes[1].members] == ["conv1", "relu1"]
    assert [n.is_vector for n in nodes] == [False] * 5 + [True] * 4
    svg = architecture_svg(a)
    # one box per volume (three faces) and a bar per vector, each labelled W×H×D as text
    assert svg.count('class="face"') == 5 and svg.count('class="barv"') == 4
    for label in ("28×28×1", "28×28×6", "14×14×6", "10×10×16", "5×5×16", "1×1×400",
                  "1×1×120", "1×1×84", "1×1×10"):
        assert f">{label}</text>" in svg
    # two conv windows and two pool windows on the input volumes
    assert svg.count('class="win-conv"') == 2 and svg.count('class="win-pool"') == 2
    assert "<path" in svg and "<image" not in svg


def test_windows_come_from_the_receptive_fields():
    rows = {r["name"]: r for r in analysis("resnet18")["layers"]}
    assert window(rows["conv1"], None) == ((7, 7), (2, 2))
    assert window(rows["maxpool"], rows["relu"]["rf"]) == ((3, 3), (2, 2))
    assert window(rows["layer2.0.downsample.0"], rows["layer1.1.relu2"]["rf"]) == ((1, 1), (2, 2))
    assert window(rows["relu"], rows["bn1"]["rf"]) is None


def test_branches_are_a_graph_with_shapes_on_the_edges():
    a = analysis("inception_block")
    nodes = group_layers(a)
    out = nodes[-1]
    assert out.key == "output" and out.inputs == ["b1_relu", "b2_relu2", "b3_relu2", "b4_relu"]
    svg = architecture_svg(a)
    assert svg.count('class="edge"') == 4 + 4 + 3  # out of input, into concat, in-branch
    edge_labels = re.findall(r'class="edgelabel"[^>]*>([^<]+)<', svg)
    assert sorted(edge_labels) == sorted(["28×28×192"] * 4 + ["28×28×64", "28×28×128",
                                                              "28×28×32", "28×28×32"])


def test_resnet50_sized_networks_wrap_into_lines():
    a = analysis("resnet18")
    wide = architecture_svg(a, 1200)
    narrow = architecture_svg(a, 740)
    width = lambda s: float(re.search(r'width="([\d.]+)"', s).group(1))  # noqa: E731
    height = lambda s: float(re.search(r'height="([\d.]+)"', s).group(1))  # noqa: E731
    assert width(wide) <= 1200 and width(narrow) <= 740
    assert height(narrow) > height(wide) > 600
    assert 'data-scale="log"' in wide  # 224 down to 7


def test_scale_is_log_only_across_orders_of_magnitude():
    lin = Scale([5, 28], 10, 100)
    assert not lin.log and lin(5) == 10 and lin(28) == 100
    log = Scale([7, 224], 10, 100)
    assert log.log and log(7) == 10 and log(224) == 100
    assert log(int((7 * 224) ** 0.5)) == pytest.approx(55, abs=1)


@pytest.mark.parametrize("name", REPORT_SPECS)
def test_report_holds_every_layer_and_the_totals(tmp_path, name):
    out = tmp_path / f"{name}.html"
    r = runner.invoke(app, ["report", str(SPECS / f"{name}.yaml"), "-o", str(out)])
    assert r.exit_code == 0, r.output
    html = out.read_text(encoding="utf-8")
    a = analysis(name, batch=1, optimizer="sgd")
    for row in a["layers"]:
        assert f"<td>{row['name']}</td>" in html
    assert f"{a['totals']['params']:,}" in html and f"{a['totals']['macs']:,}" in html
    # self-contained: no external script, style, image or font
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "@import" not in html and "url(http" not in html
    assert html.count("<svg") >= 5  # two drawings, RF picture, bars, memory


def test_training_memory_follows_the_spec_or_the_options(tmp_path):
    data = from_spec(SPECS / "lenet5.yaml")  # train: batch_size 64, optimizer momentum
    training = data.analysis["totals"]["training"]
    assert training["optimizer"] == "momentum" and data.analysis["totals"]["batch"] == 64
    out = tmp_path / "r.html"
    r = runner.invoke(app, ["report", str(SPECS / "lenet5.yaml"), "-o", str(out), "--batch",
                            "8", "--optimizer", "adam"])
    assert r.exit_code == 0, r.output
    expect = analysis("lenet5", batch=8, optimizer="adam")["totals"]["training"]["total_bytes"]
    from cnncalc.analysis import format_bytes
    assert f"<b>{format_bytes(expect)}</b>" in out.read_text(encoding="utf-8")


def test_buffers_are_shown_when_the_analysis_has_them():
    data = from_spec(SPECS / "resnet18.yaml")
    assert data.analysis["totals"]["buffers"] == 9600
    html = render(data)
    assert "<button type=\"button\">buffers</button>" in html
    assert "<b>9,600</b><span>buffers</span>" in html


def test_user_strings_are_escaped(tmp_path):
    spec = tmp_path / "evil.yaml"
    spec.write_text("name: '<script>alert(1)</script>'\ninput: 8x8x1\nlayers:\n"
                    "  - conv: {name: '<b>c</b>', filters: 2, size: 3}\n")
    out = tmp_path / "e.html"
    r = runner.invoke(app, ["report", str(spec), "-o", str(out)])
    assert r.exit_code == 0, r.output
    html = out.read_text(encoding="utf-8")
    assert "<script>alert" not in html and "<b>c</b>" not in html
    assert "&lt;b&gt;c&lt;/b&gt;" in html


def test_bad_sources_get_clear_errors(tmp_path):
    r = runner.invoke(app, ["report", str(tmp_path / "missing.npz")])
    assert r.exit_code == 2 and "checkpoint" in r.output and "does not exist" in r.output
    r = runner.invoke(app, ["report", str(tmp_path / "missing.yaml")])
    assert r.exit_code == 2 and "not found" in r.output
    (tmp_path / "taken").write_text("a file, not a folder")
    r = runner.invoke(app, ["report", str(SPECS / "lenet5.yaml"), "-o",
                            str(tmp_path / "taken" / "r.html")])
    assert r.exit_code == 2 and "cannot write the report" in r.output
    assert "Traceback" not in r.output


def test_check_report_has_the_marking_table_with_worked_formulas(tmp_path):
    answers = tmp_path / "a.yaml"
    answers.write_text("layers:\n  conv1: {output: 28x28x6, params: 150}\n"
                       "totals: {params: 61706}\n")
    out = tmp_path / "check.html"
    r = runner.invoke(app, ["check", str(SPECS / "lenet5.yaml"), str(answers), "--report",
                            str(out)])
    assert r.exit_code == 1  # one wrong claim; the report is written all the same
    html = out.read_text(encoding="utf-8")
    marking = html[html.index('id="marking"'):html.index('id="totals"')]
    assert "2/3" in marking and marking.count("✓ right") == 2 and "✗ wrong" in marking
    assert "<td>150</td><td>156</td>" in marking
    assert "<code>" in marking and "156" in marking[marking.index("<code>"):]


def test_train_out_writes_a_report_with_curves_and_confusion(trained_lenet):
    html = (trained_lenet / "report.html").read_text(encoding="utf-8")
    section = html[html.index('id="training"'):]
    for title in ("loss", "accuracy", "learning rate"):
        assert f'aria-label="{title}"' in section
    assert 'aria-label="confusion matrix"' in section
    assert "<td>optimizer</td><td>momentum</td>" in section
    assert "<td>epochs</td><td>2</td><td>set</td>" in section


def test_report_of_a_checkpoint_without_evaluation(tmp_path, trained_lenet):
    out = tmp_path / "ck.html"
    r = runner.invoke(app, ["report", str(trained_lenet / "last.npz"), "-o", str(out),
                            "--no-evaluate"])
    assert r.exit_code == 0, r.output
    html = out.read_text(encoding="utf-8")
    assert 'aria-label="loss"' in html and "confusion matrix" not in html
    assert "not evaluated" in html


def test_report_package_imports_no_numba():
    code = ("import sys, cnncalc.report, cnncalc.report.page, cnncalc.cli.report; "
            "print(any(m.split('.')[0] == 'numba' for m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent, check=True)
    assert res.stdout.strip() == "False"
