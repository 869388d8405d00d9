"""Measurement scripts, run from the repo root (python -m tools.bench, python tools/soak.py); tests import them."""
