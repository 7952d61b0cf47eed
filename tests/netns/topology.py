"""The tests' name for `stubresolver.demo.topology` (the world moved into the package so that
`stubresolver demo` ships it), plus the repository root the tests run the stub from."""

from pathlib import Path
from typing import Final

from stubresolver.demo.topology import (
    C_ISP_ADDR,
    C_ISP_ADDR6,
    C_TUN_ADDR,
    CLONE_NEWNET,
    ISP_C_ADDR,
    ISP_C_ADDR6,
    ISP_FORGED_ANSWER,
    ISP_VPN_ADDR,
    KINDS,
    LOAD_ADDR,
    LOAD_ZONE,
    NETNS_RUN_DIR,
    OVPN_PORT,
    VPN_ALLOW,
    VPN_ISP_ADDR,
    VPN_TUN_ADDR,
    VPN_ZONE,
    WATCHED_PORTS,
    WAYS,
    WG_PORT,
    WG_RUN_DIR,
    WWW_ADDR,
    WWW_NAME,
    Topology,
    netns_usable,
    run,
    socket_in_netns,
)
from stubresolver.errors import WorldError

REPO_ROOT: Final = Path(__file__).resolve().parents[2]

__all__ = [
    "CLONE_NEWNET",
    "C_ISP_ADDR",
    "C_ISP_ADDR6",
    "C_TUN_ADDR",
    "ISP_C_ADDR",
    "ISP_C_ADDR6",
    "ISP_FORGED_ANSWER",
    "ISP_VPN_ADDR",
    "KINDS",
    "LOAD_ADDR",
    "LOAD_ZONE",
    "NETNS_RUN_DIR",
    "OVPN_PORT",
    "REPO_ROOT",
    "VPN_ALLOW",
    "VPN_ISP_ADDR",
    "VPN_TUN_ADDR",
    "VPN_ZONE",
    "WATCHED_PORTS",
    "WAYS",
    "WG_PORT",
    "WG_RUN_DIR",
    "WWW_ADDR",
    "WWW_NAME",
    "Topology",
    "WorldError",
    "netns_usable",
    "run",
    "socket_in_netns",
]
