"""Attacks and corruptions (installed as robaudit.attacks)."""
