"""Tiny analytic base classifiers for the smoothing tests (inputs are [0, 1] images)."""

from __future__ import annotations

import torch
from torch import nn


class LinearBinary(nn.Module):
    """f(x) = 1[w.x + b > 0]: logits (0, w.x + b)."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.register_buffer("w", w.flatten().float())
        self.b = float(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(s), s], 1)

    def distance(self, x: torch.Tensor) -> float:
        return abs(float(x.flatten() @ self.w + self.b)) / float(self.w.norm())


class LinearMulti(nn.Module):
    """f(x) = argmax (W x + b)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight.float())
        self.register_buffer("bias", bias.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T + self.bias

    def distance(self, x: torch.Tensor) -> float:
        """Distance from x to the nearest decision boundary of f."""
        z = self.forward(x.unsqueeze(0))[0]
        c = int(z.argmax())
        d = [float(z[c] - z[j]) / float((self.weight[c] - self.weight[j]).norm())
             for j in range(len(z)) if j != c]
        return min(d)


class Constant(nn.Module):
    def __init__(self, k: int, num_classes: int = 10) -> None:
        super().__init__()
        self.k, self.num_classes = k, num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], self.num_classes)
        out[:, self.k] = 1.0
        return out


class UniformRandom(nn.Module):
    """class = floor(K * Phi(x_0 / sigma)): uniform over K classes when the clean pixel x_0 is 0."""

    def __init__(self, num_classes: int, sigma: float) -> None:
        super().__init__()
        self.k, self.sigma = num_classes, sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = torch.special.ndtr(x.flatten(1)[:, 0] / self.sigma)
        cls = (u * self.k).long().clamp(max=self.k - 1)
        return nn.functional.one_hot(cls, self.k).float()


class Recorder(nn.Module):
    """Wraps a model and keeps a copy of every input batch it sees."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return self.inner(x)
