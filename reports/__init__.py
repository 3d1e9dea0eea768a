"""Renderers of results.json: HTML, JUnit, Markdown (installed as robaudit.reports)."""
