"""Audit stages built on robaudit's attacks (one stage per file)."""
