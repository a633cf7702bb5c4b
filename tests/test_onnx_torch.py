"""Models built in PyTorch (tests/torch_models.py: LeNet, ResNet, SqueezeNet, MobileNet v2 and
AlexNet families, and torchvision's full-size models), exported by torch.onnx, analyse to
PyTorch's parameter counts and the hand-worked (or published) MACs, and their imported weights
compute what PyTorch computes."""
from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

import torch_models  # noqa: E402

from cnncalc.onnx.importer import import_model  # noqa: E402
from cnncalc.onnx.torch_import import import_torch  # noqa: E402
from cnncalc.spec import load  # noqa: E402

pytestmark = [pytest.mark.onnx, pytest.mark.torch]

MODELS = sorted(torch_models.INPUTS)


def exported(name: str, fold: bool = False, module=None):
    """``name``'s module and its ONNX export (the TorchScript exporter, which runs offline)
    with a symbolic batch; ``fold``: let the exporter fold eval-mode BN into the convs."""
    module = (module if module is not None else getattr(torch_models, name)()).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, torch.zeros(1, *torch_models.INPUTS[name]), buffer,
                          dynamo=False, do_constant_folding=fold, input_names=["x"],
                          dynamic_axes={"x": {0: "N"}})
    return module, onnx.load_from_string(buffer.getvalue())


def learnable(graph) -> int:
    return sum(math.prod(shape) for shape in graph.param_shapes().values())


@pytest.mark.parametrize("name", MODELS)
def test_torch_export_analyzes_to_torch_params_and_hand_macs(name):
    module, model = exported(name)
    result = import_model(model)
    graph = load(result.spec_text)
    assert learnable(graph) == sum(p.numel() for p in module.parameters())
    assert graph.analyze()["totals"]["macs"] == torch_models.MACS[name]
    assert result.notes == []


@pytest.mark.parametrize("name", sorted(torch_models.TORCHVISION))
def test_torchvision_models_analyze_to_their_published_counts(name):
    """ResNet-18, VGG-16, AlexNet, SqueezeNet 1.0 (concat) and MobileNet v2 (depthwise, ReLU6,
    BN) at 224x224: torch.onnx's export and the torch.fx import both give torchvision's
    parameter count and GFLOPS (MACs) to the published digits."""
    factory, params, gmacs = torch_models.TORCHVISION[name]
    module = factory().eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, torch.zeros(1, 3, 224, 224), buffer, dynamo=False,
                          do_constant_folding=False)
    result = import_model(onnx.load_from_string(buffer.getvalue()))
    del buffer
    assert result.notes == []
    fx = import_torch(f"torch_models:{factory.__name__}", "224x224x3")
    for graph in (load(result.spec_text), load(fx.spec_text)):
        totals = graph.analyze()["totals"]
        assert totals["params"] == params == sum(p.numel() for p in module.parameters())
        assert f"{totals['macs'] / 1e9:.{len(gmacs.split('.')[1])}f}" == gmacs


@pytest.mark.parametrize("name", MODELS)
def test_imported_weights_compute_what_torch_computes(name):
    """Pads, ceil mode, count_include_pad, BN statistics and Gemm layout all carried over."""
    from cnncalc.engine.network import Network

    module = getattr(torch_models, name)().eval()
    with torch.no_grad():  # BN statistics away from 0 and 1, so that they matter
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    _, model = exported(name, module=module)
    result = import_model(model)
    net = Network(load(result.spec_text), parallel=False)
    net.load_state_dict({**result.params, **result.buffers})
    x = np.random.default_rng(0).normal(size=(2, *torch_models.INPUTS[name])).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(net.forward(x, training=False), expected, rtol=1e-4, atol=1e-5)


def test_bn_folded_by_the_exporter_is_imported_as_is_and_said():
    module, model = exported("mobilenet_v2", fold=True)
    result = import_model(model)
    graph = load(result.spec_text)
    assert not any(n.kind == "batchnorm" for n in graph.nodes)
    assert any("folded" in note for note in result.notes)
    assert "batch norm appears folded" in result.spec_text        # a comment in the spec
    # 4 BN (γ, β) pairs gone: 2·(8 + 32 + 32 + 8); 4 conv biases come: 8 + 32 + 32 + 8
    assert learnable(graph) == sum(p.numel() for p in module.parameters()) - 160 + 80
    assert graph.analyze()["totals"]["macs"] == torch_models.MACS["mobilenet_v2"]


def test_lenet_spec_is_readable():
    _, model = exported("lenet")
    text = import_model(model).spec_text
    assert "from:" not in text                      # a chain: no from anywhere
    assert "conv: {name: conv1, out_channels: 6, kernel_size: 5, padding: 2}" in text
    assert "flatten: {name: flatten1}" in text      # x.view(N, -1)


def test_squeezenet_uses_from_only_where_it_branches():
    _, model = exported("squeezenet")
    text = import_model(model).spec_text
    lines = [line for line in text.splitlines() if "from:" in line]
    # the 3x3 expand reads the squeeze output, not the 1x1 branch before it; concat merges
    assert len(lines) == 2
    assert "concat" in lines[1]


@pytest.mark.parametrize("name", MODELS)
def test_torch_fx_import_counts_like_torch(name):
    """``cnncalc import --torch``: the traced structure gives PyTorch's parameter count and the
    hand-worked MACs, with module paths as layer names."""
    from typer.testing import CliRunner

    from cnncalc.cli.app import app

    c, h, w = torch_models.INPUTS[name]
    module = getattr(torch_models, name)()
    result = CliRunner().invoke(app, ["import", "--torch", f"torch_models:{name}",
                                      "--input", f"{w}x{h}x{c}"])
    assert result.exit_code == 0, result.output
    graph = load(result.stdout)
    assert learnable(graph) == sum(p.numel() for p in module.parameters())
    assert graph.analyze()["totals"]["macs"] == torch_models.MACS[name]
    onnx_names = [n.name for n in load(import_model(exported(name)[1]).spec_text).nodes]
    conv_names = [n.name for n in graph.nodes if n.kind == "conv"]
    assert conv_names == [n for n in onnx_names if n in conv_names]


class Branchy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        if x.sum() > 0:          # data-dependent: fx cannot trace it
            return self.conv(x)
        return x


def branchy():
    return Branchy()


def test_torch_data_dependent_control_flow_is_a_clear_error():
    from typer.testing import CliRunner

    from cnncalc.cli.app import app

    result = CliRunner().invoke(app, ["import", "--torch", f"{__name__}:branchy",
                                      "--input", "8x8x3"])
    assert result.exit_code == 2
    assert "cannot be traced" in result.output and "control flow" in result.output


def test_a_module_called_twice_shares_and_survives_a_round_trip():
    """torch.onnx writes a module called twice as one initializer read by two nodes: imported
    as share:, PyTorch's count; exported again and imported, the same analysis."""
    from cnncalc.onnx.export import export_graph
    from cnncalc.onnx.importer import import_model as again

    module, model = exported("twice")
    result = import_model(model)
    graph = load(result.spec_text)
    assert [(n.name, n.shares) for n in graph.nodes if n.shares] == [
        ("conv_1", "conv"), ("hidden_1", "hidden")]
    assert "share: conv" in result.spec_text
    back = load(again(export_graph(graph, {**result.params, **result.buffers})).spec_text)
    assert back.analyze()["layers"] == graph.analyze()["layers"]
    fx = load(import_torch("torch_models:twice", "8x8x3").spec_text)
    assert [(n.name, n.shares) for n in fx.nodes if n.shares] == [
        ("conv_1", "conv"), ("hidden_1", "hidden")]


class Tied(torch.nn.Module):
    """Tied weights, separate biases: a.weight is b.weight."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(8, 8)
        self.b = torch.nn.Linear(8, 8)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.b(self.a(torch.flatten(x, 1)))


def tied():
    return Tied()


def test_a_tied_weight_with_its_own_bias_shares_only_the_weight():
    """torch.onnx reads the tied weight's one initializer in both Gemms: b shares a's weight
    and keeps its bias (share: {weight: a}), and the count is PyTorch's; torch.fx agrees."""
    module = Tied().eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, torch.zeros(1, 2, 2, 2), buffer, dynamo=False)
    result = import_model(onnx.load_from_string(buffer.getvalue()))
    assert "share: {weight: a}" in result.spec_text and result.notes == []
    assert sorted(result.params) == ["a.bias", "a.weight", "b.bias"]
    fx = import_torch(f"{__name__}:tied", "2x2x2")
    assert "share: {weight: a}" in fx.spec_text and fx.notes == []
    for text in (result.spec_text, fx.spec_text):
        assert load(text).analyze()["totals"]["params"] \
            == sum(p.numel() for p in module.parameters()) == 80
