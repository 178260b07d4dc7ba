"""The relay benchmark: `python bench/bench.py` (see the README's "Benchmark" section)."""
