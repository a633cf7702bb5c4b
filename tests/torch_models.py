"""Reference models written by hand in PyTorch (torchvision's families, small): what the ONNX
and ``--torch`` import tests read (torchvision is not installed). ``INPUTS`` gives each
factory's input (C, H, W) and ``MACS`` its multiply-accumulates, worked by hand;
``TORCHVISION`` holds torchvision's full-size models with their published numbers."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LeNet(nn.Module):
    """LeNet-5 on 28x28 MNIST, flattened with ``x.view(x.size(0), -1)``."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.view(x.size(0), -1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class BasicBlock(nn.Module):
    """ResNet's basic block; a strided 1x1 projection shortcut where the shape changes."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    """torchvision's resnet18, written out (torchvision is not a dependency here)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (cout, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)], start=1):
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(cin, cout, stride),
                                                     BasicBlock(cout, cout, 1)))
            cin = cout
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, 1000)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = BasicBlock(16, 32, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.avgpool(self.layer1(x))
        return self.fc(torch.flatten(x, 1))


class Fire(nn.Module):
    def __init__(self, cin, squeeze, expand):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand, 1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand, 3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([self.expand1x1_activation(self.expand1x1(x)),
                          self.expand3x3_activation(self.expand3x3(x))], 1)


class TinySqueezeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, 2), nn.ReLU(inplace=True),
                                      nn.MaxPool2d(3, 2, ceil_mode=True), Fire(16, 8, 16))
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(32, 10, 1),
                                        nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1)))

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


class InvertedResidual(nn.Module):
    """MobileNet v2: 1x1 expand, 3x3 depthwise, 1x1 linear projection, identity shortcut."""

    def __init__(self, c, expand):
        super().__init__()
        hidden = c * expand
        self.conv = nn.Sequential(
            nn.Conv2d(c, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return x + self.conv(x)


class TinyMobileNetV2(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(inplace=True),
            InvertedResidual(8, 4))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(8, 10))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


class TinyAlexNet(nn.Module):
    """AlexNet/VGG-style: padded average pooling without the padding in the divisor, adaptive
    pooling to 2x2 and a dropout classifier (torch.onnx writes LocalResponseNorm as a dozen
    elementwise ops, so it is left out)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 5, 2, 2), nn.ReLU(inplace=True),
            nn.AvgPool2d(3, 2, 1, count_include_pad=False), nn.Conv2d(8, 12, 3, padding=1),
            nn.LeakyReLU(0.1))
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(nn.Dropout(), nn.Linear(48, 16), nn.Hardswish(),
                                        nn.Linear(16, 10))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class ResNet20Cifar(nn.Module):
    """He et al.'s CIFAR ResNet-20 with 1x1 projection shortcuts (option B), named as
    ``specs/resnet20_cifar.yaml`` (torchvision's scheme)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        cin = 16
        for i, cout in enumerate((16, 32, 64), start=1):
            blocks = [BasicBlock(cin, cout, 1 if i == 1 else 2)]
            blocks += [BasicBlock(cout, cout, 1) for _ in range(2)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            cin = cout
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(x.mean((2, 3)), 1))


class VGGCifarBN(nn.Module):
    """VGG-11 with batch norm for 32x32 inputs and bias-free convs, named as
    ``specs/vgg_cifar_bn.yaml`` (blockI[.J].conv/bn, fc1)."""

    WIDTHS = ((64,), (128,), (256, 256), (512, 512), (512, 512))

    def __init__(self):
        super().__init__()
        self.order = []
        cin = 3
        for i, widths in enumerate(self.WIDTHS, start=1):
            block = nn.Module()
            for j, cout in enumerate(widths):
                unit = nn.Module()
                unit.conv = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
                unit.bn = nn.BatchNorm2d(cout)
                if len(widths) == 1:
                    block = unit
                else:
                    block.add_module(str(j), unit)
                self.order.append((unit, j == len(widths) - 1))
                cin = cout
            self.add_module(f"block{i}", block)
        self.fc1 = nn.Linear(512, 10)

    def forward(self, x):
        for unit, pool in self.order:
            x = F.relu(unit.bn(unit.conv(x)))
            if pool:
                x = F.max_pool2d(x, 2)
        return self.fc1(torch.flatten(x, 1))


class Twice(nn.Module):
    """A conv and a linear layer each called twice: one set of weights per module, which
    ``parameters()`` (and so PyTorch's count) holds once."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(128, 32)
        self.hidden = nn.Linear(32, 32)
        self.out = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.conv(F.relu(self.stem(x))))
        x = self.pool(F.relu(self.conv(x)))
        x = F.relu(self.hidden(F.relu(self.fc(torch.flatten(x, 1)))))
        return self.out(F.relu(self.hidden(x)))


class AlexNet(nn.Module):
    """torchvision's alexnet (the one-GPU variant: 64-192-384-256-256 filters, no LRN)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Linear(4096, 1000))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class VGG16(nn.Module):
    """torchvision's vgg16 (configuration D, no batch norm)."""

    def __init__(self):
        super().__init__()
        layers, cin = [], 3
        for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                  512, 512, 512, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(), nn.Linear(4096, 1000))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class SqueezeNet10(nn.Module):
    """torchvision's squeezenet1_0: eight Fire modules, ceil-mode pooling, a conv classifier."""

    def __init__(self):
        super().__init__()
        pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.features = nn.Sequential(
            nn.Conv2d(3, 96, 7, 2), nn.ReLU(inplace=True), pool,
            Fire(96, 16, 64), Fire(128, 16, 64), Fire(128, 32, 128), pool,
            Fire(256, 32, 128), Fire(256, 48, 192), Fire(384, 48, 192), Fire(384, 64, 256),
            pool, Fire(512, 64, 256))
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(512, 1000, 1),
                                        nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1)))

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


def conv_bn_relu6(cin, cout, kernel=3, stride=1, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups,
                                   bias=False), nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class MobileInvertedResidual(nn.Module):
    """torchvision's MobileNet v2 block: 1x1 expansion (when t > 1), 3x3 depthwise, linear
    1x1 projection; the shortcut where stride is 1 and the width stays."""

    def __init__(self, cin, cout, stride, t):
        super().__init__()
        hidden = cin * t
        layers = [conv_bn_relu6(cin, hidden, 1)] if t != 1 else []
        layers += [conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision's mobilenet_v2 (width 1.0)."""

    def __init__(self):
        super().__init__()
        layers, cin = [conv_bn_relu6(3, 32, stride=2)], 32
        for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                           (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
            for i in range(n):
                layers.append(MobileInvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(conv_bn_relu6(cin, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


#: torchvision's models at 224x224, written out: their published parameter counts and
#: GFLOPS (torchvision counts a multiply-add as one FLOP: these are GMACs), to the digits the
#: documentation gives. Too big to run in the tests; their structure is analysed.
TORCHVISION = {"alexnet": (AlexNet, 61_100_840, "0.71"), "vgg16": (VGG16, 138_357_544, "15.47"),
               "squeezenet1_0": (SqueezeNet10, 1_248_424, "0.82"),
               "mobilenet_v2": (MobileNetV2, 3_504_872, "0.30"),
               "resnet18": (ResNet18, 11_689_512, "1.81")}


#: the factories, as ``--torch torch_models:<name>`` names them (call ``.eval()`` to run them)
lenet, resnet, resnet18, squeezenet, mobilenet_v2, alexnet, twice = (
    LeNet, TinyResNet, ResNet18, TinySqueezeNet, TinyMobileNetV2, TinyAlexNet, Twice)


#: input (C, H, W) of each factory
INPUTS = {"lenet": (1, 28, 28), "resnet": (3, 32, 32), "squeezenet": (3, 33, 33),
          "mobilenet_v2": (3, 32, 32), "alexnet": (3, 32, 32), "resnet18": (3, 224, 224),
          "twice": (3, 8, 8)}

#: multiply-accumulates of weights, by hand: outputs x (inputs per output)
MACS = {
    # conv1 28·28·6 · 25, conv2 10·10·16 · 150, fc 400·120 + 120·84 + 84·10
    "lenet": 28 * 28 * 6 * 25 + 10 * 10 * 16 * 150 + 400 * 120 + 120 * 84 + 84 * 10,
    # stem 32·32·16 · 27; block at 8x8 (after the 16x16 pool, stride 2): conv1 8·8·32 · 144,
    # conv2 8·8·32 · 288, shortcut 8·8·32 · 16; fc 32·10
    "resnet": 32 * 32 * 16 * 27 + 8 * 8 * 32 * 144 + 8 * 8 * 32 * 288 + 8 * 8 * 32 * 16
    + 32 * 10,
    # conv 16x16x16 · 27; ceil pool -> 8x8; squeeze 8·8·8 · 16; expand 8·8·16 · 8 and
    # 8·8·16 · 72; classifier 8·8·10 · 32
    "squeezenet": 16 * 16 * 16 * 27 + 8 * 8 * 8 * 16 + 8 * 8 * 16 * 8 + 8 * 8 * 16 * 72
    + 8 * 8 * 10 * 32,
    # stem 16·16·8 · 27; expand 16·16·32 · 8; depthwise 16·16·32 · 9; project 16·16·8 · 32;
    # fc 8·10
    "mobilenet_v2": 16 * 16 * 8 * 27 + 16 * 16 * 32 * 8 + 16 * 16 * 32 * 9 + 16 * 16 * 8 * 32
    + 8 * 10,
    # conv1 16·16·8 · 75; pool -> 8x8; conv2 8·8·12 · 72; fc 48·16 + 16·10
    "alexnet": 16 * 16 * 8 * 75 + 8 * 8 * 12 * 72 + 48 * 16 + 16 * 10,
    # stem 112²·64 · 147; per stage (56², 28², 14², 7² outputs; 64..512 channels) four 3x3
    # convs, the first reading the previous stage's width, plus a 1x1 shortcut; fc 512·1000
    "resnet18": 112 * 112 * 64 * 147
    + 56 * 56 * 64 * (4 * 64 * 9)
    + 28 * 28 * 128 * (64 * 9 + 3 * 128 * 9 + 64)
    + 14 * 14 * 256 * (128 * 9 + 3 * 256 * 9 + 128)
    + 7 * 7 * 512 * (256 * 9 + 3 * 512 * 9 + 256)
    + 512 * 1000,
    # stem 8·8·8 · 27, the shared conv twice 8·8·8 · 72; fc 128·32, the shared hidden twice
    # 32·32, out 32·10: shared weights compute at every use
    "twice": 8 * 8 * 8 * 27 + 2 * 8 * 8 * 8 * 72 + 128 * 32 + 2 * 32 * 32 + 32 * 10,
}
