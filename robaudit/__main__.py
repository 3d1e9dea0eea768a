"""``python -m robaudit`` (also what ``torchrun -m robaudit`` runs)."""

from robaudit.cli import entry

entry()
