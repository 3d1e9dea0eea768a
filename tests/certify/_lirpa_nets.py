"""Tiny random networks covering every operator the LiRPA engine supports (8x8 RGB inputs)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robaudit.model import PixelSpaceModel


class Residual(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(ch, ch, 3, 1, 1), nn.BatchNorm2d(ch)
        self.conv2, self.bn2 = nn.Conv2d(ch, ch, 3, 1, 1), nn.BatchNorm2d(ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + x)


class Functional(nn.Module):
    """Functional calls, view(x.size(0), -1), constant arithmetic, in-place ReLU, subtraction."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, 2, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc1, self.fc2 = nn.Linear(64, 12), nn.Linear(64, 12)
        self.out = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.conv(x * 2 - 1))
        h = h.view(h.size(0), -1)
        a = F.leaky_relu(self.fc1(h), 0.1)
        b = torch.tanh(self.fc2(h) / 2)
        return self.out(a - b + 0.5)


def build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    if name == "mlp_mixed":
        net: nn.Module = nn.Sequential(nn.Flatten(), nn.Linear(192, 24), nn.LeakyReLU(0.2), nn.Linear(24, 16),
                                       nn.Tanh(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 5))
    elif name == "cnn_pool_sigmoid":
        net = nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2),
                            nn.Conv2d(4, 6, 3, 1, 1, dilation=1), nn.Sigmoid(), nn.Flatten(), nn.Linear(96, 5))
    elif name == "cnn_strided":  # stride/padding/dilation/groups, odd sizes (output_padding)
        net = nn.Sequential(nn.Conv2d(3, 6, 3, 2, 1), nn.ReLU(), nn.Conv2d(6, 6, 3, 1, 2, dilation=2, groups=2),
                            nn.ReLU(), nn.Conv2d(6, 4, 2, 2, 0), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                            nn.Flatten(), nn.Linear(4, 5))
    elif name == "resnet":
        body = nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), nn.BatchNorm2d(4), nn.ReLU(), Residual(4),
                             nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 5))
        net = PixelSpaceModel(body, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    elif name == "functional":
        net = Functional()
    else:
        raise KeyError(name)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(-1.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return net.eval()


NAMES = ("mlp_mixed", "cnn_pool_sigmoid", "cnn_strided", "resnet", "functional")
