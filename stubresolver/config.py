"""Config: YAML -> frozen dataclasses, validated once (DESIGN.md "config", STYLE.md 8).

Every error names the key path (``upstreams[1].url``) and what is wrong, and is raised before
anything binds a socket or touches the system. No raw dict travels past this module.
"""

from __future__ import annotations

import ipaddress
import math
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml
from dnslib import CLASS, QTYPE, RR, DNSBuffer

from stubresolver.access import LOOPBACK, Network, is_loopback_only
from stubresolver.cache import CacheLimits
from stubresolver.errors import ConfigError

T = TypeVar("T")

DEFAULT_PORTS = {"udp": 53, "tcp": 53, "tls": 853, "https": 443}
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.:@*?\[\]-]{1,15}$")
# A host name in A-label (ASCII) form: LDH labels of 1-63 characters (RFC 1123 2.1).
_HOSTNAME_RE = re.compile(r"(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?)+")
_URL_PATH_RE = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*")
_SINGLE_LABEL = ("nxdomain", "forward")
_LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_CONTROL_SOCKET = "/run/stubresolver/control.sock"
#: The upstream that stands for the DNS servers the VPN client announced (issue 9).
VPN_UPSTREAM = "vpn"
#: takeover.mode values (issue 9): one per DNS manager backend, "auto" to detect it, "off".
TAKEOVER_MODES = ("off", "auto", "file", "systemd-resolved", "networkmanager", "resolvconf")
# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL (unix(7)).
_SUN_PATH_MAX = 107


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """One address the server listens on, for both UDP and TCP."""

    host: str  # an IP literal
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class TunnelConfig:
    #: Interface names or shell globs, in order of preference: the first pattern with a
    #: usable interface gives the tunnel.
    interfaces: tuple[str, ...] = ("wg*", "tun*")
    #: Seconds between fallback polls; netlink events wake the monitor at once anyway.
    poll_interval: float = 5.0
    #: Device kinds a glob may match, beyond tun/tap/wireguard/ppp (exact names are trusted
    #: whatever their kind).
    kinds: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """One upstream; ``host`` is always an IP literal: nothing is ever looked up. The
    ``vpn`` upstream has no host: its servers are the ones the VPN client announces for the
    current tunnel (`stubresolver tunnel-up --dns`, upstream/vpn.py)."""

    url: str
    scheme: str  # "udp" | "tcp" | "tls" | "https" | "vpn"
    host: str
    port: int
    auth_name: str | None  # tls/https: name after '#', for SNI, verification, :authority
    path: str | None  # https: the request path
    timeout: float = 1.5  # seconds for one exchange (DESIGN.md: short, so blackholes end fast)
    ca_file: str | None = None  # tls/https: CA bundle instead of the system's
    spki_pins: tuple[str, ...] = ()  # tls/https: base64 SHA-256 of SubjectPublicKeyInfo


@dataclass(frozen=True, slots=True)
class Route:
    """``routes: {suffix: [upstream, ...]}``: one suffix, lower case, without the final dot."""

    suffix: str
    upstreams: tuple[UpstreamConfig, ...]


@dataclass(frozen=True, slots=True)
class CacheConfig:
    enabled: bool = True
    #: Drop every cached answer when the tunnel changes (an answer from the old path may
    #: reflect a network we have left).
    flush_on_tunnel_change: bool = True
    limits: CacheLimits = field(default_factory=CacheLimits)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    #: RFC 7766 6.2.3: close idle client TCP connections after this many seconds.
    tcp_idle_timeout: float = 10.0
    #: Seconds a client TCP connection may take to send one whole query once it has begun;
    #: then it is closed (bytes trickled one at a time are not activity).
    tcp_frame_timeout: float = 5.0
    #: Client TCP connections at once; at the cap the quietest idle one makes room, and when
    #: every connection awaits answers the new one is closed (RFC 7766 6.2.2).
    tcp_max_connections: int = 256
    #: Queries pipelined on one TCP connection waiting for answers at once.
    tcp_max_inflight: int = 64
    #: Distinct questions forwarded and awaiting an upstream at once (like dnsmasq's
    #: dns-forward-max); beyond it queries get SERVFAIL at once instead of piling up.
    max_forwards: int = 1024
    #: Client networks that may query; others get REFUSED (TCP: the connection is closed).
    #: Loopback only by default: no open resolver (RFC 5358).
    allow: tuple[Network, ...] = LOOPBACK
    #: The largest UDP reply we send, whatever the client advertises, and the size our OPT
    #: records advertise (RFC 6891 6.2.3-6.2.5). 1232 (DNS flag day 2020) fits a 1280-octet
    #: IPv6 MTU: inside a tunnel a bigger datagram fragments and is often lost. Larger
    #: answers go out truncated (TC=1) and the client retries over TCP.
    udp_max_payload: int = 1232
    #: After binding, taking over and opening netlink, run as this user (privilege.py),
    #: keeping only the capabilities the running service needs. "" (the default): keep
    #: running as the user that started it.
    user: str = ""
    #: The group to run as (default: ``user``'s primary group). When set, the control
    #: socket is this group's too (mode 0660), so unprivileged VPN hooks in it can call
    #: ``tunnel-down``; otherwise it stays 0600.
    group: str = ""
    #: Move UDP queries and their immediate answers with recvmmsg/sendmmsg, up to 64 per
    #: system call (mmsg.py); false: one recvfrom and one sendto per datagram.
    udp_batch: bool = True


@dataclass(frozen=True, slots=True)
class LocalRecord:
    """One ``local.records`` line, parsed by dnslib's zone parser into wire form."""

    name: bytes  # owner, wire form, lower case (names compare case-insensitively, RFC 4343)
    rtype: int
    ttl: int
    rdata: bytes  # wire form, no name compression (RFC 3597 4: safe for every type)


#: TTL of a local record whose line gives none: unbound's local-data default.
LOCAL_RECORD_TTL = 3600


class _UncompressedBuffer(DNSBuffer):  # type: ignore[misc]  # dnslib has no type hints
    """Names inside rdata are written in full: the rdata is copied into answers whose
    offsets differ, where a compression pointer would point at the wrong bytes."""

    def encode_name(self, name: object) -> None:
        self.encode_name_nocompress(name)


def parse_record(line: object, where: str) -> LocalRecord:
    """One zone-file line (RFC 1035 5.1) -> a LocalRecord; class IN only."""
    if not isinstance(line, str):
        raise ConfigError(where, f"must be a zone-file line string, got {_type_name(line)}")
    try:
        parsed = RR.fromZone(line, ttl=LOCAL_RECORD_TTL)
    except Exception as exc:  # dnslib raises bare ValueError, IndexError, DNSError, ...
        raise ConfigError(
            where, f"{line!r}: not a zone-file record ({exc or type(exc).__name__})"
        ) from None
    if len(parsed) != 1:
        raise ConfigError(where, f"{line!r}: must hold exactly one record, found {len(parsed)}")
    (rr,) = parsed
    if rr.rclass != CLASS.IN:
        raise ConfigError(where, f"{line!r}: only class IN records are served")
    if rr.rtype in _NOT_LOCAL_TYPES:
        raise ConfigError(
            where, f"{line!r}: a {QTYPE.get(rr.rtype)} record cannot be served locally"
        )
    try:
        owner = _UncompressedBuffer()
        owner.encode_name(rr.rname)
        rdata = _UncompressedBuffer()
        rr.rdata.pack(rdata)
    except Exception as exc:  # dnslib label and packing errors have no common base
        raise ConfigError(where, f"{line!r}: cannot be encoded ({exc})") from None
    if owner.data == b"\x00":
        raise ConfigError(where, f"{line!r}: the root cannot have local records")
    if not 0 <= rr.ttl < 2**31:
        raise ConfigError(where, f"{line!r}: TTL {rr.ttl} is out of range (RFC 2181 8)")
    return LocalRecord(bytes(owner.data).lower(), rr.rtype, rr.ttl, bytes(rdata.data))


# OPT (41) is a pseudo-record (RFC 6891); ANY/AXFR/IXFR (255/252/251) are query types only.
_NOT_LOCAL_TYPES = frozenset((41, 251, 252, 255))


@dataclass(frozen=True, slots=True)
class LocalConfig:
    #: Private/link-local ranges whose reverse (PTR) lookups go to the VPN instead of being
    #: answered NXDOMAIN locally (e.g. the VPN's own 10.8.0.0/24).
    reverse_via_vpn: tuple[Network, ...] = ()
    #: Names of one label (``printer.``): "nxdomain" answers them locally, "forward" sends
    #: them to the VPN's DNS (for a VPN that serves bare host names).
    single_label: str = "nxdomain"
    #: Records answered here at any tunnel state, never forwarded (like unbound local-data):
    #: one zone-file line each, e.g. ``printer.lan. 300 IN A 192.168.1.5``.
    records: tuple[LocalRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    #: AAAA queries: "auto" answers them NODATA while the tunnel has no IPv6 address (an
    #: IPv6 answer would send the client down a path outside the tunnel), "always" forwards
    #: them, "never" answers every one NODATA.
    aaaa: str = "auto"
    #: A file of names (one per line, ``#`` comments), answered NXDOMAIN with every name
    #: below them: public DoH providers, so browsers fall back to the system resolver.
    block_list: Path | None = None
    #: The names read from ``block_list``, in wire form, lower case.
    blocked: frozenset[bytes] = frozenset()


@dataclass(frozen=True, slots=True)
class GuardConfig:
    #: An nftables table (``inet stubresolver``) that drops every other program's DNS
    #: (53, 853) leaving outside the tunnel. Off by default: it changes the firewall, so
    #: only a config that asks for it (the installed one does) loads it.
    enabled: bool = False
    #: Port-53 traffic of other programs to any address is redirected to the stub, so a
    #: hard-coded resolver (8.8.8.8) gets answers through the tunnel instead of nothing.
    redirect_stray_dns: bool = True
    #: Keep the table after the stub stops or crashes: nothing resolves outside the tunnel
    #: even then. `stubresolver guard off` removes it.
    lockdown: bool = False
    #: More destination ports to drop outside the tunnel (other encrypted-DNS ports).
    extra_ports: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = "info"
    #: Log each query's name and outcome. Off by default: names are private (privacy rule).
    queries: bool = False


@dataclass(frozen=True, slots=True)
class TakeoverConfig:
    #: How the stub points the system's DNS at itself: one backend by name, "auto" to
    #: detect the DNS manager (takeover/detect.py), "off" to leave it alone. The default is
    #: "off", so a config without this key never changes the system; the packaged config
    #: sets "auto".
    mode: str = "off"
    #: Give back the original resolv.conf, byte for byte, on a clean stop (SIGTERM/SIGINT).
    #: A crash leaves ours in place: DNS then fails instead of leaking (fail-closed).
    restore_on_exit: bool = True
    #: The file to take over; a test points it at a scratch path.
    resolv_conf: Path = Path("/etc/resolv.conf")


@dataclass(frozen=True, slots=True)
class Config:
    #: The servers inside the tunnel; the one key without a default.
    upstreams: tuple[UpstreamConfig, ...]
    listen: tuple[ListenAddress, ...] = (ListenAddress("127.0.0.1", 53), ListenAddress("::1", 53))
    tunnel: TunnelConfig = field(default_factory=TunnelConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    local: LocalConfig = field(default_factory=LocalConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    #: Names the VPN client itself needs while the tunnel is down (its server, to reconnect):
    #: ``name: [address, ...]``, answered here at any tunnel state as A/AAAA records, so a
    #: reconnect needs no query outside the tunnel (issue 9).
    bootstrap_hosts: tuple[LocalRecord, ...] = ()
    #: The local control socket (`stubresolver status`, VPN hooks); None: no control socket.
    control_socket: Path | None = Path(DEFAULT_CONTROL_SOCKET)
    takeover: TakeoverConfig = field(default_factory=TakeoverConfig)
    #: Split DNS: names at or below a suffix go to that route's upstreams instead of
    #: ``upstreams``; the longest suffix wins. Every route's upstreams are bound to the
    #: tunnel like the others.
    routes: tuple[Route, ...] = ()
    #: Where the takeover journal lives (the original resolv.conf, the steps done), so a
    #: restart after a crash, or `stubresolver restore`, can give it back.
    state_dir: Path = Path("/var/lib/stubresolver")

    def all_upstreams(self) -> tuple[UpstreamConfig, ...]:
        """Every distinct upstream of ``upstreams`` and ``routes``, in the order written:
        one transport (one pool) each, however many routes name it."""
        seen: dict[UpstreamConfig, None] = dict.fromkeys(self.upstreams)
        for route in self.routes:
            seen.update(dict.fromkeys(route.upstreams))
        return tuple(seen)


# --- helpers -------------------------------------------------------------------------
#
# Every default lives once, in the dataclass field above (STYLE.md 13). A parser reads only
# the keys the file gives and constructs the dataclass with just those; a missing key takes
# the field's default. The allowed keys of a section are the field names.


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _field_names(*classes: type) -> tuple[str, ...]:
    return tuple(f.name for cls in classes for f in fields(cls))


def _mapping(value: object, path: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(path, f"must be a mapping, got {_type_name(value)}")
    return value


def _check_keys(section: Mapping[str, Any], allowed: tuple[str, ...], path: str) -> None:
    for key in section:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise ConfigError(where, f"unknown key (allowed: {', '.join(allowed)})")


def _where(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _get(section: Mapping[str, Any], key: str, path: str, kind: type[T] | tuple[type, ...]) -> T:
    """The value of a key the section gives, checked against ``kind``."""
    where = _where(path, key)
    value = section[key]
    if isinstance(value, bool) and kind is not bool and bool not in _as_tuple(kind):
        raise ConfigError(where, f"must be {_kind_text(kind)}, got a boolean")
    if kind is float and isinstance(value, int):
        value = float(value)
    if not isinstance(value, kind):
        raise ConfigError(where, f"must be {_kind_text(kind)}, got {_type_name(value)}")
    return value  # type: ignore[return-value]


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_text(kind: type | tuple[type, ...]) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return " or ".join(names.get(k, k.__name__) for k in _as_tuple(kind))


def _positive(value: float, where: str, *, allow_zero: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(where, f"must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def _list(section: Mapping[str, Any], key: str, path: str) -> list[Any]:
    """The value of a key the section gives, which must be a list."""
    value = section[key]
    if not isinstance(value, list):
        raise ConfigError(_where(path, key), f"must be a list, got {_type_name(value)}")
    return value


# --- sections ------------------------------------------------------------------------


def parse_listen(text: object, where: str) -> ListenAddress:
    if not isinstance(text, str):
        raise ConfigError(where, f"must be a string like 127.0.0.1:53, got {_type_name(text)}")
    match = re.fullmatch(
        r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([0-9.]+):(\d+)|\[([0-9A-Fa-f:.]+)\]|([0-9A-Fa-f:.]+)", text
    )
    if not match:
        raise ConfigError(where, f"{text!r} is not IP:port or [IPv6]:port")
    host = match.group(1) or match.group(3) or match.group(5) or match.group(6)
    port_text = match.group(2) or match.group(4) or "53"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(where, f"{host!r} is not an IP address") from None
    port = int(port_text)
    if not 0 < port < 65536:
        raise ConfigError(where, f"port {port} is out of range 1-65535")
    return ListenAddress(str(ip), port)


_UPSTREAM_OPTIONS = ("url", "timeout", "ca_file", "spki_pins")


def parse_upstream(item: object, where: str) -> UpstreamConfig:
    """``udp://IP[:port]``, ``tcp://IP[:port]``, ``tls://IP[:port]#name``,
    ``https://IP[:port]/path#name``; or a mapping with ``url`` and options."""
    options: Mapping[str, Any] = {}
    if isinstance(item, Mapping):
        options = item
        _check_keys(options, _UPSTREAM_OPTIONS, where)
        if "url" not in options:
            raise ConfigError(f"{where}.url", "is required")
        url = options["url"]
        url_where = f"{where}.url"
    else:
        url = item
        url_where = where
    if url == VPN_UPSTREAM:
        if options.keys() - {"url", "timeout"}:
            raise ConfigError(where, "the vpn upstream takes only timeout")
        vpn_timeout: dict[str, Any] = {}
        if "timeout" in options:
            vpn_timeout["timeout"] = _get(options, "timeout", where, float)
            _positive(vpn_timeout["timeout"], f"{where}.timeout")
        return UpstreamConfig(VPN_UPSTREAM, VPN_UPSTREAM, "", 53, None, None, **vpn_timeout)
    if not isinstance(url, str):
        raise ConfigError(url_where, f"must be a URL string, got {_type_name(url)}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ConfigError(
            url_where, f"{url!r}: scheme must be one of udp, tcp, tls, https (or the word vpn)"
        )
    if parts.username or parts.password or parts.query:
        raise ConfigError(url_where, f"{url!r}: user info and query strings are not allowed")
    host = parts.hostname
    if not host:
        raise ConfigError(url_where, f"{url!r}: missing server address")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        # DESIGN.md "No hidden paths": no bootstrap lookup through the system resolver.
        raise ConfigError(
            url_where, f"{url!r}: the server must be an IP address, never a name"
        ) from None
    if ip.is_unspecified or ip.is_multicast:
        # 0.0.0.0 / :: would mean "this host" to connect(); a multicast group is not a server.
        raise ConfigError(url_where, f"{url!r}: {ip} is not a unicast server address")
    try:
        explicit = parts.port
    except ValueError:
        raise ConfigError(url_where, f"{url!r}: invalid port") from None
    port = DEFAULT_PORTS[scheme] if explicit is None else explicit
    if not 0 < port < 65536:
        raise ConfigError(url_where, f"{url!r}: port {port} is out of range 1-65535")
    auth_name = parts.fragment or None
    if auth_name is not None and not _HOSTNAME_RE.fullmatch(auth_name):
        # It goes into SNI, certificate checks and :authority; ASCII (A-label) names only.
        raise ConfigError(url_where, f"{url!r}: #{auth_name} is not an ASCII host name")
    path: str | None = None
    if scheme in ("udp", "tcp"):
        if parts.path not in ("", "/") or auth_name:
            raise ConfigError(url_where, f"{url!r}: plain DNS takes no path or #name")
    elif scheme == "tls":
        if parts.path not in ("", "/"):
            raise ConfigError(url_where, f"{url!r}: tls:// takes no path")
        if not auth_name:
            # RFC 8310 strict profile: without a name there is nothing to authenticate.
            raise ConfigError(url_where, f"{url!r}: needs #auth-name for certificate checks")
    else:
        path = parts.path or "/dns-query"
        if not _URL_PATH_RE.fullmatch(path):
            # RFC 3986 3.3 path characters only (percent-encode the rest): it is sent as the
            # :path pseudo-header, which must be ASCII (RFC 9113 8.3.1).
            raise ConfigError(url_where, f"{url!r}: the path must be ASCII URL characters")
        if not auth_name:
            raise ConfigError(url_where, f"{url!r}: needs #host for TLS and :authority")
    given: dict[str, Any] = {}
    if "timeout" in options:
        given["timeout"] = _get(options, "timeout", where, float)
        _positive(given["timeout"], f"{where}.timeout")
    if "ca_file" in options:
        given["ca_file"] = _get(options, "ca_file", where, (str, type(None)))
    if "spki_pins" in options:
        pins: list[str] = []
        for index, pin in enumerate(_list(options, "spki_pins", where)):
            if not isinstance(pin, str) or not re.fullmatch(r"[A-Za-z0-9+/]{43}=", pin):
                raise ConfigError(
                    f"{where}.spki_pins[{index}]", "must be a base64 SHA-256 digest (44 characters)"
                )
            pins.append(pin)
        given["spki_pins"] = tuple(pins)
    upstream = UpstreamConfig(
        url=url,
        scheme=scheme,
        host=str(ip),
        port=port,
        auth_name=auth_name,
        path=path,
        **given,
    )
    if (upstream.ca_file or upstream.spki_pins) and scheme not in ("tls", "https"):
        raise ConfigError(where, "ca_file and spki_pins apply only to tls:// and https://")
    if upstream.ca_file is not None:
        _check_ca_file(upstream.ca_file, f"{where}.ca_file")
    return upstream


def _check_ca_file(path: str, where: str) -> None:
    """The one check of a CA bundle: it exists and loads as one (PEM certificates), so a
    bad file is a config error at check-config, never a failure at the first query."""
    if not Path(path).is_file():
        raise ConfigError(where, f"{path!r} is not a readable file")
    try:
        ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=path)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(where, f"cannot load {path!r} as a CA bundle: {exc}") from exc


def _parse_tunnel(raw: object) -> TunnelConfig:
    section = _mapping(raw, "tunnel")
    _check_keys(section, _field_names(TunnelConfig), "tunnel")
    given: dict[str, Any] = {}
    if "interfaces" in section:
        names = _list(section, "interfaces", "tunnel")
        if not names:
            raise ConfigError("tunnel.interfaces", "must name at least one interface or glob")
        for index, name in enumerate(names):
            if not isinstance(name, str) or not _IFNAME_RE.match(name):
                raise ConfigError(
                    f"tunnel.interfaces[{index}]",
                    f"{name!r} is not an interface name or glob (1-15 characters)",
                )
        given["interfaces"] = tuple(names)
    if "poll_interval" in section:
        given["poll_interval"] = _get(section, "poll_interval", "tunnel", float)
        _positive(given["poll_interval"], "tunnel.poll_interval")
    if "kinds" in section:
        kinds = _list(section, "kinds", "tunnel")
        for index, kind in enumerate(kinds):
            if not isinstance(kind, str) or not re.fullmatch(r"[a-z0-9_-]{1,32}", kind):
                raise ConfigError(
                    f"tunnel.kinds[{index}]",
                    f"{kind!r} is not a device kind (lower-case, like ether or ipip)",
                )
        given["kinds"] = tuple(kinds)
    return TunnelConfig(**given)


def _parse_cache(raw: object) -> CacheConfig:
    section = _mapping(raw, "cache")
    # The cache section is flat in YAML: CacheConfig's switches plus CacheLimits' numbers.
    switches = tuple(name for name in _field_names(CacheConfig) if name != "limits")
    numbers = _field_names(CacheLimits)
    _check_keys(section, switches + numbers, "cache")
    given: dict[str, Any] = {}
    for key in switches:
        if key in section:
            given[key] = _get(section, key, "cache", bool)
    counts: dict[str, int] = {}
    for key in numbers:
        if key in section:
            counts[key] = _get(section, key, "cache", int)
            if counts[key] < 0:
                raise ConfigError(f"cache.{key}", f"must be >= 0, got {counts[key]}")
    limits = CacheLimits(**counts)
    if limits.min_ttl > limits.max_ttl:
        raise ConfigError("cache.min_ttl", "must not be greater than cache.max_ttl")
    return CacheConfig(limits=limits, **given)


_UDP_PAYLOAD_MIN = 512
_UDP_PAYLOAD_MAX = 4096


def _parse_server(raw: object) -> ServerConfig:
    section = _mapping(raw, "server")
    _check_keys(section, _field_names(ServerConfig), "server")
    given: dict[str, Any] = {}
    for key in ("tcp_idle_timeout", "tcp_frame_timeout"):
        if key in section:
            given[key] = _get(section, key, "server", float)
            _positive(given[key], f"server.{key}")
    for key in ("tcp_max_connections", "tcp_max_inflight", "max_forwards"):
        if key in section:
            given[key] = _get(section, key, "server", int)
            if given[key] < 1:
                raise ConfigError(f"server.{key}", f"must be >= 1, got {given[key]}")
    if "udp_max_payload" in section:
        payload = _get(section, "udp_max_payload", "server", int)
        if not _UDP_PAYLOAD_MIN <= payload <= _UDP_PAYLOAD_MAX:
            # RFC 1035 4.2.1: 512 is every resolver's floor; past 4096 (RFC 6891 6.2.5's
            # suggested start) answers fragment on most paths.
            raise ConfigError(
                "server.udp_max_payload",
                f"must be between {_UDP_PAYLOAD_MIN} and {_UDP_PAYLOAD_MAX}, got {payload}",
            )
        given["udp_max_payload"] = payload
    if "udp_batch" in section:
        given["udp_batch"] = _get(section, "udp_batch", "server", bool)
    for key in ("user", "group"):
        if section.get(key) not in (None, ""):  # "" or null: the default, do not drop
            given[key] = _account_name(section, key)
    if "allow" in section:
        given["allow"] = _networks(section, "allow", "server")
        if not given["allow"]:
            raise ConfigError("server.allow", "must list at least one network (CIDR)")
    return ServerConfig(**given)


# A user or group name as useradd(8) accepts it by default (Debian's NAME_REGEX, shadow's
# is_valid_user_name): no leading digit or dash, so it can never be read as a number.
_ACCOUNT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,30}\$?")


def _account_name(section: Mapping[str, Any], key: str) -> str:
    """``server.user`` / ``server.group``: a name. Whether it exists is checked at start
    (privilege.py), before anything is bound, and by check-config."""
    name = _get(section, key, "server", str)
    if not _ACCOUNT_RE.fullmatch(name):
        raise ConfigError(f"server.{key}", f"{name!r} is not a user or group name")
    return name


def _networks(section: Mapping[str, Any], key: str, path: str) -> tuple[Network, ...]:
    nets: list[Network] = []
    for index, item in enumerate(_list(section, key, path)):
        where = f"{path}.{key}[{index}]"
        if not isinstance(item, str):
            raise ConfigError(where, f"must be a CIDR string, got {_type_name(item)}")
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(where, f"{item!r} is not a CIDR network") from None
    return tuple(nets)


def _parse_local(raw: object) -> LocalConfig:
    section = _mapping(raw, "local")
    _check_keys(section, _field_names(LocalConfig), "local")
    given: dict[str, Any] = {}
    if "reverse_via_vpn" in section:
        given["reverse_via_vpn"] = _networks(section, "reverse_via_vpn", "local")
    if "single_label" in section:
        single = _get(section, "single_label", "local", str)
        if single not in _SINGLE_LABEL:
            raise ConfigError(
                "local.single_label", f"{single!r} is not one of {', '.join(_SINGLE_LABEL)}"
            )
        given["single_label"] = single
    if "records" in section:
        records = tuple(
            parse_record(line, f"local.records[{i}]")
            for i, line in enumerate(_list(section, "records", "local"))
        )
        cname_at = {r.name for r in records if r.rtype == _TYPE_CNAME}
        for index, record in enumerate(records):
            if record.name in cname_at and record.rtype != _TYPE_CNAME:
                # RFC 2181 10.1: a name with a CNAME has no other data.
                raise ConfigError(
                    f"local.records[{index}]", "the name already has a CNAME (RFC 2181 10.1)"
                )
        if len([r for r in records if r.rtype == _TYPE_CNAME]) != len(cname_at):
            raise ConfigError("local.records", "a name has two CNAME records (RFC 2181 10.1)")
        given["records"] = records
    return LocalConfig(**given)


_TYPE_CNAME = 5
_TYPE_A = 1
_TYPE_AAAA = 28
#: TTL of a bootstrap answer: short, so a changed VPN server address is picked up soon.
BOOTSTRAP_TTL = 60


def _parse_bootstrap_hosts(raw: object) -> tuple[LocalRecord, ...]:
    hosts = _mapping(raw, "bootstrap_hosts")
    records: list[LocalRecord] = []
    for name, given in hosts.items():
        where = f"bootstrap_hosts.{name}"
        if not isinstance(name, str) or not name.strip(".") or not name.isascii():
            raise ConfigError(where, "must be an ASCII host name (an A-label for IDNs)")
        addresses = [given] if isinstance(given, str) else given
        if not isinstance(addresses, list) or not addresses:
            raise ConfigError(where, "must be an IP address or a list of them")
        owner = parse_record(f"{name.rstrip('.')}. {BOOTSTRAP_TTL} IN A 192.0.2.1", where).name
        for index, text in enumerate(addresses):
            try:
                ip = ipaddress.ip_address(text) if isinstance(text, str) else None
            except ValueError:
                ip = None
            if ip is None:
                raise ConfigError(f"{where}[{index}]", f"{text!r} is not an IP address")
            rtype = _TYPE_A if ip.version == 4 else _TYPE_AAAA
            records.append(LocalRecord(owner, rtype, BOOTSTRAP_TTL, ip.packed))
    return tuple(records)


_AAAA_POLICIES = ("auto", "always", "never")


def _parse_policy(raw: object) -> PolicyConfig:
    section = _mapping(raw, "policy")
    _check_keys(section, ("aaaa", "block_list"), "policy")
    given: dict[str, Any] = {}
    if "aaaa" in section:
        aaaa = _get(section, "aaaa", "policy", str)
        if aaaa not in _AAAA_POLICIES:
            raise ConfigError("policy.aaaa", f"{aaaa!r} is not one of {', '.join(_AAAA_POLICIES)}")
        given["aaaa"] = aaaa
    if section.get("block_list") not in (None, ""):
        path = _absolute_path(section, "block_list", "policy")
        given["block_list"] = path
        given["blocked"] = read_block_list(path, "policy.block_list")
    return PolicyConfig(**given)


def read_block_list(path: Path, where: str) -> frozenset[bytes]:
    """The names of a block-list file in wire form, lower case; errors name the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(where, f"cannot read {path}: {exc}") from None
    names: set[bytes] = set()
    for number, line in enumerate(text.splitlines(), 1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        if not name.isascii() or not name.strip("."):
            raise ConfigError(where, f"{path} line {number}: {name!r} is not an ASCII name")
        record = parse_record(f"{name.rstrip('.')}. 0 IN A 192.0.2.1", f"{where} line {number}")
        names.add(record.name)
    return frozenset(names)


def _parse_guard(raw: object) -> GuardConfig:
    section = _mapping(raw, "guard")
    _check_keys(section, _field_names(GuardConfig), "guard")
    given: dict[str, Any] = {}
    for key in ("enabled", "redirect_stray_dns", "lockdown"):
        if key in section:
            given[key] = _get(section, key, "guard", bool)
    if "extra_ports" in section:
        ports: list[int] = []
        for index, port in enumerate(_list(section, "extra_ports", "guard")):
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise ConfigError(f"guard.extra_ports[{index}]", f"{port!r} is not a port")
            ports.append(port)
        given["extra_ports"] = tuple(ports)
    return GuardConfig(**given)


def _parse_logging(raw: object) -> LoggingConfig:
    section = _mapping(raw, "logging")
    _check_keys(section, _field_names(LoggingConfig), "logging")
    given: dict[str, Any] = {}
    if "level" in section:
        level = _get(section, "level", "logging", str).lower()
        if level not in _LOG_LEVELS:
            raise ConfigError("logging.level", f"{level!r} is not one of {', '.join(_LOG_LEVELS)}")
        given["level"] = level
    if "queries" in section:
        given["queries"] = _get(section, "queries", "logging", bool)
    return LoggingConfig(**given)


def _parse_control_socket(top: Mapping[str, Any]) -> Path | None:
    """``control_socket``: an absolute path; ``""`` or null turns the control socket off."""
    if top["control_socket"] in (None, ""):
        return None
    text = _get(top, "control_socket", "", str)
    if not text.startswith("/"):
        raise ConfigError("control_socket", f"{text!r} must be an absolute path")
    if len(text.encode()) > _SUN_PATH_MAX or "\0" in text:
        raise ConfigError(
            "control_socket", f"{text!r} is not a usable UNIX socket path (at most 107 bytes)"
        )
    if text.endswith("/"):
        raise ConfigError("control_socket", f"{text!r} names a directory, not a socket file")
    return Path(text)


def _absolute_path(section: Mapping[str, Any], key: str, path: str) -> Path:
    text = _get(section, key, path, str)
    if not text.startswith("/") or "\0" in text:
        raise ConfigError(_where(path, key), f"{text!r} must be an absolute path")
    return Path(text)


def _parse_takeover(raw: object) -> TakeoverConfig:
    section = _mapping(raw, "takeover")
    _check_keys(section, _field_names(TakeoverConfig), "takeover")
    given: dict[str, Any] = {}
    if "mode" in section:
        # YAML 1.1 (PyYAML) reads a bare `off` as false; that is what the user wrote.
        mode = "off" if section["mode"] is False else _get(section, "mode", "takeover", str)
        if mode not in TAKEOVER_MODES:
            raise ConfigError(
                "takeover.mode",
                f"{mode!r} is not one of {', '.join(TAKEOVER_MODES)}",
            )
        given["mode"] = mode
    if "restore_on_exit" in section:
        given["restore_on_exit"] = _get(section, "restore_on_exit", "takeover", bool)
    if "resolv_conf" in section:
        given["resolv_conf"] = _absolute_path(section, "resolv_conf", "takeover")
        if str(section["resolv_conf"]).endswith("/"):
            raise ConfigError("takeover.resolv_conf", "names a directory, not a file")
    return TakeoverConfig(**given)


def _check_loopback_upstreams(
    upstreams: tuple[UpstreamConfig, ...],
    raw: list[Any],
    tunnel: TunnelConfig,
    path: str = "upstreams",
) -> None:
    """A loopback upstream is reachable only through `lo`: with a VPN tunnel it could only
    mean a local forwarder that itself sends queries who knows where (a leak path)."""
    if tunnel.interfaces == ("lo",):
        return
    for index, upstream in enumerate(upstreams):
        if upstream.scheme == VPN_UPSTREAM:
            continue  # its servers are checked when announced (announce.py)
        ip = ipaddress.ip_address(upstream.host)
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        if ip.is_loopback or (mapped is not None and mapped.is_loopback):
            where = (
                f"{path}[{index}].url" if isinstance(raw[index], Mapping) else f"{path}[{index}]"
            )
            raise ConfigError(
                where,
                f"{upstream.url!r}: a loopback upstream needs tunnel.interfaces: [lo] "
                "(queries must leave through the tunnel)",
            )


def normal_domain(text: object, where: str) -> str:
    """A domain suffix as written in ``routes`` or announced by a VPN: ASCII (A-label) host
    name syntax, lower case, without the final dot; the root is not a suffix here."""
    if not isinstance(text, str):
        raise ConfigError(where, f"must be a domain name, got {_type_name(text)}")
    name = text.strip().rstrip(".").lower()
    if not name:
        raise ConfigError(where, "the root is not a route: it is what `upstreams` serves")
    if not _HOSTNAME_RE.fullmatch(name) or any(len(label) > 63 for label in name.split(".")):
        raise ConfigError(where, f"{text!r} is not a domain name (ASCII labels, A-label form)")
    return name


def _parse_routes(value: object, tunnel: TunnelConfig) -> tuple[Route, ...]:
    section = _mapping(value, "routes")
    routes: list[Route] = []
    seen: set[str] = set()
    for key, items in section.items():
        where = f"routes.{key}"
        suffix = normal_domain(key, where)
        if suffix in seen:
            raise ConfigError(where, "the same suffix is routed twice")
        seen.add(suffix)
        if not isinstance(items, list) or not items:
            raise ConfigError(where, "must be a non-empty list of upstreams")
        upstreams = tuple(parse_upstream(item, f"{where}[{i}]") for i, item in enumerate(items))
        _check_loopback_upstreams(upstreams, items, tunnel, where)
        routes.append(Route(suffix, upstreams))
    return tuple(routes)


def parse_config(raw: object) -> Config:
    """Validate a decoded YAML document into a Config."""
    top = _mapping(raw, "")
    _check_keys(top, _field_names(Config), "")
    given: dict[str, Any] = {}
    if "listen" in top:
        listen_raw = _list(top, "listen", "")
        if not listen_raw:
            raise ConfigError("listen", "must contain at least one address")
        listen = tuple(parse_listen(item, f"listen[{i}]") for i, item in enumerate(listen_raw))
        if len(set(listen)) != len(listen):
            raise ConfigError("listen", "lists the same address twice")
        given["listen"] = listen
    if "upstreams" not in top:
        raise ConfigError("upstreams", "is required: at least one server inside the tunnel")
    ups_raw = _list(top, "upstreams", "")
    if not ups_raw:
        raise ConfigError("upstreams", "must contain at least one upstream")
    upstreams = tuple(parse_upstream(item, f"upstreams[{i}]") for i, item in enumerate(ups_raw))
    tunnel = _parse_tunnel(top.get("tunnel"))
    _check_loopback_upstreams(upstreams, ups_raw, tunnel)
    if "control_socket" in top:
        given["control_socket"] = _parse_control_socket(top)
    local = _parse_local(top.get("local"))
    if "bootstrap_hosts" in top:
        bootstrap = _parse_bootstrap_hosts(top["bootstrap_hosts"])
        aliases = {r.name for r in local.records if r.rtype == _TYPE_CNAME}
        if any(r.name in aliases for r in bootstrap):
            # RFC 2181 10.1: a name with a CNAME has no other data.
            raise ConfigError("bootstrap_hosts", "a name is also a CNAME in local.records")
        given["bootstrap_hosts"] = bootstrap
    if "state_dir" in top:
        given["state_dir"] = _absolute_path(top, "state_dir", "")
    if "routes" in top:
        given["routes"] = _parse_routes(top["routes"], tunnel)
    return Config(
        upstreams=upstreams,
        tunnel=tunnel,
        cache=_parse_cache(top.get("cache")),
        server=_parse_server(top.get("server")),
        local=local,
        policy=_parse_policy(top.get("policy")),
        guard=_parse_guard(top.get("guard")),
        logging=_parse_logging(top.get("logging")),
        takeover=_parse_takeover(top.get("takeover")),
        **given,
    )


def warnings(config: Config) -> list[str]:
    """Valid but risky settings, printed by `check-config` and logged at start."""
    found: list[str] = []
    exposed = [str(a) for a in config.listen if not ipaddress.ip_address(a.host).is_loopback]
    if exposed and not is_loopback_only(config.server.allow):
        wide = ", ".join(str(net) for net in config.server.allow)
        found.append(
            f"server.allow: clients from {wide} may query on {', '.join(exposed)}; "
            "make sure only your own networks can reach it (an open resolver)"
        )
    return found


def load_config(path: str | Path) -> Config:
    """Read and validate a config file. Only reads; never changes anything."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read config {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError("", f"config {path} is not UTF-8 text") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError("", f"config {path} is not valid YAML{where}: {problem}") from None
    if raw is None:
        raise ConfigError("", f"config {path} is empty")
    return parse_config(raw)
