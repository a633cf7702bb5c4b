"""What a trained network learned: ``cnncalc lab filters`` and ``cnncalc lab activation-maps``.

Checked on LeNet-5 trained for one epoch on real MNIST (a 3,000-image subset, marker ``mnist``)
and on synthetic data (always run).
"""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from conftest import SPECS, mnist_dir
from typer.testing import CliRunner

import cnncalc
import cnncalc.train
from cnncalc.cli.app import app
from cnncalc.errors import CnnCalcError


def _train(tmp_path, data: str) -> str:
    r = cnncalc.train.run(str(SPECS / "lenet5_mnist.yaml"),
                          {"data": data, "epochs": 1, "warmup": 0}, out_dir=tmp_path / "run")
    return r.checkpoint


@pytest.fixture(scope="module")
def mnist_checkpoint(tmp_path_factory):
    d = mnist_dir()
    if d is None:
        pytest.skip("real MNIST not found (set CNNCALC_MNIST_DIR)")
    from cnncalc.train.data import load_mnist

    ds = load_mnist(d, download=False)
    tmp = tmp_path_factory.mktemp("mnist_viz")
    subset = tmp / "mnist_subset.npz"
    np.savez(subset, x=ds.x_train[:3000], y=ds.y_train[:3000], x_test=ds.x_test[:500],
             y_test=ds.y_test[:500])
    return _train(tmp, f"npz:{subset}")


@pytest.fixture(scope="module")
def synthetic_checkpoint(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("synthetic_viz"), "synthetic:400")


def _images(tmp_path, ckpt) -> str:
    """The checkpoint's first four test images as one .npy of raw (N, 1, 28, 28) images."""
    from cnncalc.labs.filters import sample_test_images
    from cnncalc.train.evaluate import load_model

    path = tmp_path / "images.npy"
    np.save(path, sample_test_images(load_model(ckpt), 4).raw)
    return str(path)


def _png_size(path) -> tuple[int, int]:
    """(width, height) from the PNG header."""
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


# ------------------------------------------------------------------------------ engine
def test_activations_equal_forward_intermediates():
    """``Network.activations`` gives the values the forward pass computes: the output equals
    ``forward`` (the fast path) and each intermediate equals the output of the network cut
    right after that layer."""
    from cnncalc.engine import Network
    from cnncalc.graph import Graph

    graph = cnncalc.load(str(SPECS / "lenet5_mnist.yaml"))
    net = Network(graph, seed=3)
    assert net.fast_path is not None                      # intermediates never exist there
    x = np.random.default_rng(7).standard_normal((3, 1, 28, 28)).astype(np.float32)
    acts = net.activations(x)
    assert list(acts) == [n.name for n in graph.nodes]
    np.testing.assert_allclose(acts["fc3"].reshape(3, 10), net.forward(x, training=False),
                               rtol=1e-5, atol=1e-5)
    for i, node in enumerate(graph.nodes[:6]):
        cut = Network(Graph(name="cut", input_shape=graph.input_shape,
                            nodes=graph.nodes[:i + 1], convention=graph.convention), fuse=False)
        cut.load_state_dict(net.state_dict(), strict=False)
        np.testing.assert_array_equal(acts[node.name], cut.forward(x, training=False))
    unfused = Network(graph, seed=3, fuse=False)
    np.testing.assert_array_equal(unfused.activations(x, ["fc3"])["fc3"].reshape(3, 10),
                                  unfused.forward(x, training=False))
    assert acts["conv1"].shape == (3, 6, 28, 28) and acts["pool2"].shape == (3, 16, 5, 5)
    with pytest.raises(CnnCalcError, match="no layer named 'conv9'"):
        net.activations(x, ["conv9"])


# ------------------------------------------------------------------------------ library
def _check_lab(ckpt, tmp_path, *, trained_on_mnist: bool):
    from cnncalc.labs import activation_maps, filters
    from cnncalc.train.evaluate import load_model

    model = load_model(ckpt)
    f = filters.run(ckpt, model=model, sample=100)
    assert f.layer == "conv1" and f.shape == [6, 1, 5, 5] and f.relu == "relu1"
    w = model.net.params["conv1.weight"]
    for row in f.rows:
        assert row.norm == pytest.approx(float(np.linalg.norm(w[row.index])), rel=1e-6)
        assert row.mean == pytest.approx(float(w[row.index].mean()), abs=1e-7)
        assert row.dead == (row.max_response <= 0)
    assert f.sample == 100 and f.dead_share == np.mean([r.dead for r in f.rows])
    # trained filters differ from each other: far from all alike, no two the same
    flat = w.reshape(6, -1) / np.linalg.norm(w.reshape(6, -1), axis=1, keepdims=True)
    cos = np.abs(flat @ flat.T)[np.triu_indices(6, 1)]
    assert f.mean_abs_cosine == pytest.approx(float(cos.mean()), rel=1e-6)
    assert f.mean_abs_cosine < 0.6 and cos.max() < 0.95
    tiles = f.tiles
    assert tiles.shape == (6, 1, 5, 5) and tiles.min() == 0.0 and tiles.max() == 1.0
    for t in tiles:                                       # each filter normalised on its own
        assert t.min() == 0.0 and t.max() == 1.0
    assert filters.run(ckpt, "conv2", model=model, sample=0).tiles.shape == (16, 6, 5, 5)
    assert filters.run(ckpt, "conv2", model=model, sample=0, mean=True).tiles.shape == \
        (16, 1, 5, 5)

    images = _images(tmp_path, ckpt)
    a = activation_maps.run(ckpt, f"{images}[2]", ["conv1", "pool1", "conv2"], unit="conv2:5@3,4",
                            top_k=4, sample=100, model=model)
    assert [m.label for m in a.layers] == ["conv1: 28x28x6", "pool1: 14x14x6", "conv2: 10x10x16"]
    x = model.prepare(np.load(images)[2:3])
    ref = model.net.activations(x, ["conv1", "pool1", "conv2"])
    for m in a.layers:
        np.testing.assert_array_equal(m.maps, ref[m.layer][0])
    # the receptive field matches cnncalc analyze's rf of conv2: 14x14, stride 2, start 4.5
    rf = {r["name"]: r["rf"] for r in cnncalc.load(model.checkpoint.spec_text).analyze()["layers"]}
    u = a.unit
    assert (u.layer, u.channel, u.row, u.col) == ("conv2", 5, 3, 4)
    assert u.size == rf["conv2"]["size"] == [14, 14] and u.start == rf["conv2"]["start"]
    assert u.centre == [4.5 + 3 * 2, 4.5 + 4 * 2]
    assert u.box == [4.0, 6.0, 17.0, 19.0]               # centre +- 6.5: 14 pixels a side
    assert u.box[2] - u.box[0] + 1 == 14 and not u.exceeds_input
    assert u.value == pytest.approx(float(ref["conv2"][0, 5, 3, 4]))
    origin = activation_maps.field_box(rf["conv2"], 0, 0, (28, 28))
    assert origin[0] == [4.5, 4.5] and origin[1] == [-2.0, -2.0, 11.0, 11.0] and origin[2]
    # top-k: sorted, each the max of the unit's channel over the image
    assert len(a.top) == 4 and a.data.startswith("npz:" if trained_on_mnist else "synthetic")
    values = [t.value for t in a.top]
    assert values == sorted(values, reverse=True)
    from cnncalc.labs.filters import sample_test_images

    ts = sample_test_images(model, 100)
    best = model.net.activations(ts.x[[t.index for t in a.top]], ["conv2"])["conv2"][:, 5]
    for t, b in zip(a.top, best):
        assert t.value == pytest.approx(float(b.max()))
        assert b[t.row, t.col] == b.max()
        assert t.box == activation_maps.field_box(rf["conv2"], t.row, t.col, (28, 28))[1]
    return f, a


def _check_pictures(ckpt, tmp_path):
    """The pictures: written, pinned by their pixel size (1-inch tiles at 100 dpi + a title
    band). Needs matplotlib (the plot extra)."""
    pytest.importorskip("matplotlib")
    from cnncalc.labs import activation_maps, filters, plotting
    from cnncalc.train.evaluate import load_model

    model = load_model(ckpt)
    p1 = plotting.filters(filters.run(ckpt, model=model, sample=0), tmp_path / "filters.png")
    assert _png_size(p1) == plotting.grid_pixels(1, 6) == (600, 150)
    p2 = plotting.filters(filters.run(ckpt, "conv2", model=model, sample=0), tmp_path / "f2.png")
    assert _png_size(p2) == plotting.grid_pixels(16, 6) == (600, 1650)
    a = activation_maps.run(ckpt, f"{_images(tmp_path, ckpt)}[2]", ["conv1", "pool1", "conv2"],
                            unit="conv2:5@3,4", top_k=4, sample=100, model=model)
    p3 = plotting.activation_maps(a, tmp_path / "maps.png")
    assert plotting.activation_maps_grid(a) == (1 + 1 + 1 + 2, 8)
    assert _png_size(p3) == plotting.grid_pixels(5, 8) == (800, 550)


@pytest.mark.mnist
def test_filters_and_maps_of_lenet_trained_on_mnist(mnist_checkpoint, tmp_path):
    f, a = _check_lab(mnist_checkpoint, tmp_path, trained_on_mnist=True)
    assert f.data.startswith("npz:") and f.sample == 100


def test_filters_and_maps_of_lenet_trained_on_synthetic_data(synthetic_checkpoint, tmp_path):
    _check_lab(synthetic_checkpoint, tmp_path, trained_on_mnist=False)


def test_pictures_of_filters_and_maps(synthetic_checkpoint, tmp_path):
    _check_pictures(synthetic_checkpoint, tmp_path)


# ------------------------------------------------------------------------------ CLI
def test_cli_filters_and_maps(synthetic_checkpoint, tmp_path):
    run = CliRunner().invoke
    r = run(app, ["lab", "filters", synthetic_checkpoint, "--sample", "50", "-f", "json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["layer"] == "conv1" and len(d["rows"]) == 6 and "weights" not in d
    r = run(app, ["lab", "filters", synthetic_checkpoint, "--layer", "conv2", "--mean",
                  "--sample", "0"])
    assert r.exit_code == 0, r.output
    # the table's title carries the checkpoint's path, so it wraps where that path is long
    assert "conv2, 16 filters of 5x5x6" in " ".join(r.stdout.split())
    images = _images(tmp_path, synthetic_checkpoint)
    r = run(app, ["lab", "activation-maps", synthetic_checkpoint, "--image", f"{images}[1]",
                  "--sample", "50"])
    assert r.exit_code == 0, r.output
    assert "conv1: 28x28x6" in r.stdout and "pool2: 5x5x16" in r.stdout
    r = run(app, ["lab", "activation-maps", synthetic_checkpoint, "--image", f"{images}[0]",
                  "--layers", "conv1", "--unit", "conv1:2@0,0", "--top-k", "2", "--sample",
                  "20", "-f", "json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["unit"]["box"] == [-2, -2, 2, 2] and d["unit"]["exceeds_input"] is True
    assert len(d["top"]) == 2 and "image" not in d["top"][0] and "maps" not in d["layers"][0]


def test_cli_plots(synthetic_checkpoint, tmp_path):
    pytest.importorskip("matplotlib")
    run = CliRunner().invoke
    r = run(app, ["lab", "filters", synthetic_checkpoint, "--layer", "conv2", "--mean",
                  "--sample", "0", "--plot", str(tmp_path / "f.png")])
    assert r.exit_code == 0, r.output
    assert _png_size(tmp_path / "f.png") == (800, 250)    # 16 channel means, 8 a row
    images = _images(tmp_path, synthetic_checkpoint)
    r = run(app, ["lab", "activation-maps", synthetic_checkpoint, "--image", f"{images}[1]",
                  "--sample", "50", "--plot", str(tmp_path / "m.png")])
    assert r.exit_code == 0, r.output
    assert _png_size(tmp_path / "m.png") == (800, 1050)   # input row + 1+1+1+2+2+2 map rows


def test_cli_png_image(synthetic_checkpoint, tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image

    png = tmp_path / "digit.png"
    Image.fromarray((np.load(_images(tmp_path, synthetic_checkpoint))[0, 0] * 255)
                    .astype(np.uint8)).save(png)
    r = CliRunner().invoke(app, ["lab", "activation-maps", synthetic_checkpoint, "--image",
                                 str(png), "--top-k", "0", "-f", "json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["image"] == str(png)


@pytest.mark.parametrize("args, message", [
    (["filters", "{ckpt}", "--layer", "fc1"], "no conv layer named 'fc1'"),
    (["activation-maps", "{ckpt}", "--image", "{images}"], "holds 4 images; choose one"),
    (["activation-maps", "{ckpt}", "--image", "{images}[9]"], "index 9 is out of range"),
    (["activation-maps", "{ckpt}", "--image", "{images}[0]", "--unit", "conv1:6"],
     "outside conv1's output 28x28x6"),
    (["activation-maps", "{ckpt}", "--image", "{images}[0]", "--unit", "conv1:x"],
     "LAYER[:CHANNEL[@ROW,COL]]"),
    (["activation-maps", "{ckpt}", "--image", "{images}[0]", "--layers", "conv7"],
     "no layer named 'conv7'"),
])
def test_cli_errors(synthetic_checkpoint, tmp_path, args, message):
    images = _images(tmp_path, synthetic_checkpoint)
    args = [a.format(ckpt=synthetic_checkpoint, images=images) for a in args]
    r = CliRunner().invoke(app, ["lab", *args])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output


# ------------------------------------------------------------------------------ report
def test_checkpoint_report_shows_the_filters(synthetic_checkpoint, tmp_path):
    import re

    from cnncalc.labs.filters import filter_tiles
    from cnncalc.report import write_checkpoint_report, write_report
    from cnncalc.train.checkpoint import load_checkpoint

    out = write_checkpoint_report(synthetic_checkpoint, tmp_path / "r.html", evaluate=False)
    html = out.read_text(encoding="utf-8")
    section = html[html.index('<section id="filters">'):]
    section = section[:section.index("</section>")]
    assert "conv1: 6 filters 5x5x1 (grey)" in section
    assert "conv2: 16 filters 5x5x6 (channel mean)" in section
    assert section.count('<g class="filter">') == 6 + 16
    fills = re.findall(r'fill="#([0-9a-f]{2})\1\1"', section)
    assert len(fills) == (6 + 16) * 25                     # one square per weight
    w = load_checkpoint(synthetic_checkpoint).params["conv1.weight"]
    want = [f"{round(255 * v):02x}" for v in filter_tiles(w, colour=False, mean=False).ravel()]
    assert fills[:150] == want
    assert 'href="#filters"' in html
    assert "<img" not in section and "url(" not in section  # self-contained: SVG only
    spec_html = write_report(str(SPECS / "lenet5.yaml"), tmp_path / "s.html").read_text()
    assert 'id="filters"' not in spec_html                # a spec has no trained filters


def test_first_layer_on_rgb_input_is_shown_in_colour(tmp_path):
    from cnncalc.labs import filters, plotting

    spec = ("name: rgb\ninput: 12x12x3\ntrain: {data: 'synthetic:40', epochs: 1, warmup: 0}\n"
            "layers:\n  - conv: {filters: 4, size: 3}\n  - relu\n  - maxpool: {size: 2}\n"
            "  - flatten\n  - fc: {units: 10}\n")
    ckpt = cnncalc.train.run(spec, out_dir=tmp_path / "run").checkpoint
    f = filters.run(ckpt, sample=10)
    assert f.colour and f.shape == [4, 3, 3, 3] and f.sample == 10
    tiles = f.tiles
    assert tiles.shape == (4, 1, 3, 3, 3)                 # K, 1, FH, FW, RGB
    w = np.asarray(f.weights)
    np.testing.assert_allclose(tiles[1, 0, :, :, 2], (w[1, 2] - w[1].min()) / np.ptp(w[1]))
    if importlib.util.find_spec("matplotlib"):           # the picture needs the plot extra
        assert _png_size(plotting.filters(f, tmp_path / "rgb.png")) == (400, 150)
    grey = filters.run(ckpt, sample=0, mean=True)
    assert not grey.colour and grey.tiles.shape == (4, 1, 3, 3)
