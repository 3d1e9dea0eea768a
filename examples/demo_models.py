"""Factories for robaudit's shipped demo models (32x32 RGB digits, 10 classes).

Guarantee: each factory builds the exact architecture whose trained weights ship in
``examples/models/`` (see ``examples/models/MODELS.md``), so
``net.load_state_dict(safetensors.torch.load_file(path), strict=True)`` succeeds.
The networks take NORMALISED input ``(x - 0.5) / 0.5`` for ``x`` in [0, 1]; the audit
config declares ``mean = std = (0.5, 0.5, 0.5)`` so the adapter does the normalisation.

Use them in an audit config as a factory, e.g. ``examples.demo_models:make_cnn`` with
``examples/models/digits_cnn.safetensors`` (repository root on ``sys.path``), or load
:func:`load_demo_model` directly. Weights are trained by ``examples/train_demo_models.py``.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
INPUT_SHAPE = (3, 32, 32)
NUM_CLASSES = 10
CLASS_NAMES = tuple(str(i) for i in range(NUM_CLASSES))
MODELS_DIR = Path(__file__).resolve().parent / "models"


def make_cnn() -> nn.Sequential:
    """A small LiRPA-friendly CNN: only Conv2d, ReLU, Flatten and Linear (no BN, no pooling).

    Conv(3,16,3,s1,p1)-ReLU-Conv(16,32,4,s2,p1)-ReLU-Conv(32,32,4,s2,p1)-ReLU-Flatten-
    Linear(2048,100)-ReLU-Linear(100,10); about 233k parameters.

    Returns:
        An ``nn.Sequential`` in training mode with default (global-RNG) initialisation.
    """
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=1, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, 100),
        nn.ReLU(),
        nn.Linear(100, NUM_CLASSES),
    )


def make_vit() -> nn.Module:
    """A tiny timm VisionTransformer: 32x32 input, 4x4 patches (64 tokens + CLS).

    embed_dim 64, depth 4, 4 heads, mlp_ratio 2, class-token pooling. Its blocks use
    ``timm.layers.Attention``, so robaudit's attention analysis can hook them.

    Returns:
        A ``timm.models.vision_transformer.VisionTransformer`` in training mode.
    """
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=32,
        patch_size=4,
        in_chans=3,
        num_classes=NUM_CLASSES,
        global_pool="token",
        embed_dim=64,
        depth=4,
        num_heads=4,
        mlp_ratio=2.0,
        class_token=True,
    )


FACTORIES = {
    "digits_cnn": make_cnn,
    "digits_cnn_seed1": make_cnn,
    "digits_cnn_seed2": make_cnn,
    "digits_cnn_seed3": make_cnn,
    "digits_vit": make_vit,
}


def load_demo_model(name: str, models_dir: str | Path | None = None) -> nn.Module:
    """Build demo model ``name`` (a key of :data:`FACTORIES`) and load its shipped weights.

    Args:
        name: e.g. ``"digits_cnn"`` or ``"digits_vit"``.
        models_dir: folder holding ``<name>.safetensors`` (default: ``examples/models``).

    Returns:
        The network in eval mode (expects normalised input; see :data:`MEAN`, :data:`STD`).

    Raises:
        KeyError: unknown name (the message lists the known ones).
        FileNotFoundError: the weights file is missing (run examples/train_demo_models.py).
    """
    from safetensors.torch import load_file

    if name not in FACTORIES:
        raise KeyError(f"unknown demo model {name!r}; choose one of {sorted(FACTORIES)}")
    path = Path(models_dir or MODELS_DIR) / f"{name}.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `python examples/train_demo_models.py`")
    net = FACTORIES[name]()
    net.load_state_dict(load_file(str(path)), strict=True)
    return net.eval()
