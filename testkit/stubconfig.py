"""stubresolver configs for the bench's runs on loopback (``tunnel.interfaces: [lo]``).

Written as YAML text, the form a user writes (the keys are those of config.example.yaml),
so a run also proves the config parses as shipped.
"""

from __future__ import annotations


def _cache_and_rest(max_entries: int, max_bytes: int) -> list[str]:
    return [
        "cache:",
        "  enabled: true",
        f"  max_entries: {max_entries}",
        f"  max_bytes: {max_bytes}",
        "logging:",
        "  level: warning",
        "  queries: false",
        'control_socket: ""',  # no control socket needed for measuring
        "",
    ]


def _head(listen_ip: str, listen_port: int) -> list[str]:
    return [
        f'listen: ["{listen_ip}:{listen_port}"]',
        "tunnel:",
        '  interfaces: ["lo"]',
        "  poll_interval: 5.0",
        "upstreams:",
    ]


def plain_stub_config(
    listen_ip: str,
    listen_port: int,
    upstream_ip: str,
    upstream_port: int,
    *,
    udp_batch: bool = True,
) -> str:
    """One plain ``udp://`` upstream; room for the 100,000-entry RSS measurement plus the
    10,000 hit names in the cache. ``udp_batch``: server.udp_batch (recvmmsg/sendmmsg)."""
    return "\n".join(
        [
            *_head(listen_ip, listen_port),
            f"  - udp://{upstream_ip}:{upstream_port}",
            "server:",
            f"  udp_batch: {'true' if udp_batch else 'false'}",
            *_cache_and_rest(200_000, 67_108_864),
        ]
    )


def encrypted_stub_config(listen_ip: str, listen_port: int, url: str, ca_file: str) -> str:
    """One encrypted upstream (a mapping with ``ca_file``)."""
    return "\n".join(
        [
            *_head(listen_ip, listen_port),
            f'  - url: "{url}"',
            f'    ca_file: "{ca_file}"',
            *_cache_and_rest(400_000, 134_217_728),
        ]
    )


def upstream_url(scheme: str, ip: str, port: int, auth_name: str, path: str) -> str:
    """``tls://IP:PORT#name`` (RFC 7858) or ``https://IP:PORT/path#name`` (RFC 8484)."""
    if scheme == "tls":
        return f"tls://{ip}:{port}#{auth_name}"
    if scheme == "https":
        return f"https://{ip}:{port}{path}#{auth_name}"
    raise ValueError(f"not an encrypted scheme: {scheme!r}")
