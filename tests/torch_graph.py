"""A cnncalc graph as a ``torch.nn.Module``, built the way torchvision writes its models: one
``nn`` module per layer (``nn.Conv2d``, ``nn.BatchNorm2d``, ``nn.ReLU`` ...), merges as tensor
expressions (``a + b``, ``torch.cat``) and ``torch.flatten`` as a function. The counting tools
hook modules and trace tensor operations, so what they see here is what they see on
torchvision's own models. Build under ``torch.device("meta")`` to count without memory or
time: the tools read shapes only.

Test helper (torch is optional): only the counting-tool tests import it.
"""
from __future__ import annotations

import torch
from torch import nn


def _symmetric(pads, name):
    (top, bottom), (left, right) = pads
    if top != bottom or left != right:
        raise NotImplementedError(f"{name}: asymmetric padding {pads}")
    return top, left


def _pool_kwargs(node):
    layer = node.layer
    return dict(kernel_size=layer.kernel_size, stride=layer.stride,
                padding=_symmetric(node.pads(), node.name), ceil_mode=layer.ceil_mode)


def _conv(node):
    layer = node.layer
    return nn.Conv2d(node.in_shape.c, layer.out_channels, layer.kernel_size, layer.stride,
                     _symmetric(node.pads(), node.name), layer.dilation, layer.groups,
                     bias=layer.bias)


def _avgpool(node):
    return nn.AvgPool2d(**_pool_kwargs(node), count_include_pad=node.layer.count_include_pad)


def _maxpool(node):
    if node.layer.dilation != (1, 1):
        raise NotImplementedError(f"{node.name}: dilated max pooling")
    return nn.MaxPool2d(**_pool_kwargs(node))


def _fc(node):
    return nn.Linear(node.in_shape.size, node.layer.out_features, bias=node.layer.bias)


def _prelu(node):
    (alphas,) = node.param_shapes()["weight"]
    return nn.PReLU(alphas)


#: layer kind -> the torch module torchvision would use for it
MODULES = {
    "conv": _conv,
    "fc": _fc,
    "batchnorm": lambda n: nn.BatchNorm2d(n.in_shape.c, eps=n.layer.eps,
                                          momentum=n.layer.momentum, affine=n.layer.affine),
    "lrn": lambda n: nn.LocalResponseNorm(n.layer.size, n.layer.alpha, n.layer.beta,
                                          n.layer.k),
    "maxpool": _maxpool,
    "avgpool": _avgpool,
    "adaptive_avgpool": lambda n: nn.AdaptiveAvgPool2d(n.layer.output_size),
    "global_avgpool": lambda n: nn.AdaptiveAvgPool2d((1, 1)),   # torchvision's spelling
    "dropout": lambda n: nn.Dropout(n.layer.p),
    "relu": lambda n: nn.ReLU(inplace=True),
    "relu6": lambda n: nn.ReLU6(inplace=True),
    "leaky_relu": lambda n: nn.LeakyReLU(n.layer.negative_slope),
    "elu": lambda n: nn.ELU(n.layer.alpha),
    "prelu": _prelu,
    "sigmoid": lambda n: nn.Sigmoid(),
    "tanh": lambda n: nn.Tanh(),
    "mish": lambda n: nn.Mish(),
    "swish": lambda n: nn.SiLU(),
    "hardswish": lambda n: nn.Hardswish(),
    "hardsigmoid": lambda n: nn.Hardsigmoid(),
    "softmax": lambda n: nn.Softmax(dim=1),
}

#: kinds written as tensor expressions in forward(), as torchvision writes them
FUNCTIONS = ("add", "concat", "flatten")


def supports(graph) -> bool:
    """Whether every layer of ``graph`` has a torch twin here."""
    return all(n.kind in MODULES or n.kind in FUNCTIONS for n in graph.nodes)


class GraphModule(nn.Module):
    """The graph's layers as registered submodules (``layers[i]`` is node i), run in order."""

    def __init__(self, graph):
        super().__init__()
        self.graph = graph
        self.layers = nn.ModuleList(
            MODULES[n.kind](n) if n.kind in MODULES else nn.Identity() for n in graph.nodes)
        for node, module in zip(graph.nodes, self.layers):
            if not node.trainable:
                module.requires_grad_(False)

    def forward(self, x):
        values = {"input": x}
        for node, module in zip(self.graph.nodes, self.layers):
            args = [values[name] for name in node.inputs]
            if node.kind == "add":
                y = args[0]
                for a in args[1:]:
                    y = y + a
            elif node.kind == "concat":
                y = torch.cat(args, 1)
            elif node.kind == "flatten" or (node.kind == "fc" and args[0].dim() > 2):
                y = torch.flatten(args[0], 1)
                if node.kind == "fc":
                    y = module(y)
            else:
                y = module(args[0])
            values[node.name] = y
        return y


def torch_module(graph, device: str = "meta") -> GraphModule:
    """The graph as a module in eval mode, its parameters on ``device`` (meta: shapes only)."""
    with torch.device(device):
        return GraphModule(graph).eval()
