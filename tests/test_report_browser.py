"""Reports opened in a real, headless Chromium (Debian's ``chromium`` package), driven over the
DevTools protocol (:mod:`cnncalc.report.browser`): the DOM after scripts holds every layer name
and the totals, the screenshot is not blank, sorting and the receptive-field picker change the
page, the console shows no errors and the page asks the network for nothing.

Skipped, saying why, when no Chromium is installed (``apt-get install -y chromium``, as .ci/run
does; or point ``CNNCALC_CHROMIUM`` at a binary).
"""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import cnncalc
from cnncalc.cli.app import app
from cnncalc.report.browser import Browser, find_chromium

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(find_chromium() is None,
                       reason="no Chromium installed (apt-get install -y chromium, or set "
                              "CNNCALC_CHROMIUM): the report's browser checks need one"),
]

SPECS = Path(__file__).resolve().parent.parent / "specs"
runner = CliRunner()


@pytest.fixture(scope="module")
def browser():
    with Browser() as b:
        yield b


@pytest.fixture(scope="module")
def reports(tmp_path_factory, trained_lenet):
    """SOURCE name → (report path, analysis) for the four specs and the trained checkpoint."""
    folder = tmp_path_factory.mktemp("reports")
    out = {}
    for name in ("lenet5", "alexnet", "resnet18", "inception_block"):
        path = folder / f"{name}.html"
        r = runner.invoke(app, ["report", str(SPECS / f"{name}.yaml"), "-o", str(path)])
        assert r.exit_code == 0, r.output
        out[name] = path
    out["lenet_checkpoint"] = trained_lenet / "report.html"
    return out


def _analysis(name):
    spec = SPECS / f"{name if name != 'lenet_checkpoint' else 'lenet5'}.yaml"
    return cnncalc.load(spec).analyze()


def _open(browser, path, **kw):
    browser.errors.clear()
    browser.requests.clear()
    browser.open(path, **kw)


@pytest.mark.parametrize("name", ["lenet5", "alexnet", "resnet18", "inception_block",
                                  "lenet_checkpoint"])
def test_page_renders_every_layer_and_the_totals(browser, reports, name, tmp_path):
    _open(browser, reports[name])
    assert browser.requests == [reports[name].resolve().as_uri()]  # nothing from the network
    a = _analysis(name)
    visible = browser.eval("document.body.innerText")
    for row in a["layers"]:
        assert row["name"] in visible, row["name"]
    assert f"{a['totals']['params']:,}" in visible and f"{a['totals']['macs']:,}" in visible
    drawn = browser.eval("Array.from(document.querySelectorAll('.arch-wide .cnn-arch text'))"
                         ".map(function(t){return t.textContent;})")
    assert "input" in drawn and any("×" in t for t in drawn)
    png = browser.screenshot(tmp_path / "shot.png").read_bytes()
    stats = browser.pixel_stats(png)
    assert stats["width"] == 1280 and stats["colors"] > 50 and stats["other"] > 0.05
    assert browser.errors == []
    if name == "lenet_checkpoint":
        assert "Training run" in visible and "confusion matrix" in browser.eval(
            "document.querySelector('#training').innerHTML")


def test_sorting_reorders_the_table(browser, reports):
    _open(browser, reports["alexnet"])
    first = "document.querySelector('#layer-table tbody tr').cells[1].textContent"
    assert browser.eval(first) == _analysis("alexnet")["layers"][0]["name"]
    header = "#layer-table th:nth-child(7) button"  # params
    browser.click(header)
    browser.click(header)  # second click: descending
    rows = _analysis("alexnet")["layers"]
    biggest = max(rows, key=lambda r: r["params"])["name"]
    assert browser.eval(first) == biggest
    assert browser.eval("document.querySelector('#layer-table th:nth-child(7)')"
                        ".getAttribute('aria-sort')") == "descending"
    params = browser.eval("Array.from(document.querySelectorAll('#layer-table tbody tr'))"
                          ".map(function(r){return +r.cells[6].getAttribute('data-v');})")
    assert params == sorted(params, reverse=True)
    assert browser.errors == []


def test_receptive_field_picker_changes_the_picture(browser, reports):
    _open(browser, reports["lenet5"])
    shown = ("Array.from(document.querySelectorAll('.rfgroup')).filter(function(g){"
             "return g.style.display!=='none';}).map(function(g){"
             "return g.getAttribute('data-layer');})")
    assert browser.eval(shown) == ["fc3"]
    assert browser.eval("document.getElementById('rf-size').textContent") == "32×32"
    # clicking conv1's volume in the drawing picks its last layer (relu1, folded into it)
    browser.click(".arch-wide g.node[data-layers='conv1 relu1'] rect.face")
    assert browser.eval(shown) == ["relu1"]
    assert browser.eval("document.getElementById('rf-size').textContent") == "5×5"
    assert browser.eval("document.getElementById('rf-start').textContent") == "0, 0"
    # its 5×5 field, centred on pixel 0, reaches 2 pixels into the padding: the filled
    # rectangle starts 2 pixel widths left of the input's edge
    x = browser.eval("(function(){var g=document.querySelector('.rfpic .input-area');"
                     "var f=document.querySelector('#rf-1 .rf');return [+g.getAttribute('x'),"
                     "+f.getAttribute('x'),+f.getAttribute('width')];})()")
    assert x[1] == pytest.approx(x[0] - 2 * x[2] / 5, abs=0.1)
    # the select itself
    browser.eval("(function(){var s=document.getElementById('rf-layer');s.value='pool1';"
                 "s.dispatchEvent(new Event('change'));})()")
    assert browser.eval(shown) == ["pool1"]
    assert browser.eval("document.getElementById('rf-stride').textContent") == "2×2"
    assert browser.errors == []


def test_narrow_and_dark(browser, reports, tmp_path):
    _open(browser, reports["resnet18"], width=800, dark=True)
    # the narrow drawing is shown, and nothing makes the page wider than the window
    assert browser.eval("getComputedStyle(document.querySelector('.arch-narrow')).display") \
        == "block"
    assert browser.eval("getComputedStyle(document.querySelector('.arch-wide')).display") \
        == "none"
    assert browser.eval("document.documentElement.scrollWidth") <= 800
    bg = browser.eval("getComputedStyle(document.body).backgroundColor")
    assert bg == "rgb(20, 24, 29)"
    stats = browser.pixel_stats(browser.screenshot(tmp_path / "dark.png").read_bytes())
    assert stats["width"] == 800 and stats["colors"] > 50
    _open(browser, reports["resnet18"], width=1280)
    assert browser.eval("getComputedStyle(document.body).backgroundColor") == "rgb(255, 255, 255)"
    assert browser.errors == []


def test_page_without_javascript_still_has_the_drawing_and_table(browser, reports):
    browser.call("Emulation.setScriptExecutionDisabled", {"value": True})
    try:
        _open(browser, reports["inception_block"])
        assert browser.eval("document.querySelectorAll('#layer-table tbody tr').length") == 14
        assert browser.eval("document.querySelectorAll('.arch-wide .cnn-arch .node').length") \
            == 9  # input, 7 branch volumes, the concat
    finally:
        browser.call("Emulation.setScriptExecutionDisabled", {"value": False})


def test_resnet50_stays_legible(browser, tmp_path):
    """Every label of the drawing is at least 10 px high, no two volume labels overlap, and the
    wrapped drawing fits a 1280 px window without scrolling sideways."""
    spec = Path(__file__).resolve().parent / "data" / "resnet50.yaml"
    assert cnncalc.load(spec).analyze()["totals"]["trainable_params"] == 25_557_032
    out = tmp_path / "r50.html"
    r = runner.invoke(app, ["report", str(spec), "-o", str(out)])
    assert r.exit_code == 0, r.output
    _open(browser, out)
    boxes = browser.eval(
        "Array.from(document.querySelectorAll('.arch-wide .node text')).map(function(t){"
        "var r=t.getBoundingClientRect();return [r.left,r.top,r.right,r.bottom];})")
    assert len(boxes) > 150
    assert min(b[3] - b[1] for b in boxes) >= 10
    boxes.sort()
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            if b[0] >= a[2]:
                break
            assert b[1] >= a[3] or a[1] >= b[3], (a, b)
    wide = browser.eval("(function(){var d=document.querySelector('.arch-wide');"
                        "return [d.scrollWidth,d.clientWidth];})()")
    assert wide[0] <= wide[1]
    assert browser.errors == []


def test_misaligned_merge_shows_its_warning_and_branch_fields(browser, tmp_path):
    spec = tmp_path / "misaligned.yaml"
    spec.write_text("name: misaligned\ninput: 16x16x1\nlayers:\n"
                    "  - conv: {name: a, filters: 2, size: 3, pad: 1}\n"
                    "  - conv: {name: b, from: input, filters: 2, size: 2}\n"
                    "  - zeropad: {padding: {top: 1, left: 1}}\n"
                    "  - add: {from: [a, pad1]}\n")
    out = tmp_path / "m.html"
    assert runner.invoke(app, ["report", str(spec), "-o", str(out)]).exit_code == 0
    _open(browser, out)
    assert "not aligned" in browser.eval("document.getElementById('rf-warn').textContent")
    assert browser.eval("document.querySelectorAll('#rf-3 .rf-branch').length") == 2
    browser.eval("(function(){var s=document.getElementById('rf-layer');s.value='a';"
                 "s.dispatchEvent(new Event('change'));})()")
    assert browser.eval("document.getElementById('rf-warn').textContent") == "none"
    assert browser.errors == []
