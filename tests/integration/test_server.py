"""The real `stubresolver run` process against a real unbound on loopback (`lo` as tunnel).

Covers the listeners end to end: UDP and RFC 7766 TCP (pipelining, framing split at every
byte, idle timeout, connection cap), truncation to the client's EDNS size with TCP retry,
every bad-input case, fail-closed refusal, SIGHUP reload and SIGTERM.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import signal
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from testkit.ports import free_port
from testkit.unbound import Unbound

from .stub_process import StubProcess, listen_port, run_stub, write_config
from .upstream_servers import BIG_TXT_COUNT, run_unbound

STUB_ADDR = "127.0.20.2"


@pytest.fixture(scope="module")
def unbound(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Unbound]:
    with run_unbound(tmp_path_factory.mktemp("unbound")) as server:
        yield server


def base_config(tmp: Path, upstream: Unbound, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "listen": [f"{STUB_ADDR}:{free_port(STUB_ADDR)}"],
        "tunnel": {"interfaces": ["lo"]},
        "upstreams": [f"udp://{upstream.addr}:{upstream.port}"],
        "control_socket": str(tmp / "control.sock"),  # not the machine-wide default
        "logging": {"level": "debug"},
    }
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory, unbound: Unbound) -> Iterator[StubProcess]:
    tmp = tmp_path_factory.mktemp("stub")
    config = base_config(
        tmp,
        unbound,
        server={"tcp_idle_timeout": 1.0, "tcp_max_connections": 4},
        logging={"level": "debug", "queries": True},
    )
    path = write_config(tmp / "config.yaml", config)
    with run_stub(path, STUB_ADDR, listen_port(config)) as proc:
        yield proc
    assert proc.proc.returncode == 0
    assert "Traceback" not in proc.stderr


def query(name: str, rdtype: str = "A", **kwargs: Any) -> dns.message.Message:
    return dns.message.make_query(name, rdtype, **kwargs)


def a_records(msg: dns.message.Message) -> list[str]:
    return [r.to_text() for rrset in msg.answer for r in rrset if rrset.rdtype == dns.rdatatype.A]


def raw_udp(stub: StubProcess, data: bytes, timeout: float = 0.5) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(data, (stub.host, stub.port))
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


def tcp_connect(stub: StubProcess) -> socket.socket:
    sock = socket.create_connection((stub.host, stub.port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_frames(sock: socket.socket, count: int) -> list[bytes]:
    buf = b""
    out: list[bytes] = []
    while len(out) < count:
        chunk = sock.recv(65535)
        if not chunk:
            break
        buf += chunk
        while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
            size = struct.unpack("!H", buf[:2])[0]
            out.append(buf[2 : 2 + size])
            buf = buf[2 + size :]
    return out


def frame(msg: bytes) -> bytes:
    return struct.pack("!H", len(msg)) + msg


# --- plain service -----------------------------------------------------------------------


def test_udp_and_tcp_answers(stub: StubProcess) -> None:
    assert a_records(stub.udp(query("a.example"))) == ["192.0.2.1"]
    assert a_records(stub.tcp(query("b.example"))) == ["192.0.2.2"]


def test_cache_restores_id_and_case(stub: StubProcess) -> None:
    first = stub.udp(query("a.example"))
    second_q = query("A.ExAmPlE")
    second = stub.udp(second_q)
    assert second.id == second_q.id
    assert first.question[0].name.to_text() == "a.example."
    assert second.question[0].name.to_text() == "A.ExAmPlE."
    assert a_records(second) == ["192.0.2.1"]
    assert second.answer[0].ttl <= 300


def test_nxdomain_is_forwarded_with_soa(stub: StubProcess) -> None:
    reply = stub.udp(query("nope.example"))
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert reply.authority and reply.authority[0].rdtype == dns.rdatatype.SOA


def test_local_names(stub: StubProcess) -> None:
    assert a_records(stub.udp(query("localhost"))) == ["127.0.0.1"]
    assert stub.udp(query("use-application-dns.net")).rcode() == dns.rcode.NXDOMAIN
    assert stub.udp(query("printer.local")).rcode() == dns.rcode.NXDOMAIN
    assert stub.udp(query("4.3.168.192.in-addr.arpa", "PTR")).rcode() == dns.rcode.NXDOMAIN


# --- truncation and EDNS buffer sizes ------------------------------------------------------


def test_big_answer_truncated_without_edns_and_complete_over_tcp(stub: StubProcess) -> None:
    # The upstream's UDP answer is truncated too; the stub must have retried over TCP.
    small = stub.udp(query("big.example", "TXT", use_edns=False))
    assert small.flags & dns.flags.TC
    assert not small.answer
    assert small.question[0].name.to_text() == "big.example."
    full_tcp = stub.tcp(query("big.example", "TXT", use_edns=False))
    assert not full_tcp.flags & dns.flags.TC
    assert sum(len(rrset) for rrset in full_tcp.answer) == BIG_TXT_COUNT


def test_edns_buffer_size_is_honoured(stub: StubProcess) -> None:
    tight = stub.udp(query("big.example", "TXT", use_edns=0, payload=600))
    assert tight.flags & dns.flags.TC
    assert tight.edns == 0  # RFC 6891 7: the OPT record survives truncation


def test_udp_replies_are_capped_at_udp_max_payload_whatever_the_client_advertises(
    stub: StubProcess,
) -> None:
    # The whole answer is larger than 1232 (the default server.udp_max_payload): over UDP
    # it goes truncated even to a client that advertises 4096 (DNS flag day 2020).
    full = stub.tcp(query("big.example", "TXT", use_edns=0, payload=4096))
    assert len(full.to_wire()) > 1232
    assert sum(len(rrset) for rrset in full.answer) == BIG_TXT_COUNT
    capped = stub.udp(query("big.example", "TXT", use_edns=0, payload=4096))
    assert capped.flags & dns.flags.TC
    assert not capped.answer
    assert capped.edns == 0 and capped.payload == 1232  # our OPT advertises our cap


# --- TCP (RFC 7766) ------------------------------------------------------------------------


def test_tcp_pipelining_answers_every_query_on_one_connection(stub: StubProcess) -> None:
    names = ["a.example", "b.example", "big.example", "localhost", "nope.example"]
    queries = [query(n, "TXT" if n == "big.example" else "A") for n in names]
    with tcp_connect(stub) as sock:
        sock.sendall(b"".join(frame(q.to_wire()) for q in queries))
        replies = [dns.message.from_wire(r) for r in read_frames(sock, len(queries))]
    assert sorted(r.id for r in replies) == sorted(q.id for q in queries)
    by_id = {r.id: r for r in replies}
    assert a_records(by_id[queries[0].id]) == ["192.0.2.1"]
    assert a_records(by_id[queries[1].id]) == ["192.0.2.2"]


def test_tcp_framing_survives_a_split_at_every_byte(stub: StubProcess) -> None:
    wire_query = frame(query("a.example").to_wire())
    with tcp_connect(stub) as sock:
        for index in range(len(wire_query)):
            sock.sendall(wire_query[index : index + 1])
            time.sleep(0.002)
        (reply,) = read_frames(sock, 1)
    assert a_records(dns.message.from_wire(reply)) == ["192.0.2.1"]


def test_tcp_idle_connection_is_closed(stub: StubProcess) -> None:
    with tcp_connect(stub) as sock:
        sock.settimeout(10)
        started = time.monotonic()
        assert sock.recv(1) == b""  # closed by the server after tcp_idle_timeout (1 s)
        assert time.monotonic() - started < 8


def test_tcp_connection_cap_makes_room_by_closing_the_quietest(stub: StubProcess) -> None:
    socks = [tcp_connect(stub) for _ in range(4)]
    try:
        # Make sure the four are accepted, in order, before the fifth arrives.
        for sock in socks:
            sock.sendall(frame(query("localhost").to_wire()))
            assert read_frames(sock, 1)
            time.sleep(0.05)
        # At the cap (4), the connection quiet longest with nothing in flight makes room
        # (RFC 7766 6.2.2), so held-open connections cannot lock a new client out.
        with tcp_connect(stub) as extra:
            extra.sendall(frame(query("a.example").to_wire()))
            assert read_frames(extra, 1)
        socks[0].settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            assert socks[0].recv(1) == b""
        socks[1].sendall(frame(query("localhost").to_wire()))
        assert read_frames(socks[1], 1)
    finally:
        for sock in socks:
            sock.close()
    assert a_records(stub.tcp(query("a.example"))) == ["192.0.2.1"]


# --- bad input ------------------------------------------------------------------------------


def _header(flags: int, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", 0xBEEF, flags, qd, an, ns, ar)


QUESTION = b"\x01a\x07example\x00\x00\x01\x00\x01"


@pytest.mark.parametrize(
    ("data", "rcode"),
    [
        (b"\x12", None),  # shorter than a header: dropped
        (b"\xbe\xef\x01\x00\x00\x01\x00", None),
        (_header(0x8000) + QUESTION, None),  # QR=1: dropped
        (_header(0x0100, qd=0), dns.rcode.FORMERR),
        (_header(0x0100, qd=2) + QUESTION + QUESTION, dns.rcode.FORMERR),
        (_header(0x0100) + b"\x01a\x07exam", dns.rcode.FORMERR),  # truncated question
        (_header(0x0100) + b"\xc0\x0c\x00\x01\x00\x01", dns.rcode.FORMERR),  # pointer loop
        (_header(0x0100) + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01", dns.rcode.FORMERR),
        (_header(0x0100, ar=1) + QUESTION + b"\x00\x00\x29", dns.rcode.FORMERR),  # cut OPT
        (_header(0x2800) + QUESTION, dns.rcode.NOTIMP),  # opcode UPDATE
        (_header(0x1000) + QUESTION, dns.rcode.NOTIMP),  # opcode STATUS
    ],
)
def test_bad_input_over_udp(stub: StubProcess, data: bytes, rcode: int | None) -> None:
    reply = raw_udp(stub, data, timeout=0.5 if rcode is None else 3.0)
    if rcode is None:
        assert reply is None
    else:
        assert reply is not None
        assert struct.unpack("!H", reply[:2])[0] == 0xBEEF
        assert reply[2] & 0x80  # QR
        assert reply[3] & 0x0F == rcode
    assert stub.alive()
    assert a_records(stub.udp(query("a.example"))) == ["192.0.2.1"]


def test_edns_version_1_gets_badvers(stub: StubProcess) -> None:
    reply = stub.udp(query("a.example", use_edns=1))
    assert reply.rcode() == dns.rcode.BADVERS


def test_bad_input_over_tcp_then_connection_still_works(stub: StubProcess) -> None:
    with tcp_connect(stub) as sock:
        sock.sendall(frame(_header(0x0100, qd=2) + QUESTION + QUESTION))
        sock.sendall(frame(_header(0x8000) + QUESTION))  # a response: dropped silently
        sock.sendall(frame(query("a.example").to_wire()))
        replies = read_frames(sock, 2)
    assert replies[0][3] & 0x0F == dns.rcode.FORMERR
    assert a_records(dns.message.from_wire(replies[1])) == ["192.0.2.1"]


def test_random_garbage_never_kills_the_stub(stub: StubProcess) -> None:
    import random

    rng = random.Random(7)
    good = query("a.example").to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(500):
            data = bytearray(good[: rng.randrange(len(good) + 1)])
            for _ in range(rng.randrange(4)):
                if data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
            sock.sendto(bytes(data), (stub.host, stub.port))
    time.sleep(0.2)  # let the burst drain: this checks survival, not burst capacity
    assert stub.alive()
    assert a_records(stub.udp(query("b.example"))) == ["192.0.2.2"]


# --- fail-closed, errors, signals ----------------------------------------------------------


def test_tunnel_absent_refuses_with_ede(tmp_path: Path, unbound: Unbound) -> None:
    # A loopback upstream needs tunnel `lo` (config rule), so the upstream here is a
    # documentation address that nothing would answer; the netns tests prove with a sniffer
    # that nothing is sent while the tunnel is down.
    config = base_config(
        tmp_path,
        unbound,
        tunnel={"interfaces": ["nosuchtun*"]},
        upstreams=["udp://192.0.2.53"],
    )
    path = write_config(tmp_path / "config.yaml", config)
    with run_stub(path, STUB_ADDR, listen_port(config)) as proc:
        started = time.monotonic()
        reply = proc.udp(query("a.example", use_edns=0))
        assert time.monotonic() - started < 1.0
        assert reply.rcode() == dns.rcode.REFUSED
        ede = [o for o in reply.options if o.otype == dns.edns.EDE]
        assert ede, "REFUSED must carry an Extended DNS Error"
        assert isinstance(ede[0], dns.edns.EDEOption)
        assert ede[0].code == 23
        assert ede[0].text == "tunnel nosuchtun* down"
        assert proc.tcp(query("a.example")).rcode() == dns.rcode.REFUSED
        assert a_records(proc.udp(query("localhost"))) == ["127.0.0.1"]
    assert proc.proc.returncode == 0


# Names answered by the stub itself at any tunnel state (issue 7), with the rcode.
NEVER_LEAVE = [
    ("nas.home.arpa.", "A", dns.rcode.NXDOMAIN),
    ("router.internal.", "AAAA", dns.rcode.NXDOMAIN),
    ("example.onion.", "A", dns.rcode.NXDOMAIN),
    ("_dns.resolver.arpa.", "SVCB", dns.rcode.NOERROR),
    ("printer.", "A", dns.rcode.NXDOMAIN),
    ("1.2.0.192.in-addr.arpa.", "PTR", dns.rcode.NXDOMAIN),
    (
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.",
        "PTR",
        dns.rcode.NXDOMAIN,
    ),
    (ipaddress.ip_address("::ffff:192.168.1.1").reverse_pointer + ".", "PTR", dns.rcode.NXDOMAIN),
]


@pytest.mark.parametrize(("name", "rdtype", "rcode"), NEVER_LEAVE)
def test_names_that_never_leave_over_udp_and_tcp(
    stub: StubProcess, name: str, rdtype: str, rcode: int
) -> None:
    for reply in (stub.udp(query(name, rdtype)), stub.tcp(query(name, rdtype))):
        assert reply.rcode() == rcode
        assert not reply.answer
        assert reply.flags & dns.flags.AA  # ours, not the upstream's


def test_names_that_never_leave_are_answered_while_the_tunnel_is_down(
    tmp_path: Path, unbound: Unbound
) -> None:
    config = base_config(
        tmp_path, unbound, tunnel={"interfaces": ["nosuchtun*"]}, upstreams=["udp://192.0.2.53"]
    )
    path = write_config(tmp_path / "config.yaml", config)
    with run_stub(path, STUB_ADDR, listen_port(config)) as proc:
        assert proc.udp(query("a.example")).rcode() == dns.rcode.REFUSED
        for name, rdtype, rcode in NEVER_LEAVE:
            assert proc.udp(query(name, rdtype)).rcode() == rcode, name


def test_single_label_forward_sends_bare_names_to_the_vpn(tmp_path: Path, unbound: Unbound) -> None:
    config = base_config(tmp_path, unbound, local={"single_label": "forward"})
    path = write_config(tmp_path / "config.yaml", config)
    with run_stub(path, STUB_ADDR, listen_port(config)) as proc:
        # The test unbound refuses everything outside example. (local-zone "." refuse): a
        # REFUSED shows it was asked, where the default gives our local NXDOMAIN.
        assert proc.udp(query("printer.", "A")).rcode() == dns.rcode.REFUSED


def test_unreachable_upstream_gives_servfail_quickly(tmp_path: Path, unbound: Unbound) -> None:
    dead = free_port("127.0.20.10")
    config = base_config(
        tmp_path, unbound, upstreams=[{"url": f"udp://127.0.20.10:{dead}", "timeout": 0.5}]
    )
    path = write_config(tmp_path / "config.yaml", config)
    with run_stub(path, STUB_ADDR, listen_port(config)) as proc:
        started = time.monotonic()
        reply = proc.udp(query("a.example", use_edns=0), timeout=5)
        assert reply.rcode() == dns.rcode.SERVFAIL
        assert time.monotonic() - started < 3.0
        assert any(o.otype == dns.edns.EDE for o in reply.options)


def test_failover_to_second_upstream(tmp_path: Path, unbound: Unbound) -> None:
    dead = free_port("127.0.20.10")
    config = base_config(
        tmp_path,
        unbound,
        upstreams=[
            {"url": f"udp://127.0.20.10:{dead}", "timeout": 0.5},
            f"udp://{unbound.addr}:{unbound.port}",
        ],
    )
    path = write_config(tmp_path / "config.yaml", config)
    with run_stub(path, STUB_ADDR, listen_port(config)) as proc:
        assert a_records(proc.udp(query("a.example"), timeout=5)) == ["192.0.2.1"]


def test_sighup_reload_rejects_bad_config_and_applies_good(
    tmp_path: Path, unbound: Unbound
) -> None:
    config = base_config(tmp_path, unbound)
    path = write_config(tmp_path / "config.yaml", config)
    with run_stub(path, STUB_ADDR, listen_port(config)) as proc:
        assert a_records(proc.udp(query("a.example"))) == ["192.0.2.1"]
        path.write_text("upstreams: [udp://dns.example.com]\n")  # a name: rejected
        proc.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert proc.alive()
        assert a_records(proc.udp(query("b.example"))) == ["192.0.2.2"]
        assert "reload rejected" in proc.stderr
        assert "upstreams[0]" in proc.stderr
        down = {"interfaces": ["nosuchtun*"]}
        write_config(path, {**config, "tunnel": down, "upstreams": ["udp://192.0.2.53"]})
        proc.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if proc.udp(query("c.example")).rcode() == dns.rcode.REFUSED:
                break
            time.sleep(0.1)
        assert proc.udp(query("d.example")).rcode() == dns.rcode.REFUSED
    assert proc.proc.returncode == 0
    assert "Traceback" not in proc.stderr


def test_query_names_not_logged_by_default(tmp_path: Path, unbound: Unbound) -> None:
    config = base_config(tmp_path, unbound)
    path = write_config(tmp_path / "config.yaml", config)
    with run_stub(path, STUB_ADDR, listen_port(config)) as proc:
        proc.udp(query("secret-name.example"))
    assert "secret-name" not in proc.stderr
    config["logging"] = {"level": "debug", "queries": True}
    write_config(path, config)
    with run_stub(path, STUB_ADDR, listen_port(config)) as proc:
        proc.udp(query("logged-name.example"))
    assert "logged-name" in proc.stderr


def test_logged_query_names_cannot_forge_log_lines(tmp_path: Path, unbound: Unbound) -> None:
    config = base_config(tmp_path, unbound, logging={"level": "info", "queries": True})
    path = write_config(tmp_path / "config.yaml", config)
    crafted = dns.name.Name([b"x\nFORGED line\x1b[2J", b"example", b""])
    with run_stub(path, STUB_ADDR, listen_port(config)) as proc:
        proc.udp(dns.message.make_query(crafted, "A"))
    lines = proc.stderr.splitlines()
    assert not [line for line in lines if line.startswith("FORGED")], proc.stderr
    assert "\x1b" not in proc.stderr
    assert "x\\010forged\\032line\\027[2j.example." in proc.stderr


def test_no_second_socket_can_share_the_udp_listener(stub: StubProcess) -> None:
    # Another local user would set SO_REUSEADDR (and SO_REUSEPORT) to share the port and
    # receive some of the queries; the stub's UDP socket does not allow either.
    for option in (socket.SO_REUSEADDR, socket.SO_REUSEPORT):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as thief:
            thief.setsockopt(socket.SOL_SOCKET, option, 1)
            with pytest.raises(OSError) as caught:
                thief.bind((stub.host, stub.port))
            assert caught.value.errno == errno.EADDRINUSE
    assert stub.udp(query("a.example")).rcode() == dns.rcode.NOERROR


def test_clients_outside_server_allow_are_refused(tmp_path: Path, unbound: Unbound) -> None:
    # Loopback only by default; here narrowed to one address so that another loopback
    # address plays the stranger without a namespace.
    config = base_config(tmp_path, unbound, server={"allow": ["127.0.20.5/32"]})
    path = write_config(tmp_path / "config.yaml", config)
    msg = query("a.example", use_edns=0)
    with run_stub(path, STUB_ADDR, listen_port(config)) as proc:
        friend = dns.query.udp(msg, proc.host, port=proc.port, timeout=3, source="127.0.20.5")
        assert a_records(friend) == ["192.0.2.1"]
        stranger = dns.query.udp(msg, proc.host, port=proc.port, timeout=3, source="127.0.20.6")
        assert stranger.rcode() == dns.rcode.REFUSED
        assert not stranger.answer
        ede = [o for o in stranger.options if o.otype == dns.edns.EDE]
        assert isinstance(ede[0], dns.edns.EDEOption) and ede[0].code == 18  # Prohibited
        with socket.create_connection(
            (proc.host, proc.port), timeout=3, source_address=("127.0.20.6", 0)
        ) as sock:
            with contextlib.suppress(OSError):
                sock.sendall(frame(msg.to_wire()))
            try:
                rest = sock.recv(100)
            except ConnectionResetError:
                rest = b""
            assert rest == b"", "a refused TCP client must get no answer, only a close"
        assert a_records(
            dns.query.tcp(msg, proc.host, port=proc.port, timeout=3, source="127.0.20.5")
        ) == ["192.0.2.1"]
        assert "a.example" not in proc.stderr
    assert proc.proc.returncode == 0


def test_listen_in_use_fails_cleanly(tmp_path: Path, unbound: Unbound) -> None:
    import subprocess
    import sys

    from .stub_process import REPO

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind((STUB_ADDR, 0))
        port = busy.getsockname()[1]
        config = base_config(tmp_path, unbound, listen=[f"{STUB_ADDR}:{port}"])
        path = write_config(tmp_path / "config.yaml", config)
        result = subprocess.run(
            [sys.executable, "-m", "stubresolver", "run", "--config", str(path)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 1
    assert f"cannot listen on {STUB_ADDR}:{port}" in result.stderr
    assert "Traceback" not in result.stderr


RECORDS_ADDR = "127.0.70.2"  # issue 8: local.records


@pytest.mark.parametrize("tunnel_up", [True, False])
def test_local_records_are_answered_over_udp_and_tcp_at_any_tunnel_state(
    tmp_path: Path, unbound: Unbound, tunnel_up: bool
) -> None:
    records = [
        "printer.lan. 300 IN A 192.168.1.5",
        "nas.home.arpa. IN AAAA fd00::5",
        "www.nas.home.arpa. 60 IN CNAME nas.home.arpa.",
    ]
    # The VPN client's own server, resolvable to reconnect while the tunnel is down (issue 9).
    bootstrap = {"vpn.example.net": ["203.0.113.7", "2001:db8::7"]}
    overrides: dict[str, Any] = {"local": {"records": records}, "bootstrap_hosts": bootstrap}
    if not tunnel_up:  # no such tunnel, and an upstream that cannot be reached anyway
        overrides |= {"tunnel": {"interfaces": ["nosuchtun*"]}, "upstreams": ["udp://192.0.2.53"]}
    config = base_config(tmp_path, unbound, **overrides)
    config["listen"] = [f"{RECORDS_ADDR}:{free_port(RECORDS_ADDR)}"]
    path = write_config(tmp_path / "config.yaml", config)
    with run_stub(path, RECORDS_ADDR, listen_port(config)) as proc:
        for ask in (proc.udp, proc.tcp):
            reply = ask(query("printer.lan", "A"))
            assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA
            assert a_records(reply) == ["192.168.1.5"]
            assert reply.answer[0].ttl == 300
            nodata = ask(query("printer.lan", "AAAA"))
            assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
            assert nodata.flags & dns.flags.AA  # ours: the test unbound would say REFUSED
            aaaa = ask(query("NAS.home.arpa", "AAAA"))
            assert [r.to_text() for r in aaaa.answer[0]] == ["fd00::5"]
            cname = ask(query("www.nas.home.arpa", "A"))
            assert [r.to_text() for r in cname.answer[0]] == ["nas.home.arpa."]
            # Records win only for their own names.
            assert ask(query("tv.home.arpa", "A")).rcode() == dns.rcode.NXDOMAIN
            assert a_records(ask(query("VPN.example.net", "A"))) == ["203.0.113.7"]
            six = ask(query("vpn.example.net", "AAAA"))
            assert [r.to_text() for r in six.answer[0]] == ["2001:db8::7"]
        forwarded = proc.udp(query("a.example", "A")).rcode()
        assert forwarded == (dns.rcode.NOERROR if tunnel_up else dns.rcode.REFUSED)
    assert "Traceback" not in proc.stderr
