"""stubresolver: a fail-closed local DNS stub that forwards only through the VPN tunnel."""

__version__ = "0.1.0"
