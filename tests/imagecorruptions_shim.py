"""Import imagecorruptions 1.1.2 (the test-only reference) on current numpy/skimage/setuptools.

It no longer imports as released; this shims exactly its three breakages:
``pkg_resources.resource_filename``, ``np.float_`` and ``skimage.filters.gaussian(multichannel=...)``.
Used by tests/attacks/test_corrupt_reference.py and benchmarks/bench_corruptions.py; never at run time.
"""

from __future__ import annotations

import os
import sys
import types
import warnings

import numpy as np


def load_imagecorruptions() -> types.ModuleType:
    if "pkg_resources" not in sys.modules:
        fake = types.ModuleType("pkg_resources")

        def resource_filename(package: str, path: str) -> str:
            return os.path.join(os.path.dirname(sys.modules[package].__file__ or ""), path)

        fake.resource_filename = resource_filename  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = fake
    if not hasattr(np, "float_"):
        np.float_ = np.float64  # type: ignore[attr-defined]
    import skimage.filters

    if not getattr(skimage.filters.gaussian, "_multichannel_shim", False):
        original = skimage.filters.gaussian

        def gaussian(image, *args, multichannel=None, **kwargs):  # noqa: ANN001, ANN202
            if multichannel is not None and "channel_axis" not in kwargs:
                kwargs["channel_axis"] = -1 if multichannel else None
            return original(image, *args, **kwargs)

        gaussian._multichannel_shim = True  # type: ignore[attr-defined]
        skimage.filters.gaussian = gaussian
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import imagecorruptions
    return imagecorruptions
