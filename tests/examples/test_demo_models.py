"""The shipped demo models: factories, committed weights, accuracy, ONNX exports, siblings.

Every number here is recomputed from the committed files (nothing is read from MODELS.md
except the sha256 column, which is checked against the files).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MODELS = EXAMPLES / "models"
CNN_NAMES = ("digits_cnn", "digits_cnn_seed1", "digits_cnn_seed2", "digits_cnn_seed3")
ALL_NAMES = (*CNN_NAMES, "digits_vit")


def _load_module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.fixture(scope="module")
def demo() -> ModuleType:
    return _load_module("robaudit_demo_models_under_test", EXAMPLES / "demo_models.py")


@pytest.fixture(scope="module")
def test_split() -> tuple[torch.Tensor, torch.Tensor]:
    from robaudit.data import load_dataset

    ds = load_dataset("digits", shape=(3, 32, 32), num_classes=10, split="test")
    return ds.x, ds.y


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return (x - 0.5) / 0.5


def _weights(name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(MODELS / f"{name}.safetensors"))


def _loaded(demo: ModuleType, name: str) -> nn.Module:
    net = demo.make_vit() if name == "digits_vit" else demo.make_cnn()
    net.load_state_dict(_weights(name), strict=True)
    return net.eval()


def test_cnn_factory_is_lirpa_friendly(demo: ModuleType) -> None:
    net = demo.make_cnn()
    assert isinstance(net, nn.Sequential)
    allowed = (nn.Conv2d, nn.ReLU, nn.Flatten, nn.Linear, nn.AvgPool2d)
    assert all(isinstance(m, allowed) for m in net), [type(m).__name__ for m in net]
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_vit_factory_is_a_timm_vit_with_timm_attention(demo: ModuleType) -> None:
    from timm.layers import Attention
    from timm.models.vision_transformer import VisionTransformer

    net = demo.make_vit()
    assert isinstance(net, VisionTransformer)
    attn = [m for m in net.modules() if isinstance(m, Attention)]
    assert len(attn) == len(net.blocks) >= 4
    assert net.patch_embed.grid_size == (8, 8) and net.cls_token is not None
    assert net.global_pool == "token"
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_committed_weights_load_strictly_and_are_small(demo: ModuleType, name: str) -> None:
    path = MODELS / f"{name}.safetensors"
    assert path.stat().st_size < 5_000_000
    _loaded(demo, name)  # strict=True raises on any missing / unexpected / mis-shaped key


def test_load_demo_model_helper(demo: ModuleType) -> None:
    net = demo.load_demo_model("digits_cnn")
    assert not net.training
    with pytest.raises(KeyError, match="digits_vit"):
        demo.load_demo_model("no_such_model")


@pytest.mark.parametrize("name", ALL_NAMES)
def test_committed_model_accuracy_on_digits_test_split(
    demo: ModuleType, test_split: tuple[torch.Tensor, torch.Tensor], name: str
) -> None:
    x, y = test_split
    assert len(y) == 359
    net = _loaded(demo, name)
    with torch.no_grad():
        pred = net(_normalize(x)).argmax(1)
    acc = float((pred == y).float().mean())
    assert acc >= 0.95, f"{name}: test accuracy {acc:.4f} < 0.95"


def test_main_cnn_tolerates_gaussian_noise(demo: ModuleType, test_split: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Trained with sigma = 0.25 noise, so randomized smoothing at that sigma has something to certify."""
    x, y = test_split
    noisy = x + 0.25 * torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        acc = float((_loaded(demo, "digits_cnn")(_normalize(noisy)).argmax(1) == y).float().mean())
    assert acc >= 0.9, acc


@pytest.mark.parametrize("name", ["digits_cnn", "digits_vit"])
def test_onnx_export_matches_torch(demo: ModuleType, test_split: tuple[torch.Tensor, torch.Tensor], name: str) -> None:
    import onnx
    import onnxruntime as ort

    path = MODELS / f"{name}.onnx"
    assert path.stat().st_size < 5_000_000
    model = onnx.load(str(path))
    assert model.opset_import[0].version == 17
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["robaudit.mean"]) == [0.5, 0.5, 0.5]
    assert json.loads(meta["robaudit.std"]) == [0.5, 0.5, 0.5]
    assert json.loads(meta["robaudit.class_names"]) == [str(i) for i in range(10)]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input"]
    assert [o.name for o in sess.get_outputs()] == ["logits"]
    net = _loaded(demo, name)
    x = _normalize(test_split[0])
    for rows in (slice(0, 1), slice(10, 15)):  # two batch sizes: the batch axis is dynamic
        with torch.no_grad():
            ref = net(x[rows]).numpy()
        got = sess.run(["logits"], {"input": x[rows].numpy()})[0]
        assert got.shape == ref.shape
        assert abs(got - ref).max() < 1e-4


def test_siblings_differ_from_each_other_and_from_main_cnn() -> None:
    states = {name: _weights(name) for name in CNN_NAMES}
    for i, a in enumerate(CNN_NAMES):
        for b in CNN_NAMES[i + 1 :]:
            diff = max(float((states[a][k] - states[b][k]).abs().max()) for k in states[a])
            assert diff > 1e-3, f"{a} and {b} have (nearly) identical weights"


def test_manifest_lists_every_file_with_its_sha256() -> None:
    text = (MODELS / "MODELS.md").read_text()
    for path in sorted(MODELS.glob("*.safetensors")) + sorted(MODELS.glob("*.onnx")):
        rows = [line.split("|") for line in text.splitlines() if line.startswith("|")]
        row = next(("|".join(r) for r in rows if r[1].strip() == f"`{path.name}`"), None)
        assert row is not None, f"{path.name} missing from MODELS.md"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert re.search(rf"`{digest}`", row), f"MODELS.md has a stale sha256 for {path.name}"


def test_training_helpers_shapes_and_ranges() -> None:
    train = _load_module("robaudit_train_demo_models_under_test", EXAMPLES / "train_demo_models.py")
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 32, 32)
    assert torch.equal(train.translate(x, 0, gen), x)
    shifted = train.translate(x, 2, gen)
    assert shifted.shape == x.shape and not torch.equal(shifted, x)
    warped = train.random_affine(x, train.RECIPES["vit"], gen)
    assert warped.shape == x.shape and 0 <= float(warped.min()) and float(warped.max()) <= 1
    assert train.lr_at(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert train.lr_at(100, 100, 10, 1.0) == pytest.approx(0.0)


@pytest.mark.parametrize("kind", ["cnn", pytest.param("vit", marks=pytest.mark.slow)])
def test_training_is_deterministic(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs of the recipe (shortened: one epoch on 64 images) give bit-identical weights."""
    train = _load_module("robaudit_train_demo_models_under_test", EXAMPLES / "train_demo_models.py")
    monkeypatch.setitem(train.RECIPES, kind, {**train.RECIPES[kind], "epochs": 1, "warmup_epochs": 0})
    gen = torch.Generator().manual_seed(3)
    x, y = torch.rand(64, 3, 32, 32, generator=gen), torch.randint(0, 10, (64,), generator=gen)
    data = {"train": (x, y), "test": (x[:16], y[:16])}
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        first, _ = train.train(kind, 5, data)
        second, _ = train.train(kind, 5, data)
        other, _ = train.train(kind, 6, data)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
    a, b, c = first.state_dict(), second.state_dict(), other.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
