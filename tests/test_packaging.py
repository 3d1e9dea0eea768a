"""Packaging: every package directory is in pyproject's explicit list; imports have no heavy side effects."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAPPING = {"robaudit": "robaudit", "attacks": "robaudit.attacks", "certify": "robaudit.certify",
           "reports": "robaudit.reports"}


def test_every_package_directory_is_listed() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for top, dotted in MAPPING.items():
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            found.add(".".join((dotted, *rel)))
    assert found == listed, f"missing from pyproject: {sorted(found - listed)}; stale: {sorted(listed - found)}"


def test_import_robaudit_is_light() -> None:
    code = ("import sys, robaudit, robaudit.registry, robaudit.results; "
            "heavy = [m for m in ('torch', 'timm', 'onnxruntime', 'sklearn') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
