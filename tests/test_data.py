"""Data sources, subset selection by seed, and bad-data errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from robaudit.data import load_dataset
from robaudit.errors import DataError


def test_digits_resized_to_model_shape_and_subset_by_seed() -> None:
    a = load_dataset("digits", shape=(3, 32, 32), num_classes=10, n=50, seed=3)
    b = load_dataset("digits", shape=(3, 32, 32), num_classes=10, n=50, seed=3)
    c = load_dataset("digits", shape=(3, 32, 32), num_classes=10, n=50, seed=4)
    assert a.x.shape == (50, 3, 32, 32) and a.ids == b.ids and a.ids != c.ids
    assert float(a.x.min()) >= 0 and float(a.x.max()) <= 1
    assert torch.equal(a.x[:, 0], a.x[:, 1])  # grey replicated to RGB
    train = load_dataset("digits", shape=(1, 8, 8), num_classes=10, split="train")
    test = load_dataset("digits", shape=(1, 8, 8), num_classes=10, split="test")
    assert not set(train.ids) & set(test.ids) and len(train) + len(test) == 1797


def test_npz_uint8_nhwc_and_float_nchw(digits_npz: Path, tmp_path: Path) -> None:
    d = load_dataset(str(digits_npz), shape=(3, 8, 8), num_classes=10)
    assert d.x.shape == (200, 3, 8, 8) and d.source["kind"] == "npz"
    f = tmp_path / "f.npz"
    np.savez(f, x=d.x.numpy(), y=d.y.numpy(), ids=np.array([f"s{i}" for i in range(200)]))
    d2 = load_dataset(str(f), shape=(3, 8, 8), num_classes=10)
    assert torch.allclose(d.x, d2.x) and d2.ids[0] == "s0"


def test_npz_shape_mismatch_needs_resize(digits_npz: Path) -> None:
    with pytest.raises(DataError, match="resize"):
        load_dataset(str(digits_npz), shape=(3, 16, 16), num_classes=10)
    assert load_dataset(str(digits_npz), shape=(3, 16, 16), num_classes=10, resize=True).x.shape[-1] == 16


@pytest.mark.parametrize("arrays, match", [
    ({"x": np.zeros((4, 8, 8, 3), np.uint8), "y": np.array([0, 1, 2, 12])}, "labels range"),
    ({"x": np.zeros((4, 8, 8, 3), np.uint8)}, "needs arrays"),
    ({"x": np.full((4, 3, 8, 8), 2.0, np.float32), "y": np.zeros(4, np.int64)}, r"\[0, 1\]"),
    ({"x": np.zeros((4, 8, 8), np.uint8), "y": np.zeros(4, np.int64)}, "4-D"),
])
def test_bad_npz(tmp_path: Path, arrays: dict[str, np.ndarray], match: str) -> None:
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(DataError, match=match):
        load_dataset(str(p), shape=(3, 8, 8), num_classes=10)


def test_image_folder_good_and_bad(tmp_path: Path) -> None:
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    with pytest.raises(DataError, match="2 classes"):
        load_dataset(str(tmp_path), shape=(3, 8, 8), num_classes=10)
    d = load_dataset(str(tmp_path), shape=(3, 8, 8), num_classes=2)
    assert len(d) == 6 and d.class_names == ("cat", "dog") and d.ids[0] == "cat/0.png"
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(tmp_path / "dog" / "odd.png")
    with pytest.raises(DataError, match="mixed image sizes"):
        load_dataset(str(tmp_path), shape=(3, 8, 8), num_classes=2)
    (tmp_path / "dog" / "odd.png").unlink()
    (tmp_path / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image"):
        load_dataset(str(tmp_path), shape=(3, 8, 8), num_classes=2)


def test_missing_source_and_never_download(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(str(tmp_path / "nope.npz"), shape=(3, 8, 8), num_classes=10)
    with pytest.raises(DataError, match="root|not found"):
        load_dataset("torchvision:CIFAR10", shape=(3, 32, 32), num_classes=10, root=str(tmp_path))


def test_digits_reader_matches_scikit_learn() -> None:
    """The direct CSV reader (no sklearn import) returns exactly load_digits()'s images and labels."""
    from sklearn.datasets import load_digits

    from robaudit.digits import load_digits_arrays

    bunch = load_digits()
    images, labels = load_digits_arrays()
    assert images.dtype == bunch.images.dtype and np.array_equal(images, bunch.images)
    assert np.array_equal(labels, bunch.target)
