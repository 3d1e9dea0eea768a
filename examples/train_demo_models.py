"""Train and export robaudit's shipped demo models (deterministic, CPU only).

Run from the repository root (about 25 minutes of wall time on a shared 2-core machine)::

    .venv/bin/python examples/train_demo_models.py                 # everything -> examples/models/
    .venv/bin/python examples/train_demo_models.py --only vit --out /tmp/models

Data: robaudit's own digits loader (``load_dataset("digits", shape=(3, 32, 32), ...)``),
so the train/test split is exactly the audit's. The networks take normalised input
``(x - 0.5) / 0.5``; augmentation and noise act on [0, 1] pixels before normalisation.

Models (factories in ``examples/demo_models.py``; recipes in :data:`RECIPES`):

* ``digits_cnn`` (seed 0) and siblings ``digits_cnn_seed{1,2,3}``: LiRPA-friendly CNN,
  Adam + cosine schedule, random +-2 px translations, Gaussian noise sigma=0.25 (unclipped,
  pixel space) on the first half of every batch so that randomized smoothing certifies.
* ``digits_vit``: tiny timm ViT (patch 4, dim 64, depth 4), AdamW + warmup/cosine,
  label smoothing 0.1, random affine augmentation (rotation, scale, shear, translation).

Measured (digits test split, 359 images; torch 2.14.1, 1 thread, 2 heavily shared cores):

    model              clean acc  acc @ sigma 0.25  train time
    digits_cnn         0.9944     0.9972            181 s
    digits_cnn_seed1   0.9972     0.9944            145 s
    digits_cnn_seed2   0.9944     0.9916             83 s
    digits_cnn_seed3   0.9972     0.9972            104 s
    digits_vit         0.9916     0.5292            818 s  (no noise training)

    ONNX vs torch, max |logit diff| on 64 test images: cnn 4.8e-06, vit 2.2e-06.
    ViT: batch 64 / lr 2e-3 / stronger affine barely learned (22% after 5 epochs, loss 2.09);
    batch 32 / lr 1e-3 / 2 warmup epochs / milder affine: 36% at epoch 5, 90% at 10, 99.2% at 40.

Reproducibility: seeds are fixed, every random draw uses an explicit ``torch.Generator``,
``torch.use_deterministic_algorithms(True)`` is on and the thread count is fixed
(``--threads``, default 1). Bit-identical weights need the same torch build, CPU
instruction set and thread count; a rerun of ``--only cnn`` here reproduced
``digits_cnn.safetensors`` and ``digits_cnn.onnx`` byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_models import CLASS_NAMES, MEAN, STD, make_cnn, make_vit  # noqa: E402

NOISE_SIGMA = 0.25
RECIPES: dict[str, dict] = {
    "cnn": {"epochs": 12, "batch": 64, "lr": 2e-3, "weight_decay": 0.0, "max_shift": 2,
            "noise_sigma": NOISE_SIGMA, "noise_fraction": 0.5, "optimizer": "adam", "schedule": "cosine"},
    "vit": {"epochs": 40, "batch": 32, "lr": 1e-3, "weight_decay": 0.05, "warmup_epochs": 2,
            "label_smoothing": 0.1, "rotate_deg": 10, "scale": [0.9, 1.1], "shear_deg": 5, "max_shift": 2,
            "optimizer": "adamw", "schedule": "warmup+cosine"},
}
SEEDS = {"digits_cnn": 0, "digits_cnn_seed1": 1, "digits_cnn_seed2": 2, "digits_cnn_seed3": 3, "digits_vit": 0}


def normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, -1, 1, 1)
    std = torch.tensor(STD).view(1, -1, 1, 1)
    return (x - mean) / std


def translate(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by an integer offset in [-max_shift, max_shift]^2 (zero fill)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    offs = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=gen)
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offs.tolist())])


def random_affine(x: torch.Tensor, recipe: dict, gen: torch.Generator) -> torch.Tensor:
    """Random rotation, scale, shear and translation (bilinear, zero fill)."""
    n, _, h, _ = x.shape
    u = torch.rand((n, 5), generator=gen) * 2 - 1
    rot = u[:, 0] * math.radians(recipe["rotate_deg"])
    lo, hi = recipe["scale"]
    scale = lo + (u[:, 1] + 1) / 2 * (hi - lo)
    shear = u[:, 2] * math.radians(recipe["shear_deg"])
    shift = u[:, 3:] * (2 * recipe["max_shift"] / h)
    cos, sin = torch.cos(rot), torch.sin(rot)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = cos / scale
    theta[:, 0, 1] = (-sin + torch.tan(shear) * cos) / scale
    theta[:, 1, 0] = sin / scale
    theta[:, 1, 1] = cos / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False).clamp(0, 1)


@torch.no_grad()
def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, sigma: float = 0.0, seed: int = 0) -> float:
    """Top-1 accuracy on [0, 1] images, optionally with Gaussian pixel noise of std ``sigma``."""
    net.eval()
    if sigma > 0:
        x = x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    pred = torch.cat([net(normalize(x[i : i + 256])).argmax(1) for i in range(0, len(x), 256)])
    return float((pred == y).float().mean())


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return 0.5 * base * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train(kind: str, seed: int, data: dict) -> tuple[nn.Module, float]:
    """Train one model from scratch; returns it (eval mode) and the wall time in seconds."""
    recipe = RECIPES[kind]
    torch.manual_seed(seed)  # weight initialisation (the factories use the global RNG)
    net = make_cnn() if kind == "cnn" else make_vit()
    gen = torch.Generator().manual_seed(1000 + seed)
    x, y = data["train"]
    steps_per_epoch = math.ceil(len(x) / recipe["batch"])
    total = recipe["epochs"] * steps_per_epoch
    warmup = recipe.get("warmup_epochs", 0) * steps_per_epoch
    if kind == "cnn":
        opt = torch.optim.Adam(net.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    else:
        decay = [p for n, p in net.named_parameters() if p.ndim >= 2 and "pos_embed" not in n]
        no_decay = [p for n, p in net.named_parameters() if not (p.ndim >= 2 and "pos_embed" not in n)]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": recipe["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
            lr=recipe["lr"],
        )
    start, step = time.perf_counter(), 0
    for epoch in range(recipe["epochs"]):
        net.train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), recipe["batch"]):
            idx = perm[i : i + recipe["batch"]]
            xb, yb = x[idx], y[idx]
            if kind == "cnn":
                xb = translate(xb, recipe["max_shift"], gen)
                k = int(round(len(xb) * recipe["noise_fraction"]))
                noise = torch.randn(xb[:k].shape, generator=gen) * recipe["noise_sigma"]
                xb = torch.cat([xb[:k] + noise, xb[k:]])
                loss = F.cross_entropy(net(normalize(xb)), yb)
            else:
                xb = random_affine(xb, recipe, gen)
                loss = F.cross_entropy(net(normalize(xb)), yb, label_smoothing=recipe["label_smoothing"])
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, warmup, recipe["lr"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if kind == "vit":
                nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            step += 1
        if (epoch + 1) % 5 == 0 or epoch + 1 == recipe["epochs"]:
            acc = accuracy(net, *data["test"])
            print(f"  [{kind} seed {seed}] epoch {epoch + 1}/{recipe['epochs']} loss {loss.item():.3f} "
                  f"test acc {acc:.4f} ({time.perf_counter() - start:.0f}s)", flush=True)
    return net.eval(), time.perf_counter() - start


def export_onnx(net: nn.Module, path: Path, sample: torch.Tensor) -> float:
    """Export ``net`` (normalised input) to ONNX with robaudit metadata; returns max |ort - torch|."""
    import onnx
    import onnxruntime as ort

    net.eval()
    torch.onnx.export(
        net, (normalize(sample[:2]),), str(path), dynamo=False, opset_version=17,
        input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    model = onnx.load(str(path))
    meta = {"robaudit.mean": json.dumps(list(MEAN)), "robaudit.std": json.dumps(list(STD)),
            "robaudit.class_names": json.dumps(list(CLASS_NAMES))}
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    xn = normalize(sample)
    with torch.no_grad():
        ref = net(xn).numpy()
    got = sess.run(["logits"], {"input": xn.numpy()})[0]
    return float(abs(got - ref).max())


def save(net: nn.Module, name: str, kind: str, out: Path) -> Path:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().clone() for k, v in net.state_dict().items()}
    facts = {"architecture": kind, "seed": SEEDS[name], "recipe": RECIPES[kind], "mean": list(MEAN), "std": list(STD)}
    # one metadata key: safetensors orders several keys arbitrarily, which would break byte-identical reruns
    meta = {"robaudit": json.dumps(facts, sort_keys=True)}
    path = out / f"{name}.safetensors"
    save_file(state, str(path), metadata=meta)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest(out: Path, data: dict) -> None:
    """(Re)write MODELS.md from the files present in ``out``, evaluating each one."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    lines = ["# Demo models", "", "Generated by `examples/train_demo_models.py`; factories in "
             "`examples/demo_models.py`. Networks take normalised input: mean = std = (0.5, 0.5, 0.5) "
             "on [0, 1] pixels. Test split: robaudit digits test split (359 images, 32x32 RGB). "
             "Noisy accuracy: one draw of Gaussian pixel noise sigma = 0.25, unclipped.", "",
             "| file | architecture | seed | recipe | test acc | acc @ sigma 0.25 | sha256 |",
             "|---|---|---|---|---|---|---|"]
    for name in SEEDS:
        path = out / f"{name}.safetensors"
        if not path.exists():
            continue
        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["robaudit"])
        kind = meta["architecture"]
        net = make_cnn() if kind == "cnn" else make_vit()
        net.load_state_dict(load_file(str(path)), strict=True)
        acc, noisy = accuracy(net, *data["test"]), accuracy(net, *data["test"], sigma=NOISE_SIGMA)
        arch = ARCH_TEXT[kind]
        lines.append(f"| `{path.name}` | {arch} | {meta['seed']} | `{json.dumps(meta['recipe'], sort_keys=True)}` | {acc:.4f} | "
                     f"{noisy:.4f} | `{sha256(path)}` |")
        onnx_path = out / f"{name}.onnx"
        if onnx_path.exists():
            lines.append(f"| `{onnx_path.name}` | ONNX export of `{path.name}` (opset 17, input `input` "
                         f"N x 3 x 32 x 32 normalised, output `logits`) | | | | | `{sha256(onnx_path)}` |")
    (out / "MODELS.md").write_text("\n".join(lines) + "\n")


ARCH_TEXT = {
    "cnn": "Conv(3,16,3,1,1)-ReLU-Conv(16,32,4,2,1)-ReLU-Conv(32,32,4,2,1)-ReLU-Flatten-Linear(2048,100)-"
           "ReLU-Linear(100,10)",
    "vit": "timm VisionTransformer img 32, patch 4, dim 64, depth 4, heads 4, mlp_ratio 2, CLS token",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "models")
    parser.add_argument("--only", nargs="+", choices=["cnn", "vit", "siblings", "manifest"], default=None,
                        help="train only these groups ('manifest': just rewrite MODELS.md)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    from robaudit.data import load_dataset

    data = {}
    for split in ("train", "test"):
        ds = load_dataset("digits", shape=(3, 32, 32), num_classes=10, split=split)
        data[split] = (ds.x, ds.y)
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = {"cnn": ["digits_cnn"], "siblings": ["digits_cnn_seed1", "digits_cnn_seed2", "digits_cnn_seed3"],
            "vit": ["digits_vit"]}
    groups = args.only or list(jobs)
    names = [n for group in groups for n in jobs.get(group, [])]
    for name in names:
        kind = "vit" if name == "digits_vit" else "cnn"
        net, seconds = train(kind, SEEDS[name], data)
        path = save(net, name, kind, args.out)
        acc = accuracy(net, *data["test"])
        noisy = accuracy(net, *data["test"], sigma=NOISE_SIGMA)
        print(f"{name}: test acc {acc:.4f}, acc @ sigma {NOISE_SIGMA} {noisy:.4f}, "
              f"trained in {seconds:.0f}s -> {path}", flush=True)
        if name in ("digits_cnn", "digits_vit"):
            diff = export_onnx(net, args.out / f"{name}.onnx", data["test"][0][:64])
            print(f"{name}.onnx: max |onnxruntime - torch| logit diff {diff:.2e}", flush=True)
    write_manifest(args.out, data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
