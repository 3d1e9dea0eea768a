"""Fixtures for the ONNX loader tests: tiny models and exporters writing real .onnx files."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn


def make_small_cnn(num_classes: int = 10) -> nn.Module:
    """conv / BN / ReLU / avgpool / linear, random init with a fixed seed, eval mode."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, num_classes),
    )
    with torch.no_grad():  # non-trivial BN statistics so BN folding is exercised
        bn = net[1]
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    return net.eval()


def torch_reference(net: nn.Module, x: torch.Tensor, mean, std) -> torch.Tensor:
    """The exported module's logits for pixel-space ``x``: ``net((x - mean) / std)``."""
    return net((x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1))


def export_onnx(
    net: nn.Module,
    path: Path,
    *,
    dynamo: bool = False,
    opset: int = 17,
    external_data: bool = False,
    dynamic_batch: bool = True,
    dynamic_hw: bool = False,
    size: int = 32,
) -> Path:
    """torch.onnx.export with either exporter; batch (and optionally H, W) dynamic."""
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    kwargs: dict = {"opset_version": opset, "input_names": ["x"], "output_names": ["logits"]}
    if dynamo:
        dims = {0: torch.export.Dim("batch")} if dynamic_batch else {}
        kwargs.update(dynamo=True, external_data=external_data, dynamic_shapes=(dims,), verbose=False)
    else:
        axes = {0: "batch"} if dynamic_batch else {}
        if dynamic_hw:
            axes.update({2: "h", 3: "w"})
        kwargs.update(dynamo=False, dynamic_axes={"x": axes, "logits": {0: "batch"}} if axes else None)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), str(path), **kwargs)
    return path


@pytest.fixture
def small_cnn() -> nn.Module:
    return make_small_cnn()


@pytest.fixture
def exporter() -> Callable[..., Path]:
    return export_onnx


@pytest.fixture
def reference() -> Callable[..., torch.Tensor]:
    return torch_reference
