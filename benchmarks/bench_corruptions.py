"""Throughput of robaudit's batched ImageNet-C corruptions vs the imagecorruptions package.

All 15 corruptions x 5 severities on 64 images at 32 x 32 and on 8 images at
224 x 224. robaudit corrupts each batch in one call; imagecorruptions (the
reference, shimmed to import on current numpy/skimage) loops over images, as its
API works. Prints per-corruption times and the speed-up ratio (target >= 10x).

Usage: python benchmarks/bench_corruptions.py [--threads 1] [--sizes 32 224] [--device cpu]
Not a test: it needs the test-only imagecorruptions/OpenCV/skimage packages.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.imagecorruptions_shim import load_imagecorruptions  # noqa: E402 - test-only reference


def natural_images(n: int, size: int) -> np.ndarray:
    """``n`` uint8 (size, size, 3) crops of scikit-learn's two sample photographs."""
    from sklearn.datasets import load_sample_image

    out = []
    photos = [load_sample_image("china.jpg"), load_sample_image("flower.jpg")]
    rng = np.random.default_rng(0)
    for i in range(n):
        a = photos[i % 2]
        side = int(rng.integers(200, min(a.shape[:2])))
        top = int(rng.integers(0, a.shape[0] - side + 1))
        left = int(rng.integers(0, a.shape[1] - side + 1))
        t = torch.tensor(a[top : top + side, left : left + side]).permute(2, 0, 1).float()[None]
        t = F.interpolate(t, size=(size, size), mode="area")[0]
        out.append(t.round().clamp(0, 255).permute(1, 2, 0).numpy().astype(np.uint8))
    return np.stack(out)


def bench(size: int, n: int, device: str, per_corruption: dict | None = None) -> tuple[float, float]:
    from robaudit.attacks import corruptions as rc

    ic = load_imagecorruptions()
    imgs = natural_images(n, size)
    x = torch.tensor(imgs).permute(0, 3, 1, 2).float().div(255).to(device)
    total_ours = total_ref = 0.0
    print(f"\n== {n} images at {size}x{size} on {device} (times in s for 5 severities) ==")
    print(f"{'corruption':18s} {'robaudit':>9s} {'imagecorr.':>10s} {'ratio':>7s}")
    for name in rc.CORRUPTIONS:
        gen = torch.Generator().manual_seed(0)
        rc.corrupt(x[:2], name, 3, generator=gen)  # warm-up (lazy imports, allocator)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for sev in range(1, 6):
            rc.corrupt(x, name, sev, generator=gen)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        ours = time.perf_counter() - t0
        np.random.seed(0)
        t0 = time.perf_counter()
        for sev in range(1, 6):
            for img in imgs:
                ic.corrupt(img, corruption_name=name, severity=sev)
        ref = time.perf_counter() - t0
        total_ours += ours
        total_ref += ref
        print(f"{name:18s} {ours:9.3f} {ref:10.3f} {ref / ours:6.1f}x")
        if per_corruption is not None:
            per_corruption[name] = {"robaudit_s": ours, "imagecorruptions_s": ref}
    print(f"{'TOTAL':18s} {total_ours:9.3f} {total_ref:10.3f} {total_ref / total_ours:6.1f}x")
    return total_ours, total_ref


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: same as the reference)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 224])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    try:
        import cv2

        cv2.setNumThreads(args.threads)
    except ImportError:
        pass
    counts = {32: 64, 224: 8}
    result: dict = {"threads": args.threads, "device": args.device, "sizes": {}}
    for size in args.sizes:
        per: dict = {}
        ours, ref = bench(size, counts.get(size, 8), args.device, per)
        result["sizes"][str(size)] = {"images": counts.get(size, 8), "robaudit_s": ours, "imagecorruptions_s": ref,
                                      "per_corruption": per}
    print("RESULT_JSON " + json.dumps(result))  # machine-readable line for benchmarks/run_all.py


if __name__ == "__main__":
    main()
