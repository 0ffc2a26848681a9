"""Training loop, evaluation routine and distributed helpers."""
