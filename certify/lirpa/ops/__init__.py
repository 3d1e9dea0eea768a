"""Bound-propagation operators: one file per op family."""
