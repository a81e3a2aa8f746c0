"""Residual networks for 32x32 and larger inputs: the paper's ResNet-34 teacher and smaller options.

- ``resnet34`` / ``resnet18``: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016,
  BasicBlock stages [3, 4, 6, 3] / [2, 2, 2, 2] with widths 64-128-256-512, in the CIFAR form used by
  the data-free distillation literature (DAFL, DFAD, CMI: ResNet-34 teacher -> student): a 3x3 stem
  without max-pooling for 32x32 inputs. For inputs of 64 pixels or more the stem has stride 2, so a
  64x64 image costs what a 32x32 one does.
- ``resnet20``: the small CIFAR ResNet of the same paper (section 4.2): three stages of three
  BasicBlocks with 16-32-64 channels (~0.27 M parameters), a cheap teacher or DP-trainable model.
- ``activation="tanh"`` gives the tempered-sigmoid variant (Papernot et al., AAAI 2021).
- ``-gn`` variants replace BatchNorm by GroupNorm (Wu & He, ECCV 2018), which per-sample gradients
  (DP-SGD, Opacus) need: BatchNorm mixes examples in a batch. GroupNorm uses ``min(groups, C)``
  groups.

Inputs are images in [0, 1]; every network first maps them to [-1, 1] with a fixed affine map
(data-independent, so it costs no privacy). The student for these datasets is the core's ``cnn3``
(the paper's three-layer CNN), which takes any input size.
"""
from __future__ import annotations

import torch
from torch import nn

from . import register_arch


def _act(name: str) -> nn.Module:
    # not in-place: Opacus' hooks need each module's inputs intact
    return {"relu": nn.ReLU(), "tanh": nn.Tanh(), "elu": nn.ELU()}[name]


def _norm(kind: str, channels: int, groups: int) -> nn.Module:
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "gn":
        return nn.GroupNorm(min(groups, channels), channels)
    raise ValueError(f"unknown norm {kind!r} (bn | gn)")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (a 1x1 projection when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: str, groups: int, activation: str = "relu"):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.n1 = _norm(norm, c_out, groups)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.n2 = _norm(norm, c_out, groups)
        self.act1, self.act2 = _act(activation), _act(activation)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          _norm(norm, c_out, groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.n1(self.conv1(x)))
        out = self.n2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class ResNet(nn.Module):
    """A BasicBlock ResNet: stem, ``len(blocks)`` stages (the first at stride 1, the others halving the
    resolution), global average pooling and a linear classifier."""

    def __init__(self, input_shape, num_classes: int, blocks: tuple[int, ...], widths: tuple[int, ...],
                 norm: str = "bn", groups: int = 16, activation: str = "relu"):
        super().__init__()
        c, h, w = input_shape
        if min(h, w) < 8:
            raise ValueError(f"ResNet needs inputs of at least 8x8, got {h}x{w}")
        self.input_shape = tuple(input_shape)
        stem_stride = 2 if min(h, w) >= 64 else 1
        self.stem = nn.Sequential(nn.Conv2d(c, widths[0], 3, stride=stem_stride, padding=1, bias=False),
                                  _norm(norm, widths[0], groups), _act(activation))
        layers, c_in = [], widths[0]
        for i, (n, c_out) in enumerate(zip(blocks, widths)):
            for j in range(n):
                layers.append(BasicBlock(c_in, c_out, 2 if (i > 0 and j == 0) else 1, norm, groups,
                                         activation))
                c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        self.feature_dim = c_in
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (after global pooling), e.g. for attention transfer or kNN."""
        x = self.stem(x * 2.0 - 1.0)
        return torch.flatten(self.pool(self.layers(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def _widths(base: int, n: int) -> tuple[int, ...]:
    return tuple(base * 2 ** i for i in range(n))


def resnet34(input_shape, num_classes, width: int = 64, norm: str = "bn", groups: int = 16,
             activation: str = "relu") -> ResNet:
    return ResNet(input_shape, num_classes, (3, 4, 6, 3), _widths(width, 4), norm, groups, activation)


def resnet18(input_shape, num_classes, width: int = 64, norm: str = "bn", groups: int = 16,
             activation: str = "relu") -> ResNet:
    return ResNet(input_shape, num_classes, (2, 2, 2, 2), _widths(width, 4), norm, groups, activation)


def resnet20(input_shape, num_classes, width: int = 16, norm: str = "bn", groups: int = 16,
             activation: str = "relu") -> ResNet:
    return ResNet(input_shape, num_classes, (3, 3, 3), _widths(width, 3), norm, groups, activation)


for _name, _fn in (("resnet34", resnet34), ("resnet18", resnet18), ("resnet20", resnet20)):
    register_arch(_name)(_fn)
    register_arch(f"{_name}-gn")(lambda input_shape, num_classes, _f=_fn, **kw: _f(input_shape, num_classes,
                                                                                     **{"norm": "gn", **kw}))
