"""Model loading: every torch source kind, the unsafe-pickle guard, and contract failures."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from robaudit import load_model
from robaudit.errors import ModelLoadError, UnsafeModelError
from robaudit.model import Capability

SPEC = {"shape": (3, 8, 8), "num_classes": 10, "mean": (0.5,), "std": (0.25,)}


def _reference(model_dir: Path) -> torch.Tensor:
    m = load_model(model_dir / "tiny.pt", factory=f"{model_dir}/factories.py:tiny_cnn", **SPEC)
    return m.logits(torch.linspace(0, 1, 2 * 3 * 8 * 8).view(2, 3, 8, 8))


@pytest.mark.parametrize("filename, extra", [
    ("tiny.pt", {"factory": "{d}/factories.py:tiny_cnn"}),
    ("tiny.safetensors", {"factory": "{d}/factories.py:tiny_cnn"}),
    ("tiny_ts.pt", {}),
    ("tiny.pt2", {}),
])
def test_torch_sources_load_and_agree(model_dir: Path, filename: str, extra: dict[str, str]) -> None:
    kwargs = {k: v.format(d=model_dir) for k, v in extra.items()}
    model = load_model(model_dir / filename, **kwargs, **SPEC)
    x = torch.linspace(0, 1, 2 * 3 * 8 * 8).view(2, 3, 8, 8)
    assert torch.allclose(model.logits(x), _reference(model_dir), atol=1e-5)
    assert model.spec.num_classes == 10 and len(model.fingerprint) == 64
    assert Capability.GRADIENTS in model.capabilities


def test_normalisation_lives_in_the_adapter(model_dir: Path) -> None:
    plain = load_model(model_dir / "tiny.pt", factory=f"{model_dir}/factories.py:tiny_cnn",
                       shape=(3, 8, 8), num_classes=10)
    normed = load_model(model_dir / "tiny.pt", factory=f"{model_dir}/factories.py:tiny_cnn", **SPEC)
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(normed.logits(x), plain.logits((x - 0.5) / 0.25), atol=1e-5)


def test_in_memory_module_and_num_classes_inferred() -> None:
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 7))
    model = load_model(net, shape=(3, 8, 8))
    assert model.spec.num_classes == 7 and model.name == "Sequential"


def test_timm_arch_with_local_checkpoint(tmp_path: Path) -> None:
    import timm

    net = timm.create_model("resnet18", num_classes=5)
    torch.save(net.state_dict(), tmp_path / "r18.pt")
    model = load_model(tmp_path / "r18.pt", arch="timm:resnet18", num_classes=5, shape=(3, 32, 32))
    assert model.spec.mean == pytest.approx((0.485, 0.456, 0.406))  # from timm's pretrained config
    assert model.logits(torch.rand(1, 3, 32, 32)).shape == (1, 5)


def test_pickled_module_refused_without_flag(model_dir: Path) -> None:
    with pytest.raises(UnsafeModelError, match="allow-unsafe-pickle"):
        load_model(model_dir / "pickled.pt", shape=(3, 8, 8))
    model = load_model(model_dir / "pickled.pt", shape=(3, 8, 8), allow_unsafe_pickle=True)
    assert model.provenance["unsafe_pickle"] is True


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.write_text, (self.marker, "pwned"))


def test_malicious_pickle_never_executes(tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump(_Exploit(marker), f)
    with pytest.raises(UnsafeModelError):
        load_model(path, shape=(3, 8, 8))
    with pytest.raises(UnsafeModelError):  # also as "weights" for a factory
        load_model(path, factory="torch.nn:Identity", shape=(3, 8, 8))
    assert not marker.exists()


@pytest.mark.parametrize("kwargs, match", [
    ({"source": "missing.pt"}, "not found"),
    ({"source": "{d}/tiny.pt"}, "weights only"),
    ({"source": "{d}/tiny.pt", "factory": "no_such_module:f"}, "cannot import factory"),
    ({"source": "{d}/tiny.pt", "factory": "{d}/factories.py:tiny_cnn", "num_classes": 3}, "do not fit|num_classes"),
])
def test_load_failures_name_the_fix(model_dir: Path, kwargs: dict[str, object], match: str) -> None:
    kw = {k: (v.format(d=model_dir) if isinstance(v, str) else v) for k, v in kwargs.items()}
    source = kw.pop("source")
    kw.setdefault("num_classes", 10)
    with pytest.raises(ModelLoadError, match=match):
        load_model(source, shape=(3, 8, 8), **kw)


def test_nan_logits_and_wrong_output_shape_rejected(model_dir: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("f2", model_dir / "factories.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    with pytest.raises(ModelLoadError, match="non-finite"):
        load_model(mod.nan_model(), shape=(3, 8, 8), num_classes=10)
    with pytest.raises(ModelLoadError, match="logits"):
        load_model(mod.wrong_shape(), shape=(3, 8, 8), num_classes=3)


def test_wrong_input_shape_is_reported(model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="shape"):
        load_model(model_dir / "tiny_ts.pt", shape=(3, 16, 16), num_classes=10)


def test_torchvision_arch_with_local_checkpoint(tmp_path: Path) -> None:
    import torchvision

    net = torchvision.models.get_model("resnet18", weights=None, num_classes=4)
    torch.save(net.state_dict(), tmp_path / "tv.pt")
    model = load_model(tmp_path / "tv.pt", arch="torchvision:resnet18", num_classes=4, shape=(3, 32, 32))
    assert model.spec.mean == pytest.approx((0.485, 0.456, 0.406)) and model.spec.num_classes == 4
