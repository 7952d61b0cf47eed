"""The tunnel state the monitor publishes and every layer reads (DESIGN.md, "Gate")."""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class TunnelState:
    """A snapshot of the tunnel.

    ``up`` is true only when a matching interface exists, has IFF_UP and IFF_RUNNING (or
    IFF_LOWER_UP) set and carries at least one address. ``epoch`` increases on every
    change of any field; anything pooled or in flight under an older epoch is stale.
    """

    up: bool
    ifname: str | None
    ifindex: int | None
    addresses: tuple[str, ...]
    epoch: int
    #: The publishing monitor's current epoch, read at use: netbind makes no socket for a
    #: state that is no longer current (issue 7). None for a state no monitor published.
    current_epoch: Callable[[], int] | None = field(default=None, compare=False, repr=False)

    @property
    def stale(self) -> bool:
        """True once the monitor has published a newer epoch than this state's."""
        current = self.current_epoch
        return current is not None and current() != self.epoch

    def address_for(self, family: int) -> str | None:
        """The first tunnel address of ``family`` (AF_INET / AF_INET6), or None. Asked for
        every upstream socket made: the answer is remembered per address list."""
        return _first_of_family(self.addresses, family == socket.AF_INET)

    @property
    def label(self) -> str:
        """The interface name for messages, or the configured patterns' stand-in."""
        return self.ifname or "tunnel"


@functools.lru_cache(maxsize=64)
def _first_of_family(addresses: tuple[str, ...], v4: bool) -> str | None:
    for addr in addresses:
        if (ipaddress.ip_address(addr).version == 4) == v4:
            return addr
    return None


DOWN = TunnelState(up=False, ifname=None, ifindex=None, addresses=(), epoch=0)
