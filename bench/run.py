"""One-command benchmark: stubresolver against dnsmasq, both in front of the same unbound.

Everything runs on 127.0.40.0/24: unbound is the upstream (a generated zone of 10,000 names
plus a wildcard for unique names), dnsmasq is the yardstick, stubresolver is measured with
``tunnel.interfaces: [lo]``. dnsperf drives each server in turn, alternating the order every
round. Only processes started here are stopped, by PID. See bench/README.md.

Timings live here and in the closing note of issue 4, never in pass/fail tests.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/run.py`: testkit is at the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.dnsperf import (
    MAX_QPS_SERVER,
    MAX_QPS_UPSTREAM,
    QueryFiles,
    Sample,
    Settings,
    measured_run,
    run_dnsperf,
)
from bench.harness import Harness, Server, run_and_report
from bench.report import WORKLOADS, Report, fmt, rcode_summary, render, summarize
from testkit.ports import free_port
from testkit.procfs import rss_kb
from testkit.stubconfig import plain_stub_config
from testkit.unbound import bench_config
from testkit.zones import HIT_NAMES

UPSTREAM_IP = "127.0.40.1"
DNSMASQ_IP = "127.0.40.2"
STUB_IP = "127.0.40.3"
DNSMASQ_FWD_IP = "127.0.40.4"

FILL_ENTRIES = 100_000

DNSMASQ_HIT_CACHE = 10_000  # large enough for the 10,000 hit names
DNSMASQ_DEFAULT_CACHE = 150  # dnsmasq's built-in default: the forwarding yardstick


def yardstick_for(workload: str, dm_hit: Server, dm_fwd: Server) -> Server:
    return dm_hit if workload == "cache-hit" else dm_fwd


def run_benchmark(args: argparse.Namespace, workdir: Path, harness: Harness) -> Report:
    settings = Settings(
        duration=args.duration, rounds=args.rounds, clients=args.clients,
        outstanding=args.outstanding, fixed_qps=1000,
    )  # fmt: skip
    report = Report(settings=asdict(settings), stub_kind=args.stub)
    files = QueryFiles(workdir)

    def note(msg: str) -> None:
        report.notes.append(msg)
        print(f"  note: {msg}", flush=True)

    # ---- start the servers
    up_port = free_port(UPSTREAM_IP)
    ub_conf = workdir / "unbound.conf"
    ub_conf.write_text(bench_config(UPSTREAM_IP, up_port, str(workdir), HIT_NAMES))
    print(f"starting unbound on {UPSTREAM_IP}:{up_port}", flush=True)
    unbound = harness.spawn("unbound", UPSTREAM_IP, up_port, ["unbound", "-d", "-c", str(ub_conf)])
    report.startup_ms["unbound"] = [unbound.start_s * 1000]

    def dnsmasq(name: str, ip: str, cache: int) -> Server:
        conf = workdir / f"{name}.conf"
        conf.write_text("")  # keeps /etc/dnsmasq.conf out
        port = free_port(ip)
        print(f"starting {name} on {ip}:{port} (cache-size {cache})", flush=True)
        srv = harness.spawn(
            name, ip, port,
            ["dnsmasq", f"--conf-file={conf}", "--keep-in-foreground", "--no-resolv",
             "--no-hosts", f"--server={UPSTREAM_IP}#{up_port}", f"--cache-size={cache}",
             f"--listen-address={ip}", "--bind-interfaces", f"--port={port}", "--pid-file="],
        )  # fmt: skip
        report.startup_ms.setdefault("dnsmasq", []).append(srv.start_s * 1000)
        return srv

    dm_hit = dnsmasq("dnsmasq", DNSMASQ_IP, DNSMASQ_HIT_CACHE)
    dm_fwd = dnsmasq("dnsmasq-150", DNSMASQ_FWD_IP, DNSMASQ_DEFAULT_CACHE)

    def start_stub(label: str) -> Server:
        port = free_port(STUB_IP)
        if args.stub == "dnsmasq":  # harness development stand-in
            conf = workdir / f"{label}.conf"
            conf.write_text("")
            argv = ["dnsmasq", f"--conf-file={conf}", "--keep-in-foreground", "--no-resolv",
                    "--no-hosts", f"--server={UPSTREAM_IP}#{up_port}", "--cache-size=200000",
                    f"--listen-address={STUB_IP}", "--bind-interfaces", f"--port={port}",
                    "--pid-file="]  # fmt: skip
        else:
            conf = workdir / f"{label}.yaml"
            conf.write_text(
                plain_stub_config(STUB_IP, port, UPSTREAM_IP, up_port, udp_batch=args.udp_batch)
            )
            argv = [sys.executable, "-m", "stubresolver", "run", "--config", str(conf)]
        print(f"starting {label} ({args.stub}) on {STUB_IP}:{port}", flush=True)
        srv = harness.spawn(label, STUB_IP, port, argv)
        srv.name = "stub"
        report.startup_ms.setdefault("stub", []).append(srv.start_s * 1000)
        return srv

    stub = start_stub("stub")
    for srv in (unbound, dm_hit, dm_fwd, stub):
        report.rss_idle_mb[srv.name] = rss_kb(srv.pid) / 1024.0

    # ---- warm the caches (and check that every server answers the hit names)
    print("warming caches with the 10,000 hit names", flush=True)
    for srv in (dm_hit, stub):
        res = run_dnsperf(
            workdir, srv, files.hits, proto="udp", duration=60, settings=settings, once=True,
            label=f"warm-{srv.name}",
        )  # fmt: skip
        if res.completed < HIT_NAMES or res.rcodes.get("NOERROR", 0) < res.completed:
            note(f"warm-up of {srv.name}: {res.completed} answers, rcodes {res.rcodes}")

    def datafile(workload: str, srv: Server, duration: float, rate: int | None = None) -> Path:
        if workload == "cache-hit":
            return files.hits
        cap = MAX_QPS_UPSTREAM if srv is unbound else MAX_QPS_SERVER
        return files.unique(int((rate or cap) * duration * 1.2) + 1000)

    def one(workload: str, proto: str, srv: Server, rnd: int) -> Sample:
        data = datafile(workload, srv, settings.duration)
        sample = measured_run(
            workdir, srv, unbound, data, workload=workload, proto=proto, rnd=rnd,
            settings=settings, duration=settings.duration, once=workload == "forwarding",
        )  # fmt: skip
        if workload == "forwarding":
            data.unlink()
        report.samples.append(sample)
        print(
            f"  {workload:10} {proto} r{rnd} {srv.name:12} {sample.qps:9.0f} qps"
            f"  p50 {fmt(sample.p50_ms, 3)} ms  cpu {fmt(sample.cpu_us_per_query, 1)} us/q"
            f"  rss {sample.rss_mb:.1f} MB  {rcode_summary(sample.rcodes)}",
            flush=True,
        )
        for err in sample.errors:
            note(f"{srv.name} {workload}/{proto} r{rnd}: {err}")
        if sample.end_of_file:
            note(f"{srv.name} {workload}/{proto} r{rnd}: query file ran out; raise MAX_QPS_*")
        return sample

    # ---- reference: the upstream alone, once per workload
    print("reference: unbound direct", flush=True)
    for workload, proto in WORKLOADS:
        one(workload, proto, unbound, 0)

    # ---- alternating rounds
    for rnd in range(1, settings.rounds + 1):
        print(f"round {rnd}/{settings.rounds}", flush=True)
        for workload, proto in WORKLOADS:
            pair = [yardstick_for(workload, dm_hit, dm_fwd), stub]
            if rnd % 2 == 0:
                pair.reverse()
            for srv in pair:
                one(workload, proto, srv, rnd)

    # ---- latency at a fixed 1,000 QPS
    print(f"latency at {settings.fixed_qps} QPS (udp)", flush=True)
    for workload in ("cache-hit", "forwarding"):
        for srv in (unbound, yardstick_for(workload, dm_hit, dm_fwd), stub):
            data = datafile(workload, srv, settings.duration, settings.fixed_qps)
            s = measured_run(
                workdir, srv, unbound, data, workload=workload, proto="udp", rnd=0,
                settings=settings, duration=settings.duration, rate=settings.fixed_qps,
                once=workload == "forwarding",
            )  # fmt: skip
            report.latency_at_fixed_qps.append(s)
            print(
                f"  {workload:10} {srv.name:12} p50 {fmt(s.p50_ms, 3)} ms"
                f"  p95 {fmt(s.p95_ms, 3)} ms  ({s.completed} answers)",
                flush=True,
            )

    # ---- memory with 100,000 cached entries, on a fresh stub (also a second start sample)
    harness.stop(stub)
    print(f"filling a fresh stub with {FILL_ENTRIES} unique names", flush=True)
    fresh = start_stub("stub-fill")
    report.stub_rss_before_fill_mb = rss_kb(fresh.pid) / 1024.0
    fill = files.unique(FILL_ENTRIES)
    res = run_dnsperf(
        workdir, fresh, fill, proto="udp", duration=120, settings=settings, once=True,
        label="fill",
    )  # fmt: skip
    time.sleep(0.2)
    report.fill_completed = res.completed
    report.stub_rss_100k_mb = rss_kb(fresh.pid) / 1024.0
    if res.completed < FILL_ENTRIES:
        note(f"fill: only {res.completed} of {FILL_ENTRIES} answered ({res.rcodes})")
    harness.stop(fresh)

    summarize(report)
    return report


# ---------------------------------------------------------------- entry point


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 3)")
    p.add_argument("--duration", type=float, default=None, help="seconds per dnsperf run (5)")
    p.add_argument("--quick", action="store_true", help="2 rounds of 2 s runs")
    p.add_argument("--clients", type=int, default=8, help="dnsperf -c (default 8)")
    p.add_argument("--outstanding", type=int, default=100, help="dnsperf -q (default 100)")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    p.add_argument(
        "--stub", choices=("stubresolver", "dnsmasq"), default="stubresolver",
        help="what runs in the stub slot; 'dnsmasq' is a stand-in for harness development",
    )  # fmt: skip
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    p.add_argument(
        "--udp-batch", choices=("on", "off"), default="on",
        help="server.udp_batch for the stub: recvmmsg/sendmmsg (on) or one call per datagram",
    )  # fmt: skip
    args = p.parse_args(argv)
    args.udp_batch = args.udp_batch == "on"
    if args.rounds is None:
        args.rounds = 2 if args.quick else 3
    if args.duration is None:
        args.duration = 2.0 if args.quick else 5.0
    if args.rounds < 1 or args.duration <= 0:
        p.error("--rounds must be >= 1 and --duration > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_and_report(
        tools=("dnsperf", "dnsmasq", "unbound"),
        prefix="stubbench-",
        keep_tmp=args.keep_tmp,
        json_path=args.json,
        body=lambda workdir, harness: run_benchmark(args, workdir, harness),
        render_report=render,
    )


if __name__ == "__main__":
    sys.exit(main())
