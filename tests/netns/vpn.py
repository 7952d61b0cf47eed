"""The tests' name for `stubresolver.demo.vpn`."""

from stubresolver.demo.vpn import Vpn

__all__ = ["Vpn"]
