"""Model definitions, registry and weight loading (the bottom layer: torch, smp, timm only)."""
