"""Audit stages built on robaudit's attacks: robust accuracy and the eps sweep / power law."""
