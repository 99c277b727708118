"""Models: `mlp` (two moons, or any flattened input), `cnn` (digits-sized images),
`wrn28_2` (CIFAR-10, as in FixMatch/MPL)."""

from __future__ import annotations

import math

import torch
from torch import nn

from smpl_core.errors import ConfigError


class MLP(nn.Module):
    def __init__(self, in_features: int, num_classes: int, hidden: tuple[int, ...] = (64, 64)):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class SmallCNN(nn.Module):
    """Three 3x3 conv blocks and global average pooling: ~25k parameters at width 16."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn(in_channels, width), *_conv_bn(width, 2 * width), nn.MaxPool2d(2),
            *_conv_bn(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        return self.fc(self.features(x))


class _WideBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, activate_before_residual: bool):
        super().__init__()
        # BN momentum 0.001 and leaky ReLU 0.1: the FixMatch / MPL settings for WRN-28-2.
        self.bn1 = nn.BatchNorm2d(cin, momentum=0.001)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, momentum=0.001)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.act = nn.LeakyReLU(0.1)
        self.shortcut = None if cin == cout else nn.Conv2d(cin, cout, 1, stride, bias=False)
        self.abr = activate_before_residual

    def forward(self, x):
        o = self.act(self.bn1(x))
        if self.shortcut is not None or self.abr:
            x = o  # the shortcut sees the activated input when shapes change
        out = self.conv2(self.act(self.bn2(self.conv1(o))))
        return out + (x if self.shortcut is None else self.shortcut(x))


class WideResNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, depth: int = 28, widen: int = 2):
        super().__init__()
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        blocks: list[nn.Module] = []
        for g in range(3):
            for i in range(n):
                cin = widths[g] if i == 0 else widths[g + 1]
                stride = (1 if g == 0 else 2) if i == 0 else 1
                blocks.append(_WideBlock(cin, widths[g + 1], stride, g == 0 and i == 0))
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(widths[3], momentum=0.001)
        self.act = nn.LeakyReLU(0.1)
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
            elif isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.act(self.bn(self.blocks(self.conv(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def resolve_model_name(model: str, dataset: str) -> str:
    if model != "auto":
        return model
    return {"moons": "mlp", "digits": "cnn"}.get(dataset, "wrn28_2")


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if name == "mlp":
        return MLP(math.prod(input_shape), num_classes)
    if len(input_shape) != 3:
        raise ConfigError(f"`model` must be mlp for vector data, but got model={name!r}.")
    if name == "cnn":
        return SmallCNN(input_shape[0], num_classes)
    return WideResNet(input_shape[0], num_classes)
