"""A real systemd-resolved in a private world, for the resolved takeover backend's tests.

The world is a PrivateSystem (mount + network namespace, /etc a copy of the host's) with its
own tmpfs on /run. In it:

- a private ``dbus-daemon`` on /run/dbus/system_bus_socket with a permissive system-bus
  policy (anyone may own, send and receive): resolved and resolvectl speak D-Bus, and the
  host's bus is out of reach behind the private /run;
- the ``systemd-resolve`` user and group in the world's passwd and group (the world's /etc
  is already a bind-mounted copy, so the copy's files are what the world sees): resolved
  drops to that user when started as root;
- the unpacked systemd-resolved (testkit.resolvedpkg), under a small supervisor that starts
  it again whenever it exits, as systemd would (Restart=);
- a veth link ``rveth0`` (per-link DNS needs a real link: resolved keeps none on ``lo``)
  whose peer sits in a second network namespace, the "ISP", where dnsmasq answers every name
  and logs every query: the link's own DNS server, the one that must hear nothing.

There is no systemd as PID 1 here, so ``systemctl`` on the world's PATH is a shim: it does
the one thing the backend asks of systemctl, ``try-restart systemd-resolved.service``, by
stopping the test's resolved (the supervisor starts it again) and returning once the new one
answers on the bus, as systemctl does for resolved's Type=notify unit. That is the only
stand-in: resolved, its bus, resolvectl and the DNS traffic are all real. Every shim call is
recorded in ``calls``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from testkit.privatesys import PrivateSystem
from testkit.processes import Process, start, stop_popen, wait_until
from testkit.resolvedpkg import ResolvedPackage

LINK, PEER = "rveth0", "rveth1"
LINK_ADDRESS, ISP = "10.110.0.1", "10.110.0.2"  # /24 on the veth; the ISP's DNS server
ISP_ANSWER = "192.0.2.99"  # the ISP answers every name with this

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
    <allow send_type="method_call"/>
  </policy>
</busconfig>
"""

SUPERVISOR = """#!/bin/sh
# Plays systemd's Restart= for the test's resolved: starts it again whenever it exits (the
# systemctl shim stops it to restart it); SIGTERM stops resolved and then this loop.
pidfile=$1; shift
trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 0' TERM INT
while :; do
  "$@" &
  child=$!
  echo "$child" > "$pidfile.new" && mv "$pidfile.new" "$pidfile"
  wait "$child"
  sleep 0.1  # a resolved that fails at once must not spin
done
"""

SYSTEMCTL = """#!/bin/sh
# Not systemctl: the test world has no systemd as PID 1. This does only what the resolved
# backend asks (try-restart systemd-resolved.service): stop the test's resolved, which its
# supervisor starts again, and return once the new one answers on the bus.
echo "systemctl $*" >> "{calls}"
if [ "$*" != "try-restart systemd-resolved.service" ]; then
  echo "systemctl shim: only 'try-restart systemd-resolved.service' is supported" >&2
  exit 1
fi
old=$(cat "{pidfile}")
kill -TERM "$old" || exit 1
i=0
while [ $i -lt 400 ]; do
  new=$(cat "{pidfile}" 2>/dev/null)
  if [ -n "$new" ] && [ "$new" != "$old" ] && resolvectl status >/dev/null 2>&1; then
    exit 0
  fi
  sleep 0.05
  i=$((i + 1))
done
echo "systemctl shim: resolved did not come back in 20 s" >&2
exit 1
"""

RESOLVECTL = """#!/bin/sh
# resolved's own resolvectl from the unpacked package, with the package's library.
echo "resolvectl $*" >> "{calls}"
LD_LIBRARY_PATH="{lib}" exec "{binary}" "$@"
"""


class ResolvedSystem:
    def __init__(self, tmp: Path, package: ResolvedPackage) -> None:
        self.tmp = tmp
        self.package = package
        self.sys = PrivateSystem(tmp, private_run=True)
        self.bin = tmp / "bin"  # first on the world's PATH: resolvectl, systemctl
        self.calls = tmp / "calls.log"
        self.pidfile = tmp / "resolved.pid"
        self.isp_log = tmp / "isp.log"
        self._isp_holder: subprocess.Popen[bytes] | None = None
        self._procs: list[Process] = []
        self._supervisor: Process | None = None

    @property
    def etc(self) -> Path:
        return self.sys.etc

    @property
    def env(self) -> dict[str, str]:
        """The environment for commands in the world: our tools first on PATH."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DBUS_")}
        env["PATH"] = f"{self.bin}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        return env

    def __enter__(self) -> ResolvedSystem:
        self.sys.__enter__()
        try:
            self._prepare_etc()
            self._write_tools()
            self._build_isp()
            self._start_bus()
            self._start_resolved()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._supervisor is not None:
                self._supervisor.stop(signal.SIGTERM, grace=10)
                self._kill_orphaned_resolved()
            for proc in reversed(self._procs):
                proc.stop()
            if self._isp_holder is not None:
                stop_popen(self._isp_holder)
                if self._isp_holder.stdout is not None:
                    self._isp_holder.stdout.close()
        finally:
            self.sys.__exit__()

    # -- setup -----------------------------------------------------------------------------

    def _prepare_etc(self) -> None:
        with (self.etc / "passwd").open("a") as f:
            f.write("systemd-resolve:x:990:990:systemd Resolver:/:/usr/sbin/nologin\n")
        with (self.etc / "group").open("a") as f:
            f.write("systemd-resolve:x:990:\n")
        systemd = self.etc / "systemd"
        systemd.mkdir(exist_ok=True)
        (systemd / "resolved.conf").write_bytes(
            (self.package.root / "etc/systemd/resolved.conf").read_bytes()
        )
        # As on a fresh install: no drop-in directory (the backend must make it, and remove
        # only what it made).
        subprocess.run(["rm", "-rf", str(systemd / "resolved.conf.d")], check=True, timeout=30)
        # As Debian and Ubuntu ship it: resolv.conf is resolved's stub file, in /run.
        resolv = self.etc / "resolv.conf"
        resolv.unlink(missing_ok=True)
        resolv.symlink_to("../run/systemd/resolve/stub-resolv.conf")

    def _write_tools(self) -> None:
        self.bin.mkdir()
        tools = {
            "systemctl": SYSTEMCTL.format(calls=self.calls, pidfile=self.pidfile),
            "resolvectl": RESOLVECTL.format(
                calls=self.calls, lib=self.package.library_dir, binary=self.package.resolvectl
            ),
            "resolved-supervise": SUPERVISOR,
        }
        for name, text in tools.items():
            (self.bin / name).write_text(text)
            (self.bin / name).chmod(0o755)
        (self.tmp / "bus.conf").write_text(BUS_CONFIG)

    def _build_isp(self) -> None:
        self._isp_holder = subprocess.Popen(
            ["unshare", "--net", "--", "sh", "-c",
             "ip link set lo up && echo ready && exec sleep 1800"],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        assert self._isp_holder.stdout is not None
        if self._isp_holder.stdout.readline().strip() != b"ready":
            raise RuntimeError("the ISP namespace did not start")
        self.add_link(LINK, PEER, LINK_ADDRESS, ISP)
        empty = self.tmp / "dnsmasq.conf"
        empty.write_text("")
        dnsmasq = self._start(
            "isp",
            ["nsenter", "-t", str(self._isp_holder.pid), "-n", "dnsmasq", f"--conf-file={empty}",
             "--keep-in-foreground", "--log-queries", f"--log-facility={self.isp_log}",
             "--no-resolv", "--no-hosts", f"--address=/#/{ISP_ANSWER}",
             f"--listen-address={ISP}", "--bind-interfaces", "--port=53", "--user=root",
             "--pid-file="],
        )  # fmt: skip
        wait_until(
            lambda: self.isp_log.exists() and "started" in self.isp_log.read_text(errors="replace"),
            dnsmasq,
            timeout=10,
            what="ISP dnsmasq",
        )

    def add_link(self, link: str, peer: str, address: str, peer_address: str) -> None:
        """A veth ``link`` in the world (``address``/24) whose ``peer`` is in the ISP's
        namespace (``peer_address``/24)."""
        assert self._isp_holder is not None
        isp = str(self._isp_holder.pid)
        steps = [
            self.sys.argv(["ip", "link", "add", link, "type", "veth", "peer", "name", peer,
                           "netns", isp]),
            self.sys.argv(["ip", "addr", "add", f"{address}/24", "dev", link]),
            self.sys.argv(["ip", "link", "set", link, "up"]),
            ["nsenter", "-t", isp, "-n", "ip", "addr", "add", f"{peer_address}/24", "dev", peer],
            ["nsenter", "-t", isp, "-n", "ip", "link", "set", peer, "up"],
        ]  # fmt: skip
        for argv in steps:
            subprocess.run(argv, check=True, capture_output=True, timeout=30)

    def _start_bus(self) -> None:
        bus = self.sys.start(
            "dbus",
            ["dbus-daemon", f"--config-file={self.tmp / 'bus.conf'}", "--nofork", "--nopidfile"],
            self.tmp / "dbus.log",
        )
        self._procs.append(bus)
        socket = self.sys.path("/run/dbus/system_bus_socket")
        wait_until(socket.exists, bus, timeout=10, what="private dbus-daemon")

    def _start_resolved(self) -> None:
        env = self.env | {"LD_LIBRARY_PATH": str(self.package.library_dir)}
        self._supervisor = self.sys.start(
            "resolved",
            [str(self.bin / "resolved-supervise"), str(self.pidfile), str(self.package.daemon)],
            self.tmp / "resolved.log",
            env=env,
        )
        wait_until(
            lambda: self.resolvectl("status").returncode == 0,
            self._supervisor,
            timeout=20,
            what="systemd-resolved",
            interval=0.1,
        )

    def _start(self, name: str, argv: list[str]) -> Process:
        proc = start(name, argv, self.tmp / f"{name}.out")
        self._procs.append(proc)
        return proc

    def _kill_orphaned_resolved(self) -> None:
        """The supervisor passes SIGTERM on; if it had to be killed, resolved is left."""
        with contextlib.suppress(OSError, ValueError):
            pid = int(self.pidfile.read_text())
            if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd-resolve":
                os.kill(pid, signal.SIGKILL)

    # -- looking at it ---------------------------------------------------------------------

    def resolvectl(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return self.sys.run(["resolvectl", *args], env=self.env, timeout=timeout)

    def resolved_pid(self) -> int:
        return int(self.pidfile.read_text())

    def isp_queries(self) -> int:
        try:
            text = self.isp_log.read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return sum(1 for line in text.splitlines() if " query[" in line)
