"""The real counting tools pin `analyze --counts-like`: each shipped spec, built as torchvision
would write it in PyTorch (tests/torch_graph.py), goes through torchinfo, thop, ptflops and
fvcore, and what they report must be what cnncalc says they would.

torchinfo and thop read only shapes, so they run on the meta device (no memory, no time) over
every shipped spec. ptflops' patched functionals and fvcore's JIT trace need real tensors, so
they run on the CPU over the smaller specs. Each tool is optional (``cnncalc[counters]``)."""
from __future__ import annotations

import contextlib
import io
import warnings

import pytest

torch = pytest.importorskip("torch")

import cnncalc  # noqa: E402
from cnncalc.counting import COUNTERS, count_like  # noqa: E402

import torch_graph  # noqa: E402  (needs torch)

#: every activation, pool and batchnorm form the tools treat differently, on a small input:
#: frozen layers, non-affine batchnorm, padded average pooling without the padding in the
#: divisor, adaptive pooling with unequal bins (thop's fractional window) and a softmax
ZOO = """
name: zoo
input: 15x15x3
layers:
  - conv: {filters: 6, size: 3, pad: 1, trainable: false}
  - batchnorm: {affine: false}
  - leaky_relu
  - elu
  - prelu: {per_channel: true}
  - sigmoid
  - tanh
  - mish
  - swish
  - hardswish
  - hardsigmoid
  - relu6
  - avgpool: {size: 3, stride: 2, pad: 1, count_include_pad: false}
  - conv: {name: a, filters: 4, size: 1, bias: false}
  - conv: {name: b, from: avgpool1, filters: 4, size: 3, pad: 1}
  - add: {from: [a, b]}
  - prelu
  - adaptive_avgpool: {size: 3}
  - flatten
  - fc: {units: 5}
  - softmax
"""


#: the tools' own deprecation notes (thop's calculate_relu, fvcore's torch.jit.script)
pytestmark = [pytest.mark.torch,
              pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:This API is being deprecated:UserWarning")]


def _torchinfo(module, shape, device):
    torchinfo = pytest.importorskip("torchinfo")
    s = torchinfo.summary(module, input_size=shape, verbose=0, device=device)
    return s.total_params, s.total_mult_adds


def _thop(module, shape, device):
    thop = pytest.importorskip("thop")
    with contextlib.redirect_stdout(io.StringIO()):   # its notes on modules without a rule
        ops, params = thop.profile(module, inputs=(torch.empty(shape, device=device),),
                                   verbose=False)
    return int(params), ops


def _ptflops(module, shape, device):
    ptflops = pytest.importorskip("ptflops")
    assert shape[0] == 1, "ptflops runs one example"
    macs, params = ptflops.get_model_complexity_info(module, tuple(shape[1:]),
                                                     as_strings=False,
                                                     print_per_layer_stat=False)
    return params, macs


def _fvcore(module, shape, device):
    pytest.importorskip("fvcore")
    from fvcore.nn import FlopCountAnalysis, parameter_count

    analysis = FlopCountAnalysis(module, torch.zeros(shape, device=device))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")    # the JIT tracer's notes
        return parameter_count(module)[""], analysis.total()


#: tool -> (how to run it, the device its counting works on)
TOOLS = {"torchinfo": (_torchinfo, "meta"), "thop": (_thop, "meta"),
         "ptflops": (_ptflops, "cpu"), "fvcore": (_fvcore, "cpu")}

#: specs run on the CPU: small ones, and those that exercise LRN, residual adds, concatenation,
#: non-affine batchnorm and every activation
CPU_SPECS = ["lenet5", "alexnet", "resnet18", "squeezenet1_0", "inception_block", "cifar_bn",
             "zoo"]


def _shipped(specs_dir):
    return sorted(p.stem for p in specs_dir.glob("*.yaml") if not p.stem.startswith("answers_"))


def _load(specs_dir, name):
    return cnncalc.load(ZOO if name == "zoo" else specs_dir / f"{name}.yaml")


def _compare(specs_dir, tool, name, batch):
    graph = _load(specs_dir, name)
    if not torch_graph.supports(graph):
        pytest.skip(f"{name}: a layer without a torch twin in tests/torch_graph.py")
    run, device = TOOLS[tool]
    module = torch_graph.torch_module(graph, device)
    params, ops = run(module, (batch, *graph.input_shape), device)
    counted = count_like(graph.analyze(batch=batch), tool, batch)
    assert (params, ops) == (counted.params, counted.ops), (tool, name, batch)


def test_every_tool_is_pinned():
    assert set(TOOLS) == set(COUNTERS.names()) - {"cnncalc"}


@pytest.mark.parametrize("tool", ["torchinfo", "thop"])
def test_shape_only_tools_on_every_shipped_spec(specs_dir, tool):
    for name in _shipped(specs_dir) + ["zoo"]:
        for batch in (1, 3):                  # both multiply by the batch
            _compare(specs_dir, tool, name, batch)


@pytest.mark.parametrize("name", CPU_SPECS)
def test_ptflops_per_example(specs_dir, name):
    _compare(specs_dir, "ptflops", name, 1)


@pytest.mark.parametrize("name,batch", [(n, 1) for n in CPU_SPECS]
                         + [("lenet5", 2), ("cifar_bn", 2), ("zoo", 3)])
def test_fvcore(specs_dir, name, batch):
    _compare(specs_dir, "fvcore", name, batch)
