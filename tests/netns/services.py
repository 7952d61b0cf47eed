"""The tests' name for `stubresolver.demo.services`."""

from stubresolver.demo.services import Services

__all__ = ["Services"]
