"""Argument types shared by the command-line tools (argparse answers a bad value with exit 2)."""

from __future__ import annotations

import argparse


def positive_int(value: str) -> int:
    """An ``int`` ≥ 1 (counts of calls, rounds, callers, images)."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n
