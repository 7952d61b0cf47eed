"""Smoke test for the pure helpers the benchmark takes from testkit: dnsperf parsing, server
configs, zone and query generation, targets.

No servers are started and nothing is timed: timings belong in the benchmark's output,
never in pass/fail tests. The benchmark itself is never loaded here (tests and bench share
testkit, never each other).
"""

from __future__ import annotations

from testkit import dnsperf, dnsprobe, procfs, stubconfig, targets, unbound, zones
from testkit.pki import Pki

# The bench's addresses and TLS name (bench/run.py, bench/encrypted.py), written as the
# configs must show them.
UPSTREAM_IP = "127.0.40.1"
STUB_IP = "127.0.40.3"
TLS_UPSTREAM_IP = "127.0.40.10"
FORWARDER_IP = "127.0.40.11"
AUTH_NAME = "dns.bench.example"
FRONT_ENDS = ("stub-dot", "stub-doh", "unbound-fwd")  # the front ends of bench/encrypted.py

DNSPERF_TCP = """\
DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 127.0.40.2 -p 5300 -d hits.txt -m tcp -l 2 -v
[Status] Sending queries (to 127.0.40.2:5300)
> NOERROR h0.bench.example A 0.000170
> NOERROR h1.bench.example A 0.000117
> SERVFAIL h2.bench.example A 0.000300
[Timeout] Query timed out: msg id 7
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         4
  Queries completed:    3 (75.00%)
  Queries lost:         1 (25.00%)

  Response codes:       NOERROR 2 (66.67%), SERVFAIL 1 (33.33%)
  Average packet size:  request 36, response 52
  Run time (s):         2.000089
  Queries per second:   1.499933

  Average Latency (s):  0.000196 (min 0.000117, max 0.000300)
  Latency StdDev (s):   0.000075

Connection Statistics:

  Reconnections:        2

  Average Latency (s):  0.009000 (min 0.000017, max 0.006327)
  Latency StdDev (s):   0.001715
"""


def test_parse_dnsperf_takes_query_statistics_not_connection_statistics() -> None:
    res = dnsperf.parse_dnsperf(DNSPERF_TCP)
    assert (res.sent, res.completed, res.lost) == (4, 3, 1)
    assert res.qps == 1.499933
    assert res.run_time == 2.000089
    assert res.avg_latency == 0.000196  # not the connection block's 0.009
    assert res.stddev_latency == 0.000075
    assert res.rcodes == {"NOERROR": 2, "SERVFAIL": 1}
    assert res.latencies == [0.000170, 0.000117, 0.000300]
    assert not res.end_of_file
    assert res.percentile(50) == 0.000170


def test_parse_dnsperf_notices_end_of_file() -> None:
    text = "[Status] Testing complete (end of file)\n\nStatistics:\n\n  Queries sent: 5\n"
    res = dnsperf.parse_dnsperf(text)
    assert res.end_of_file
    assert res.sent == 5


def test_percentile_nearest_rank() -> None:
    values = [float(x) for x in range(1, 101)]
    assert dnsperf.percentile(values, 50) == 50.0
    assert dnsperf.percentile(values, 95) == 95.0
    assert dnsperf.percentile(values, 100) == 100.0
    assert dnsperf.percentile([3.0], 1) == 3.0
    assert dnsperf.percentile([], 50) is None


def test_unbound_config_has_zone_wildcard_and_loopback_settings() -> None:
    text = unbound.bench_config(UPSTREAM_IP, 5353, "/tmp/x", names=20)
    assert text.count("local-data:") == 21  # 20 names + the wildcard apex
    assert 'local-zone: "u.bench.example." redirect' in text
    assert 'local-zone: "bench.example." static' in text
    assert "interface: 127.0.40.1@5353" in text
    assert 'local-data: "h19.bench.example. 3600 IN A 10.0.0.19"' in text
    for needed in ('username: ""', 'chroot: ""', "do-daemonize: no", "do-not-query-localhost: no"):
        assert needed in text


def test_query_lines_are_distinct_and_tagged() -> None:
    hits = list(zones.hit_query_lines(300))
    assert len(set(hits)) == 300
    assert hits[257] == "h257.bench.example A\n"
    assert zones.hit_address(257) == "10.0.1.1"
    a = list(zones.unique_query_lines("t001", 1000))
    b = list(zones.unique_query_lines("t002", 1000))
    assert len(set(a) | set(b)) == 2000
    assert all(line.endswith(".u.bench.example A\n") for line in a)


def test_stub_config_uses_loopback_tunnel_and_udp_upstream() -> None:
    text = stubconfig.plain_stub_config(STUB_IP, 5301, UPSTREAM_IP, 5300)
    assert 'listen: ["127.0.40.3:5301"]' in text
    assert 'interfaces: ["lo"]' in text
    assert "udp://127.0.40.1:5300" in text
    assert "level: warning" in text


def test_probe_query_and_answer_check() -> None:
    q = dnsprobe.build_query("h0.bench.example", 0x1234)
    assert q[:2] == b"\x12\x34"
    assert q[12:] == b"\x02h0\x05bench\x07example\x00\x00\x01\x00\x01"
    answer = bytes([0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]) + q[12:]
    assert dnsprobe.answer_ok(answer, 0x1234)
    assert not dnsprobe.answer_ok(answer, 0x1235)
    refused = bytes([0x12, 0x34, 0x81, 0x85, 0, 1, 0, 0, 0, 0, 0, 0]) + q[12:]
    assert not dnsprobe.answer_ok(refused, 0x1234)
    assert not dnsprobe.answer_ok(q, 0x1234)  # a query is not an answer


def test_median_ratio_and_targets() -> None:
    assert targets.median_ratio([2.0, 3.0, 4.0], [1.0, 1.0, 2.0]) == 2.0
    assert targets.median_ratio([1.0], [0.0]) is None
    hit_qps = next(t for t in targets.TARGETS if t.key == "hit_qps_udp")
    assert hit_qps.check(1.0) == "PASS"
    assert hit_qps.check(0.99) == "MISS"
    assert hit_qps.check(None) == "n/a"
    rss = next(t for t in targets.TARGETS if t.key == "rss_100k")
    assert rss.check(59.9) == "PASS"
    assert rss.check(60.1) == "MISS"


# ---- the DoT/DoH workloads (bench/encrypted.py): config generation and small parsers


def test_tls_upstream_config_serves_zone_over_dot_and_doh() -> None:
    text = unbound.bench_tls_config(
        TLS_UPSTREAM_IP, 5300, 5301, 5302, "/tmp/x", "/k.key", "/c.pem", names=5
    )
    for needed in (
        "interface: 127.0.40.10@5300", "interface: 127.0.40.10@5301",
        "interface: 127.0.40.10@5302", "tls-port: 5301", "https-port: 5302",
        'tls-service-key: "/k.key"', 'tls-service-pem: "/c.pem"',
        'http-endpoint: "/dns-query"', 'local-zone: "u.bench.example." redirect',
    ):  # fmt: skip
        assert needed in text
    assert text.count("local-data:") == 6


def test_forwarder_config_forwards_everything_over_authenticated_tls() -> None:
    text = unbound.bench_forwarder_config(
        FORWARDER_IP, 5400, TLS_UPSTREAM_IP, 5301, AUTH_NAME, "/ca.pem", "/tmp/x"
    )
    assert "interface: 127.0.40.11@5400" in text
    assert 'tls-cert-bundle: "/ca.pem"' in text
    assert "forward-tls-upstream: yes" in text
    assert "forward-addr: 127.0.40.10@5301#dns.bench.example" in text
    assert "local-data" not in text  # the forwarder holds no zone of its own


def test_stub_config_with_encrypted_upstreams_parses(pki: Pki) -> None:
    import yaml

    from stubresolver.config import parse_config

    ca = pki.ca  # a real bundle: the config loads it
    for scheme, port in (("tls", 853), ("https", 8443)):
        url = stubconfig.upstream_url(scheme, "127.0.40.10", port, AUTH_NAME, "/dns-query")
        text = stubconfig.encrypted_stub_config("127.0.40.12", 5500, url, str(ca))
        cfg = parse_config(yaml.safe_load(text))
        (up,) = cfg.upstreams
        assert (up.scheme, up.host, up.port) == (scheme, "127.0.40.10", port)
        assert up.auth_name == "dns.bench.example"
        assert up.ca_file == str(ca)
        assert up.path == ("/dns-query" if scheme == "https" else None)
    assert (
        stubconfig.upstream_url("tls", "127.0.40.10", 853, AUTH_NAME, "/dns-query")
        == "tls://127.0.40.10:853#dns.bench.example"
    )


def test_rotate_gives_each_front_end_each_slot() -> None:
    orders = [targets.rotate(FRONT_ENDS, r) for r in (1, 2, 3, 4)]
    assert orders[0] == list(FRONT_ENDS)
    assert {o[0] for o in orders[:3]} == set(FRONT_ENDS)
    assert orders[3] == orders[0]


def test_tcp_inodes_to_matches_established_connections_to_the_port() -> None:
    proc_net_tcp = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid"
        "  timeout inode\n"
        "   0: 0100007F:A000 0A28007F:0355 01 00000000:00000000 00:00000000 00000000 0 0 111 1\n"
        "   1: 0100007F:A001 0A28007F:0355 06 00000000:00000000 00:00000000 00000000 0 0 112 1\n"
        "   2: 0100007F:A002 0B28007F:0355 01 00000000:00000000 00:00000000 00000000 0 0 113 1\n"
    )
    assert procfs.tcp_inodes_to(proc_net_tcp, "127.0.40.10", 853) == {111}
