"""Sizes rounded up to buckets, so that data a little larger than last night's compiles to the same program.

Pure: no JAX, no Prefect, no MLflow.
"""

from __future__ import annotations


def round_up(n: int, multiple: int) -> int:
    """``n`` rounded up to a multiple of ``multiple`` (both >= 1)."""
    if n < 1 or multiple < 1:
        raise ValueError(f"n and the multiple must be >= 1, got {n} and {multiple}")
    return -(-n // multiple) * multiple


def power_of_two(n: int) -> int:
    """The power of two at or above ``n`` (>= 1)."""
    return 1 << (max(int(n), 1) - 1).bit_length()
