"""Attention images and explanation metrics."""
