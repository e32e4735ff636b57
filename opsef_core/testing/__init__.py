"""Helpers for tests and examples: writers of small but valid microscopy files."""

from .lif import write_lif

__all__ = ["write_lif"]
