"""Evaluation data: a :class:`Dataset` of [0, 1] images with stable sample ids.

Sources: an ImageFolder directory, an ``.npz`` file (uint8 NHWC or float NCHW plus
integer labels), the bundled ``digits`` set (scikit-learn's ``load_digits``) and
torchvision datasets already on disk (never downloaded).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from robaudit.errors import DataError
from robaudit.seeding import hash_ids, make_generator

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


@dataclass(frozen=True)
class Batch:
    """Images ``x`` (N, C, H, W) in [0, 1], labels ``y`` (N,) and sample ``ids``."""

    x: torch.Tensor
    y: torch.Tensor
    ids: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.x.to(device), self.y.to(device), self.ids)


@dataclass(frozen=True)
class Dataset:
    """The audited subset. ``source`` describes where it came from (JSON-native)."""

    x: torch.Tensor
    y: torch.Tensor
    ids: tuple[str, ...]
    class_names: tuple[str, ...] | None
    source: dict[str, Any]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def ids_hash(self) -> str:
        return hash_ids(self.ids)

    def select(self, ids: Sequence[str]) -> Batch:
        index = {sid: i for i, sid in enumerate(self.ids)}
        rows = torch.tensor([index[s] for s in ids], dtype=torch.long)
        return Batch(self.x[rows], self.y[rows], tuple(ids))

    def head(self, n: int) -> Dataset:
        """The first ``n`` samples (the audited order is already a seeded random subset)."""
        if n >= len(self):
            return self
        return Dataset(self.x[:n], self.y[:n], self.ids[:n], self.class_names, {**self.source, "n": n})

    def batches(self, size: int) -> Iterator[Batch]:
        for i in range(0, len(self), size):
            yield Batch(self.x[i : i + size], self.y[i : i + size], self.ids[i : i + size])


def load_dataset(
    source: str,
    *,
    shape: tuple[int, int, int],
    num_classes: int,
    n: int | None = None,
    seed: int = 0,
    resize: bool = False,
    split: str = "test",
    root: str | None = None,
) -> Dataset:
    """Load ``source`` and select ``n`` samples by seed (all when ``n`` is None).

    Args:
        source: ``"digits"``, a path to an ``.npz`` file or an ImageFolder directory,
            or ``"torchvision:NAME"`` (e.g. ``torchvision:CIFAR10``) with ``root`` on disk.
        shape: the model's (C, H, W); images are checked (or resized when ``resize``).
        num_classes: labels must lie in ``[0, num_classes)``.
        n: subset size, chosen by ``seed`` and recorded by sample id.
        resize: bilinearly resize images to ``shape`` instead of refusing other sizes.
        split: ``train`` or ``test`` for digits / torchvision.

    Raises:
        DataError: unreadable files, labels out of range, mixed image sizes, shape mismatch.
    """
    if source == "digits":
        from robaudit.digits import load_digits_split

        x, y, ids, names = load_digits_split(split)
        resize = True  # the 8x8 digits are always brought to the model's input size
        desc: dict[str, Any] = {"kind": "digits", "split": split}
    elif source.startswith("torchvision:"):
        x, y, ids, names = _load_torchvision(source.split(":", 1)[1], root, split)
        desc = {"kind": "torchvision", "name": source.split(":", 1)[1], "root": root, "split": split}
    else:
        path = Path(source)
        if not path.exists():
            raise DataError(
                f"data source {source!r} does not exist; give an .npz file, an ImageFolder "
                "directory, 'digits' or 'torchvision:NAME'"
            )
        if path.is_dir():
            x, y, ids, names = _load_image_folder(path)
            desc = {"kind": "image_folder", "path": str(path)}
        elif path.suffix == ".npz":
            x, y, ids, names = _load_npz(path)
            desc = {"kind": "npz", "path": str(path)}
        else:
            raise DataError(
                f"unsupported data file {source!r}; use an .npz (x, y) file or an ImageFolder directory"
            )
    x = _fit_shape(x, shape, resize, source)
    _check_labels(y, num_classes, source)
    if names is not None and len(names) != num_classes:
        raise DataError(
            f"{source}: the data has {len(names)} classes ({', '.join(map(str, names[:5]))}"
            f"{', ...' if len(names) > 5 else ''}) but the model has {num_classes}; "
            "check model.input.num_classes or the data set"
        )
    if n is not None:
        if n <= 0:
            raise DataError(f"data.n must be positive, got {n}")
        if n < len(ids):
            perm = torch.randperm(len(ids), generator=make_generator(seed))[:n]
            perm, _ = perm.sort()
            x, y = x[perm], y[perm]
            ids = tuple(ids[i] for i in perm.tolist())
    desc.update({"n": len(ids), "subset_seed": seed, "resized": resize})
    return Dataset(x.contiguous(), y, tuple(ids), tuple(names) if names else None, desc)


def _fit_shape(x: torch.Tensor, shape: tuple[int, int, int], resize: bool, source: str) -> torch.Tensor:
    c, h, w = shape
    if x.shape[1] != c:
        if x.shape[1] == 1 and c == 3:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] == 3 and c == 1:
            x = x.mean(1, keepdim=True)
        else:
            raise DataError(f"{source}: images have {x.shape[1]} channels, the model expects {c}")
    if tuple(x.shape[2:]) != (h, w):
        if not resize:
            raise DataError(
                f"{source}: images are {tuple(x.shape[2:])} pixels but the model expects {(h, w)}; "
                "set data.resize = true (or --resize) to resize them, or prepare data at the model size"
            )
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)
    return x.float()


def _check_labels(y: torch.Tensor, num_classes: int, source: str) -> None:
    if len(y) == 0:
        raise DataError(f"{source}: the data set is empty")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        raise DataError(
            f"{source}: labels range over [{lo}, {hi}] but the model has {num_classes} classes; "
            "labels must be integers in [0, num_classes). Check model.input.num_classes "
            "or the label encoding"
        )


def _load_npz(path: Path) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...], list[str] | None]:
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            xk = next((k for k in ("x", "images", "X") if k in keys), None)
            yk = next((k for k in ("y", "labels", "Y") if k in keys), None)
            if xk is None or yk is None:
                raise DataError(
                    f"{path}: an .npz needs arrays 'x' (images) and 'y' (labels); found {sorted(keys)}"
                )
            x_np, y_np = f[xk], f[yk]
            ids_np = f["ids"] if "ids" in keys else None
            names = [str(s) for s in f["class_names"]] if "class_names" in keys else None
    except DataError:
        raise
    except Exception as err:  # zip/format errors from numpy
        raise DataError(f"{path}: cannot read the .npz file ({type(err).__name__}: {err})") from err
    if x_np.ndim != 4:
        raise DataError(f"{path}: 'x' must be 4-D (N,H,W,C uint8 or N,C,H,W float), got shape {x_np.shape}")
    if not np.issubdtype(y_np.dtype, np.integer) or y_np.ndim != 1 or len(y_np) != len(x_np):
        raise DataError(f"{path}: 'y' must be a 1-D integer array with one label per image")
    if x_np.dtype == np.uint8:
        x = torch.from_numpy(x_np).permute(0, 3, 1, 2).float() / 255.0
    elif np.issubdtype(x_np.dtype, np.floating):
        x = torch.from_numpy(x_np.astype(np.float32))
        if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise DataError(f"{path}: float images must be finite and lie in [0, 1] (NCHW)")
    else:
        raise DataError(f"{path}: 'x' must be uint8 NHWC or float NCHW in [0, 1], got {x_np.dtype}")
    ids = tuple(str(s) for s in ids_np) if ids_np is not None else tuple(f"{path.stem}:{i}" for i in range(len(x)))
    if len(set(ids)) != len(ids):
        raise DataError(f"{path}: sample ids must be unique")
    return x, torch.from_numpy(y_np.astype(np.int64)), ids, names


def _load_image_folder(root: Path) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...], list[str]]:
    from PIL import Image, UnidentifiedImageError

    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise DataError(f"{root}: an ImageFolder needs one sub-directory per class (root/CLASS/img.png)")
    images, labels, ids = [], [], []
    for label, cls in enumerate(classes):
        for f in sorted((root / cls).iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(f) as im:
                    arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
            except (UnidentifiedImageError, OSError) as err:
                raise DataError(f"cannot read image {f}: {err}; remove or replace the file") from err
            if images and arr.shape != images[0].shape:
                raise DataError(
                    f"mixed image sizes in {root}: {f} is {arr.shape[1]}x{arr.shape[0]}, the first image "
                    f"is {images[0].shape[1]}x{images[0].shape[0]}; resize the images to one size"
                )
            images.append(arr)
            labels.append(label)
            ids.append(f"{cls}/{f.name}")
    if not images:
        raise DataError(f"{root}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    return x, torch.tensor(labels), tuple(ids), classes


def _load_torchvision(
    name: str, root: str | None, split: str
) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...], list[str] | None]:
    import torchvision.datasets as tvd

    cls = getattr(tvd, name, None)
    if cls is None or root is None:
        raise DataError(
            f"torchvision dataset {name!r}: give an existing class name (e.g. CIFAR10) and data.root, "
            "the directory where it is already downloaded (robaudit never downloads)"
        )
    try:
        ds = cls(root=root, train=(split == "train"), download=False)
    except TypeError:
        ds = cls(root=root, split=split, download=False)
    except RuntimeError as err:
        raise DataError(f"torchvision dataset {name} not found under {root}: {err}") from err
    xs, ys = [], []
    for img, label in ds:
        xs.append(np.asarray(img.convert("RGB"), dtype=np.uint8))
        ys.append(int(label))
    x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float() / 255.0
    names = list(getattr(ds, "classes", []) or []) or None
    return x, torch.tensor(ys), tuple(f"{name}:{split}:{i}" for i in range(len(xs))), names
