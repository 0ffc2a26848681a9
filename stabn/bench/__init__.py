"""Benchmarks, run as ``python -m stabn.bench <name>``; see ``--help``."""
