"""Shared fixtures: tiny in-repo models in every supported source format, small data files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

FACTORY_SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn

    def tiny_cnn(num_classes=10):
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, num_classes)
        )

    def nan_model():
        class NaNNet(nn.Module):
            def forward(self, x):
                return torch.full((x.shape[0], 10), float("nan"))
        return NaNNet()

    def wrong_shape():
        class Wrong(nn.Module):
            def forward(self, x):
                return x * 2
        return Wrong()
    """
)


class PickledNet(nn.Module):
    """A module defined in the test package: pickling it stores a reference to this class."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with one tiny 8x8 RGB classifier saved in every supported torch format."""
    d = tmp_path_factory.mktemp("models")
    (d / "factories.py").write_text(FACTORY_SOURCE)
    import importlib.util

    spec = importlib.util.spec_from_file_location("robaudit_test_factories", d / "factories.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    net = mod.tiny_cnn().eval()
    torch.save(net.state_dict(), d / "tiny.pt")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(d / "tiny.safetensors"))
    torch.jit.save(torch.jit.trace(net, torch.rand(1, 3, 8, 8)), str(d / "tiny_ts.pt"))
    ep = torch.export.export(net, (torch.rand(2, 3, 8, 8),),
                             dynamic_shapes={"input": {0: torch.export.Dim("batch", min=1, max=4096)}})
    torch.export.save(ep, str(d / "tiny.pt2"))
    torch.save(PickledNet().eval(), d / "pickled.pt")
    return d


@pytest.fixture(scope="session")
def digits_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 digits as uint8 NHWC 8x8 RGB in an .npz file."""
    from sklearn.datasets import load_digits

    b = load_digits()
    x = (b.images[:200] / 16.0 * 255).astype(np.uint8)
    x = np.repeat(x[..., None], 3, axis=3)
    path = tmp_path_factory.mktemp("data") / "digits8.npz"
    np.savez(path, x=x, y=b.target[:200].astype(np.int64))
    return path
