"""Deterministic seeds: sha256 of the key parts, never Python's salted ``hash``."""

from __future__ import annotations

import hashlib

import torch


def derive_seed(root_seed: int, *parts: object) -> int:
    """A 63-bit seed from ``root_seed`` and any printable key parts (variant, stage, unit)."""
    text = "\x1f".join([str(int(root_seed)), *(str(p) for p in parts)])
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` seeded with ``seed`` on ``device``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def hash_ids(ids: list[str] | tuple[str, ...]) -> str:
    """sha256 of an ordered list of sample ids (the data provenance hash)."""
    h = hashlib.sha256()
    for sid in ids:
        h.update(sid.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()
