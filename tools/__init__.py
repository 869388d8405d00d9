"""Measurement scripts, run from the repo root (python tools/bench.py); tests import them (from tools import bench)."""
