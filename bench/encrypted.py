"""Encrypted upstreams: stubresolver over DoT and DoH against unbound as a DoT forwarder.

One unbound serves the bench zone over DoT and DoH (a CA and certificate made here with the
openssl CLI, in a temp dir). In front of it, on UDP: stubresolver with a ``tls://`` upstream,
stubresolver with an ``https://`` upstream, and a second unbound forwarding with
``forward-tls-upstream: yes``. unbound cannot forward over DoH, so both stub runs are
compared with the same unbound DoT forwarder. dnsperf drives each front end in turn, the
order rotating every round. Everything is on 127.0.40.0/24; only processes started here are
stopped, by PID. See bench/README.md ("Encrypted upstreams").
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/encrypted.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.dnsperf import QueryFiles, Sample, Settings, measured_run, run_dnsperf
from bench.harness import Harness, Server, run_and_report
from bench.report import fmt, paired_ratio, rcode_summary
from testkit.pki import make_pki
from testkit.ports import free_port, free_ports
from testkit.procfs import upstream_connections
from testkit.stubconfig import encrypted_stub_config, upstream_url
from testkit.targets import rotate
from testkit.unbound import DOH_PATH, bench_forwarder_config, bench_tls_config
from testkit.zones import HIT_NAMES

TLS_UPSTREAM_IP = "127.0.40.10"  # unbound: plain (readiness only), DoT, DoH
FORWARDER_IP = "127.0.40.11"  # unbound, forward-tls-upstream to TLS_UPSTREAM_IP
STUB_DOT_IP = "127.0.40.12"  # stubresolver, tls:// upstream
STUB_DOH_IP = "127.0.40.13"  # stubresolver, https:// upstream
AUTH_NAME = "dns.bench.example"

FRONT_ENDS = ("stub-dot", "stub-doh", "unbound-fwd")
REFERENCE = "unbound-fwd"
WORKLOADS = ("forwarding", "cache-hit")

# Upper bound on a front end's QPS, to size the unique-name files (the harness notes it if a
# file runs out before the time limit).
MAX_QPS_ENCRYPTED = 40_000
MAX_QPS_DIRECT = 80_000


# ---------------------------------------------------------------- measuring


@dataclass
class EncSample:
    sample: Sample
    upstream_conns: int  # held to the DoT/DoH port just after the run (-1: unknown)


@dataclass
class EncReport:
    settings: dict[str, float | int | str]
    command: str
    samples: list[EncSample] = field(default_factory=list)
    fixed_rate: list[EncSample] = field(default_factory=list)
    ratios: dict[str, float | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def run_encrypted(
    args: argparse.Namespace, workdir: Path, harness: Harness, command: str
) -> EncReport:
    settings = Settings(
        duration=args.duration, rounds=args.rounds, clients=args.clients,
        outstanding=args.outstanding, fixed_qps=args.fixed_qps,
    )  # fmt: skip
    report = EncReport(settings=dict(asdict(settings)), command=command)
    files = QueryFiles(workdir)

    def note(msg: str) -> None:
        report.notes.append(msg)
        print(f"  note: {msg}", flush=True)

    # ---- PKI and servers
    pki = make_pki(workdir, AUTH_NAME, (TLS_UPSTREAM_IP,), label="bench")
    plain, dot, doh = free_ports(TLS_UPSTREAM_IP, 3)
    conf = workdir / "unbound-tls.conf"
    conf.write_text(
        bench_tls_config(
            TLS_UPSTREAM_IP, plain, dot, doh, str(workdir), str(pki.key), str(pki.cert), HIT_NAMES
        )
    )
    print(f"starting unbound DoT :{dot} / DoH :{doh} on {TLS_UPSTREAM_IP}", flush=True)
    upstream = harness.spawn(
        "unbound-tls", TLS_UPSTREAM_IP, plain, ["unbound", "-d", "-c", str(conf)]
    )

    fport = free_port(FORWARDER_IP)
    fconf = workdir / "unbound-fwd.conf"
    fconf.write_text(
        bench_forwarder_config(
            FORWARDER_IP, fport, TLS_UPSTREAM_IP, dot, AUTH_NAME, str(pki.ca), str(workdir)
        )
    )
    print(f"starting unbound forwarder (DoT) on {FORWARDER_IP}:{fport}", flush=True)
    forwarder = harness.spawn(
        "unbound-fwd", FORWARDER_IP, fport, ["unbound", "-d", "-c", str(fconf)]
    )

    def start_stub(name: str, ip: str, url: str) -> Server:
        port = free_port(ip)
        yaml = workdir / f"{name}.yaml"
        yaml.write_text(encrypted_stub_config(ip, port, url, str(pki.ca)))
        print(f"starting {name} on {ip}:{port} -> {url}", flush=True)
        argv = [sys.executable, "-m", "stubresolver", "run", "--config", str(yaml)]
        return harness.spawn(name, ip, port, argv)

    dot_url = upstream_url("tls", TLS_UPSTREAM_IP, dot, AUTH_NAME, DOH_PATH)
    doh_url = upstream_url("https", TLS_UPSTREAM_IP, doh, AUTH_NAME, DOH_PATH)
    stub_dot = start_stub("stub-dot", STUB_DOT_IP, dot_url)
    stub_doh = start_stub("stub-doh", STUB_DOH_IP, doh_url)
    fronts = {"stub-dot": stub_dot, "stub-doh": stub_doh, "unbound-fwd": forwarder}
    for name, srv in fronts.items():
        print(f"  {name}: first answer after {srv.start_s * 1000:.0f} ms", flush=True)
    # dnsperf's own DoT/DoH client straight at the TLS upstream: the ceiling (same process).
    direct = {
        "dot": Server("unbound-dot", TLS_UPSTREAM_IP, dot, upstream.proc, upstream.log, 0),
        "doh": Server("unbound-doh", TLS_UPSTREAM_IP, doh, upstream.proc, upstream.log, 0),
    }
    up_port = {"stub-dot": dot, "stub-doh": doh, "unbound-fwd": dot}

    def datafile(workload: str, cap: int, rate: int | None = None) -> Path:
        if workload == "cache-hit":
            return files.hits
        return files.unique(int((rate or cap) * settings.duration * 1.2) + 1000)

    def one(
        workload: str, srv: Server, rnd: int, *, proto: str = "udp", rate: int | None = None
    ) -> EncSample:
        cap = MAX_QPS_DIRECT if srv.proc is upstream.proc else MAX_QPS_ENCRYPTED
        data = datafile(workload, cap, rate)
        up = srv if srv.proc is upstream.proc else upstream  # direct: one process
        s = measured_run(
            workdir, srv, up, data, workload=workload, proto=proto, rnd=rnd,
            settings=settings, duration=settings.duration, once=workload == "forwarding",
            rate=rate,
        )  # fmt: skip
        if workload == "forwarding":
            data.unlink()
        conns = -1
        if srv.proc is not upstream.proc:
            conns = upstream_connections(srv.pid, TLS_UPSTREAM_IP, up_port[srv.name])
        print(
            f"  {workload:10} r{rnd} {srv.name:12} {s.qps:9.0f} qps"
            f"  p50 {fmt(s.p50_ms, 3)} ms  p99 {fmt(s.p99_ms, 3)} ms"
            f"  cpu {fmt(s.cpu_us_per_query, 1)} us/q"
            f"  upstr {fmt(s.upstream_cpu_us_per_query, 1)} us/q"
            f"  conns {conns}  lost {s.lost}  {rcode_summary(s.rcodes)}",
            flush=True,
        )
        bad = sum(v for k, v in s.rcodes.items() if k != "NOERROR")
        if bad or s.lost:
            note(f"{srv.name} {workload} r{rnd}: {bad} non-NOERROR, {s.lost} lost ({s.rcodes})")
        for err in s.errors:
            note(f"{srv.name} {workload} r{rnd}: {err}")
        if s.end_of_file:
            note(f"{srv.name} {workload} r{rnd}: query file ran out; raise MAX_QPS_*")
        return EncSample(s, conns)

    # ---- warm the caches of the front ends (the TLS upstream answers from local data)
    print("warming caches with the 10,000 hit names", flush=True)
    for name, srv in fronts.items():
        res = run_dnsperf(
            workdir, srv, files.hits, proto="udp", duration=60, settings=settings, once=True,
            label=f"warm-{name}",
        )  # fmt: skip
        if res.completed < HIT_NAMES or res.rcodes.get("NOERROR", 0) < res.completed:
            note(f"warm-up of {name}: {res.completed} answers, rcodes {res.rcodes}")

    # ---- reference: dnsperf's DoT and DoH clients straight at the TLS upstream
    if not args.no_direct:
        print("reference: dnsperf -m dot / -m doh straight at the TLS unbound", flush=True)
        for workload in WORKLOADS:
            for mode, srv in direct.items():
                report.samples.append(one(workload, srv, 0, proto=mode))

    # ---- alternating rounds
    for rnd in range(1, settings.rounds + 1):
        print(f"round {rnd}/{settings.rounds}", flush=True)
        for workload in WORKLOADS:
            if workload == "cache-hit" and args.no_hits:
                continue
            for name in rotate(FRONT_ENDS, rnd):
                report.samples.append(one(workload, fronts[name], rnd))

    # ---- forwarding latency at a fixed rate
    if settings.fixed_qps > 0:
        print(f"forwarding latency at {settings.fixed_qps} QPS", flush=True)
        for name in FRONT_ENDS:
            report.fixed_rate.append(one("forwarding", fronts[name], 0, rate=settings.fixed_qps))

    for name, srv in fronts.items():
        if srv.proc.poll() is not None:
            note(f"{name} exited with status {srv.proc.returncode}")
        if name.startswith("stub"):
            text = srv.log.read_text(errors="replace").strip()
            if text:
                tail = " | ".join(text.splitlines()[-5:])
                note(f"{name} log ({len(text.splitlines())} lines), tail: {tail[-600:]}")

    summarize(report)
    return report


# ---------------------------------------------------------------- summary and output


def _rows(report: EncReport, server: str, workload: str) -> list[Sample]:
    return [
        x.sample for x in report.samples
        if x.sample.server == server and x.sample.workload == workload and x.sample.round > 0
    ]  # fmt: skip


def summarize(report: EncReport) -> None:
    for workload in WORKLOADS:
        ref = _rows(report, REFERENCE, workload)
        for stub in ("stub-dot", "stub-doh"):
            rows = _rows(report, stub, workload)
            for attr, label in (("qps", "qps"), ("p50_ms", "p50"), ("p99_ms", "p99"),
                                ("cpu_us_per_query", "cpu")):  # fmt: skip
                report.ratios[f"{workload}/{stub}/{label}"] = paired_ratio(rows, ref, attr)


def _med(values: Sequence[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return statistics.median(vals) if vals else None


def render(report: EncReport) -> str:
    s = report.settings
    out = [
        f"encrypted upstreams: {s['rounds']} rounds x {s['duration']:g} s per run, "
        f"dnsperf -c {s['clients']} -q {s['outstanding']} (UDP to the front end), "
        f"{os.cpu_count()} CPUs",
        "values are medians across rounds; 'direct' rows are dnsperf's own DoT/DoH client "
        "straight at the TLS unbound (once)",
        "unbound has no DoH forwarding: stub-doh is compared with the same unbound DoT forwarder",
    ]
    head = (
        f"{'front end':<16}{'upstream':>9}{'QPS':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
        f"{'CPU us/q':>10}{'upstr us/q':>11}{'conns':>7}{'lost':>7}{'not NOERR':>10}"
    )
    for workload in WORKLOADS:
        out += ["", f"== {workload}", head]
        names = ["unbound-dot", "unbound-doh", *FRONT_ENDS]
        for name in names:
            rows = [x for x in report.samples
                    if x.sample.server == name and x.sample.workload == workload]  # fmt: skip
            if not rows:
                continue
            smp = [x.sample for x in rows]
            label = {"unbound-dot": "direct dnsperf", "unbound-doh": "direct dnsperf"}.get(
                name, name
            )
            kind = {"stub-dot": "DoT", "stub-doh": "DoH", "unbound-fwd": "DoT",
                    "unbound-dot": "DoT", "unbound-doh": "DoH"}[name]  # fmt: skip
            conns = [x.upstream_conns for x in rows if x.upstream_conns >= 0]
            bad = sum(v for x in smp for k, v in x.rcodes.items() if k != "NOERROR")
            out.append(
                f"{label:<16}{kind:>9}{fmt(_med([x.qps for x in smp]), 0):>9}"
                f"{fmt(_med([x.p50_ms for x in smp]), 3):>9}"
                f"{fmt(_med([x.p95_ms for x in smp]), 3):>9}"
                f"{fmt(_med([x.p99_ms for x in smp]), 3):>9}"
                f"{fmt(_med([x.cpu_us_per_query for x in smp]), 1):>10}"
                f"{fmt(_med([x.upstream_cpu_us_per_query for x in smp]), 1):>11}"
                f"{(str(max(conns)) if conns else '-'):>7}"
                f"{sum(x.lost for x in smp):>7}{bad:>10}"
            )
        for stub in ("stub-dot", "stub-doh"):
            r = report.ratios
            out.append(
                f"median ratio {stub}/unbound-fwd: "
                f"QPS {fmt(r.get(f'{workload}/{stub}/qps'))}  "
                f"p50 {fmt(r.get(f'{workload}/{stub}/p50'))}  "
                f"p99 {fmt(r.get(f'{workload}/{stub}/p99'))}  "
                f"CPU/query {fmt(r.get(f'{workload}/{stub}/cpu'))}"
            )
    if report.fixed_rate:
        out += ["", f"== forwarding latency at {s['fixed_qps']} QPS (UDP to the front end)"]
        out.append(f"{'front end':<16}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'answers':>9}")
        for x in report.fixed_rate:
            m = x.sample
            out.append(
                f"{m.server:<16}{fmt(m.p50_ms, 3):>9}{fmt(m.p95_ms, 3):>9}"
                f"{fmt(m.p99_ms, 3):>9}{m.completed:>9}"
            )
    out += ["", "conns: TCP connections the front end held to the DoT/DoH port after the run"]
    out += [f"note: {n}" for n in report.notes]
    out += ["", f"command: {report.command}"]
    return "\n".join(out)


# ---------------------------------------------------------------- entry point


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=None, help="rotating rounds (default 3)")
    p.add_argument("--duration", type=float, default=None, help="seconds per dnsperf run (5)")
    p.add_argument("--quick", action="store_true", help="1 round of 2 s runs")
    p.add_argument("--clients", type=int, default=8, help="dnsperf -c (default 8)")
    p.add_argument("--outstanding", type=int, default=100, help="dnsperf -q (default 100)")
    p.add_argument("--fixed-qps", type=int, default=1000, help="rate of the latency run (0: off)")
    p.add_argument("--no-hits", action="store_true", help="skip the cache-hit workload")
    p.add_argument("--no-direct", action="store_true", help="skip dnsperf -m dot/doh direct")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    args = p.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.duration is None:
        args.duration = 2.0 if args.quick else 5.0
    if args.rounds < 1 or args.duration <= 0 or args.fixed_qps < 0:
        p.error("--rounds must be >= 1, --duration > 0, --fixed-qps >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw)
    command = " ".join(["python", "bench/encrypted.py", *raw])
    return run_and_report(
        tools=("dnsperf", "unbound", "openssl"),
        prefix="stubbench-tls-",
        keep_tmp=args.keep_tmp,
        json_path=args.json,
        body=lambda workdir, harness: run_encrypted(args, workdir, harness, command),
        render_report=render,
    )


if __name__ == "__main__":
    sys.exit(main())
