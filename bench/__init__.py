"""The benchmark suite: `python -m bench.run` (see bench/run.py and docs/performance.md)."""
