"""The bundled demo data: scikit-learn's ``load_digits`` (real 8x8 scans, offline).

A fixed, seeded 80/20 train/test split; ids are ``digits:<index>`` in the full set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from robaudit.errors import DataError

SPLIT_SEED = 20240101
TEST_FRACTION = 0.2
CLASS_NAMES = tuple(str(i) for i in range(10))


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """``(images (1797, 8, 8) in 0..16, labels)``, exactly scikit-learn's ``load_digits()``.

    Read straight from scikit-learn's bundled ``digits.csv.gz``: importing sklearn costs seconds
    per process (every torchrun rank pays it), reading the file milliseconds.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            table = np.loadtxt(path, delimiter=",")
            return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits  # a layout this reader does not know

    bunch = load_digits()
    return bunch.images, bunch.target.astype(np.int64)


def load_digits_split(split: str) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...], list[str]]:
    """Images (N, 1, 8, 8) in [0, 1], labels, ids and class names of one split."""
    if split not in ("train", "test", "all"):
        raise DataError(f"digits split must be 'train', 'test' or 'all', got {split!r}")
    raw, labels = load_digits_arrays()
    images = raw.astype(np.float32) / 16.0
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    n_test = int(round(TEST_FRACTION * len(labels)))
    chosen = {"test": order[:n_test], "train": order[n_test:], "all": order}[split]
    chosen = np.sort(chosen)
    x = torch.from_numpy(images[chosen]).unsqueeze(1)
    y = torch.from_numpy(labels[chosen])
    return x, y, tuple(f"digits:{i}" for i in chosen), list(CLASS_NAMES)
