"""Fixtures shared across test packages: ``service`` (a real gateway + worker on loopback)."""

from tests.harness import service

__all__ = ["service"]
