"""Command-line entry points; argument handling only (DESIGN.md "cli")."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stubresolver import __version__
from stubresolver.config import DEFAULT_CONTROL_SOCKET, Config, load_config
from stubresolver.config import warnings as config_warnings
from stubresolver.errors import ConfigError

DEFAULT_CONFIG = "/etc/stubresolver/config.yaml"
EXIT_CONFIG = 2  # like argparse: the invocation cannot work as given
EXIT_RUNTIME = 1

# Commands that talk to the running daemon over the control socket (stubresolver.control).
CONTROL_COMMANDS = {
    "status": "show the running daemon's tunnel, upstreams, cache and query outcomes",
    "flush": "drop every cached answer",
    "tunnel-changed": "look at the tunnel now (for VPN up/down hooks)",
    "reload": "re-read the config like SIGHUP (exit 2 and the reason if it is rejected)",
    "tunnel-up": "hand the DNS servers and domains the VPN announced to the daemon (VPN hooks)",
    "tunnel-down": "the VPN is going down: forget its servers and refuse at once (VPN hooks)",
    "explain": "say what the daemon would do with a query now, and why (changes nothing)",
}

_EPILOGS = {
    "explain": "The answer is one of: answered locally (and by which rule), NODATA by "
    "policy.aaaa, served from the cache (with the seconds left), forwarded (the route, the "
    "upstreams in the order they would be tried, the tunnel interface), or REFUSED (the "
    "tunnel is down, or the name is malformed). It reads the daemon's live state and "
    "changes nothing: no counter moves and nothing is sent. Example: stubresolver explain "
    "www.example.com AAAA",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stubresolver",
        description="Fail-closed local DNS stub that forwards only through the VPN tunnel.",
    )
    parser.add_argument("--version", action="version", version=f"stubresolver {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("run", "serve DNS until SIGTERM/SIGINT (SIGHUP reloads the config)"),
        ("check-config", "validate a config file and exit (0 ok, 2 invalid)"),
    ):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument(
            "--config", "-c", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})"
        )
        if name == "run":
            cmd.add_argument(
                "--dry-run",
                action="store_true",
                help="validate, print the takeover plan and exit; bind and change nothing",
            )
    text = "give back the resolv.conf a takeover replaced, from the journal in state_dir"
    cmd = sub.add_parser("restore", help=text, description=text)
    where = cmd.add_mutually_exclusive_group()
    where.add_argument(
        "--config", "-c", default=DEFAULT_CONFIG, help=f"read state_dir from it ({DEFAULT_CONFIG})"
    )
    where.add_argument("--state-dir", help="the state_dir holding the journal")
    text = (
        "test for DNS leaks: the system's DNS settings, probes while every non-tunnel "
        "interface is sniffed, the guard (exit 0 clean, 1 leak or misconfiguration, 2 the "
        "test could not run; root)"
    )
    cmd = sub.add_parser("leaktest", help=text, description=text)
    where = cmd.add_mutually_exclusive_group()
    where.add_argument("--socket", "-s", help="the daemon's control socket")
    where.add_argument("--config", "-c", help="read control_socket from this config file")
    cmd.add_argument("--json", action="store_true", help="machine-readable report")
    cmd.add_argument(
        "--whoami", action="store_true", help="also show the resolver egress the world sees"
    )
    cmd.add_argument(
        "--probe-domain",
        default="example.com",
        help="probe names are random labels under it (default example.com)",
    )
    cmd.add_argument("--window", type=float, default=3.0, help="seconds of sniffing (default 3)")
    text = "the nftables guard: 'off' removes its table (a lockdown's too), 'show' prints it"
    cmd = sub.add_parser("guard", help=text, description=text)
    cmd.add_argument("action", choices=("off", "show"))
    text = (
        "as root: a throwaway world of network namespaces (real WireGuard tunnel, a logging "
        "ISP resolver, the VPN's DNS) showing the stub at work; removed when it ends"
    )
    cmd = sub.add_parser("demo", help=text, description=text)
    # The letter in the world's names (sr<pid><tag>-c ...): 'e' for the tests' interrupted
    # runs; the other test worlds use letters of their own.
    cmd.add_argument("--tag", default="d", choices=("d", "e"), help=argparse.SUPPRESS)
    _add_install_commands(sub)
    for name, text in CONTROL_COMMANDS.items():
        cmd = sub.add_parser(name, help=text, description=text, epilog=_EPILOGS.get(name))
        where = cmd.add_mutually_exclusive_group()
        where.add_argument(
            "--socket",
            "-s",
            help=f"the daemon's control socket (default {DEFAULT_CONTROL_SOCKET}, or "
            "control_socket from --config)",
        )
        where.add_argument("--config", "-c", help="read control_socket from this config file")
        if name in ("status", "explain"):
            cmd.add_argument("--json", action="store_true", help="print the raw JSON response")
        if name == "explain":
            cmd.add_argument("name", help="the query name, e.g. www.example.com")
            cmd.add_argument("type", nargs="?", default="A", help="the query type (default A)")
        if name in ("tunnel-up", "tunnel-down"):
            cmd.add_argument(
                "--interface",
                "-i",
                required=name == "tunnel-up",
                help="the tunnel device (tunnel-down: default the announced one)",
            )
        if name == "tunnel-up":
            cmd.add_argument(
                "--dns",
                action="append",
                default=[],
                metavar="IP",
                help="a DNS server the VPN announced (repeat for more; IP addresses only)",
            )
            cmd.add_argument(
                "--domain",
                action="append",
                default=[],
                metavar="DOMAIN",
                help="a domain the VPN announced: names below it go to its servers",
            )
    return parser


def _add_install_commands(sub: Any) -> None:
    text = (
        "install the service: a venv under --prefix with this stubresolver, the stubresolver "
        "user and group, /etc/stubresolver/config.yaml (never overwritten), the unit and the "
        "VPN hooks; then enable and start it and print its status. Idempotent."
    )
    cmd = sub.add_parser("install", help="install and start the systemd service", description=text)
    cmd.add_argument("--prefix", default="/opt/stubresolver", help="the venv (/opt/stubresolver)")
    cmd.add_argument(
        "--source",
        help="what pip installs into it: a wheel, an sdist, a source tree or a requirement "
        "(default: where this stubresolver was installed from)",
    )
    cmd.add_argument(
        "--pip-option",
        action="append",
        default=[],
        metavar="OPTION",
        help="pass an option to pip install, e.g. --pip-option=--no-index (repeat for more)",
    )
    cmd.add_argument(
        "--system-site-packages",
        action="store_true",
        help="let the venv see the system's Python packages (e.g. Debian's python3-yaml)",
    )
    cmd.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    text = (
        "stop the service, restore the system's DNS from the takeover journal, then remove "
        "what `install` created (its manifest says what); an edited or pre-existing file stays"
    )
    cmd = sub.add_parser("uninstall", help="restore DNS and remove the service", description=text)
    cmd.add_argument(
        "--purge", action="store_true", help="also remove the config and files edited since"
    )
    cmd.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")


def _install(args: argparse.Namespace) -> int:
    from stubresolver.errors import InstallError  # noqa: PLC0415 - keep run light
    from stubresolver.install import session  # noqa: PLC0415
    from stubresolver.install.layout import Layout  # noqa: PLC0415
    from stubresolver.install.plan import Source  # noqa: PLC0415
    from stubresolver.install.source import default_spec  # noqa: PLC0415

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        if args.command == "uninstall":
            return session.uninstall(Layout(), purge=args.purge, dry_run=args.dry_run, say=say)
        source = Source(
            spec=args.source or default_spec(),
            version=__version__,
            python=sys.executable,
            pip_options=tuple(args.pip_option),
            system_site_packages=args.system_site_packages,
        )
        layout = Layout(prefix=Path(args.prefix).absolute())
        return session.install(layout, source, dry_run=args.dry_run, say=say)
    except InstallError as exc:
        print(f"stubresolver {args.command}: {exc}", file=sys.stderr)
        return EXIT_RUNTIME


def _socket_path(args: argparse.Namespace) -> Path:
    """--socket, else control_socket from --config, else the default. Raises ConfigError."""
    if args.socket:
        return Path(args.socket)
    if args.config:
        config = load_config(args.config)
        if config.control_socket is None:
            raise ConfigError("control_socket", f"is turned off in {args.config}")
        return config.control_socket
    return Path(DEFAULT_CONTROL_SOCKET)


def _control(args: argparse.Namespace) -> int:
    from stubresolver.control import request  # noqa: PLC0415 - keep run light
    from stubresolver.errors import ControlError  # noqa: PLC0415

    try:
        path = _socket_path(args)
    except ConfigError as exc:
        print(f"stubresolver: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        response = request(path, args.command, fields=_fields(args))
    except ControlError as exc:
        print(f"stubresolver: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    if not response["ok"]:
        print(f"stubresolver {args.command}: {response.get('error')}", file=sys.stderr)
        return EXIT_CONFIG if args.command == "reload" else EXIT_RUNTIME
    if args.command == "status":
        print(json.dumps(response, indent=2) if args.json else format_status(response))
    elif args.command == "explain":
        print(json.dumps(response, indent=2) if args.json else format_explain(response))
    elif args.command == "flush":
        print(f"flushed {response.get('flushed', 0)} cached answer(s)")
    elif args.command == "tunnel-up":
        vpn = response.get("vpn") or {}
        print(
            f"vpn on {vpn.get('interface')}: servers {', '.join(vpn.get('servers') or []) or '-'}"
            f"; domains {', '.join(vpn.get('domains') or []) or '-'}"
        )
        print(f"tunnel {_tunnel_text(response.get('tunnel') or {})}")
    elif args.command in ("tunnel-changed", "tunnel-down"):
        tunnel = response.get("tunnel") or {}
        news = "changed" if response.get("changed") else "unchanged"
        print(f"tunnel {_tunnel_text(tunnel)} ({news})")
    else:
        print("config reloaded")
    return 0


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    """The request fields of tunnel-up / tunnel-down / explain; none for the others."""
    fields: dict[str, Any] = {}
    if getattr(args, "interface", None):
        fields["interface"] = args.interface
    if args.command == "tunnel-up":
        fields["dns"] = args.dns
        fields["domains"] = args.domain
    if args.command == "explain":
        fields["name"] = args.name
        fields["type"] = args.type
    return fields


def _duration(seconds: float) -> str:
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    if days or hours:
        parts.append(f"{hours}h")
    if days or hours or minutes:
        parts.append(f"{minutes}m")
    parts.append(f"{secs}s")
    return " ".join(parts)


def _tunnel_text(tunnel: dict[str, Any]) -> str:
    if not tunnel.get("up"):
        name = tunnel.get("ifname")
        return f"down{f' ({name})' if name else ''}, epoch {tunnel.get('epoch')}"
    addresses = ", ".join(tunnel.get("addresses") or []) or "-"
    return (
        f"up on {tunnel.get('ifname')} (ifindex {tunnel.get('ifindex')}, {addresses}), "
        f"epoch {tunnel.get('epoch')}"
    )


def format_status(status: dict[str, Any]) -> str:
    """The human-readable `status` summary."""
    lines = [
        f"stubresolver {status.get('version')}, pid {status.get('pid')}, "
        f"up {_duration(float(status.get('uptime') or 0))}",
        f"listening on {', '.join(status.get('listen') or [])}",
        f"tunnel: {_tunnel_text(status.get('tunnel') or {})}",
    ]
    if not (status.get("tunnel") or {}).get("up"):
        lines.append("        every query that needs the upstreams is REFUSED until it is up")
    lines.append("upstreams:")
    for up in status.get("upstreams") or []:
        srtt = up.get("srtt_ms")
        text = [
            f"  {up.get('url')}",
            "healthy" if up.get("healthy") else "UNHEALTHY",
            f"srtt {srtt:.1f} ms" if isinstance(srtt, int | float) else "srtt -",
            f"answers {up.get('answers')}",
            f"failures {up.get('failures')}",
        ]
        if "open_connections" in up:
            text.append(
                f"connections {up['open_connections']}, handshakes {up.get('handshakes')} "
                f"({up.get('resumed')} resumed)"
            )
        lines.append("  ".join(text))
        if up.get("last_error"):
            lines.append(f"      last error: {up['last_error']}")
    cache = status.get("cache") or {}
    if cache.get("enabled"):
        lines.append(
            f"cache: {cache.get('entries')} entries, {cache.get('bytes')} bytes, "
            f"{cache.get('hits')} hits, {cache.get('misses')} misses"
        )
    else:
        lines.append("cache: disabled")
    lines.append(f"takeover: {_takeover_text(status.get('takeover') or {})}")
    lines.append(f"guard: {_guard_text(status.get('guard') or {})}")
    if status.get("privileges"):
        lines.append(f"privileges: {_privileges_text(status['privileges'])}")
    vpn = status.get("vpn")
    if vpn:
        lines.append(
            f"vpn: {vpn.get('interface')} announced {', '.join(vpn.get('servers') or []) or '-'}"
            f"; domains {', '.join(vpn.get('domains') or []) or '-'}"
        )
    counted = {k: v for k, v in (status.get("outcomes") or {}).items() if v}
    lines.append(
        "outcomes: " + (", ".join(f"{k} {v}" for k, v in counted.items()) or "no queries yet")
    )
    return "\n".join(lines)


_EXPLAIN_HEADLINES = {
    "local": "answered locally",
    "aaaa-nodata": "answered locally: NODATA (AAAA policy)",
    "cached": "served from the cache",
    "forwarded": "forwarded",
    "refused-tunnel-down": "REFUSED: the tunnel is down",
    "refused-malformed-name": "REFUSED: malformed name",
}


def format_explain(result: dict[str, Any]) -> str:
    """The human-readable `explain` answer: the outcome, the reason, then the detail."""
    outcome = str(result.get("outcome"))
    lines = [
        f"{result.get('name')} {result.get('type')}: {_EXPLAIN_HEADLINES.get(outcome, outcome)}",
        f"  why: {result.get('reason')}",
    ]
    if result.get("rule"):
        lines.append(f"  rule: {result['rule']}")
    if result.get("rcode") and outcome != "forwarded":
        answers = result.get("answers") or []
        lines.append(f"  answer: {result['rcode']}{'' if answers else ' (no records)'}")
        lines.extend(f"    {line}" for line in answers)
    if result.get("ede"):
        lines.append(f"  extended error {result['ede']['code']}: {result['ede']['text']}")
    for entry in result.get("cache") or []:
        lines.append(
            f"  cached for queries with {entry['flags']}: {entry['rcode']}, "
            f"{entry['ttl_left']} s left"
        )
        lines.extend(f"    {line}" for line in entry.get("answers") or [])
    miss = result.get("miss") if outcome == "cached" else None
    if miss and miss.get("outcome") == "forwarded":
        lines.append("  a query in another form would be forwarded:")
        lines.extend(_forward_lines(miss, "    "))
    elif miss:
        lines.append(f"  a query in another form: REFUSED ({miss.get('reason')})")
    if outcome == "forwarded":
        lines.extend(_forward_lines(result, "  "))
    return "\n".join(lines)


def _forward_lines(forward: dict[str, Any], pad: str) -> list[str]:
    route = forward.get("route") or {}
    kind = route.get("kind")
    if kind == "route":
        via = f"route {route.get('suffix')} (routes in the config)"
    elif kind == "announced":
        via = f"domain {route.get('suffix')} the VPN announced"
    else:
        via = "default upstreams (no route matches)"
    addresses = ", ".join(forward.get("source_addresses") or []) or "-"
    lines = [
        f"{pad}route: {via}",
        f"{pad}interface: {forward.get('interface')} (from {addresses})",
        f"{pad}upstreams, in the order they would be tried:",
    ]
    for position, up in enumerate(forward.get("upstreams") or [], start=1):
        srtt = up.get("srtt_ms")
        state = "healthy" if up.get("healthy") else f"resting {up.get('resting_s')} s"
        text = f"{pad}  {position}. {up.get('url')}  {state}"
        text += f", srtt {srtt:.1f} ms" if isinstance(srtt, int | float) else ", no answers yet"
        lines.append(text)
        if "servers" in up:
            servers = ", ".join(up["servers"]) or "none"
            lines.append(f"{pad}     announced servers: {servers}")
        if up.get("fails"):
            lines.append(f"{pad}     would fail: {up['fails']}")
        if up.get("last_error"):
            lines.append(f"{pad}     last error: {up['last_error']}")
    if forward.get("joins_flight"):
        lines.append(f"{pad}(it would join the same question already in flight)")
    return lines


def _guard_text(guard: dict[str, Any]) -> str:
    if not guard.get("enabled"):
        return "off (guard.enabled false)"
    if not guard.get("active"):
        return "NOT in place"
    return (
        f"table inet stubresolver, DNS only via {guard.get('tunnel') or 'loopback'}; "
        f"dropped {guard.get('dropped')}"
        + (f", redirected {guard.get('redirected')}" if guard.get("redirect") else "")
        + ("; lockdown (stays after stop)" if guard.get("lockdown") else "")
        + (f"; {guard['update_failures']} update failures" if guard.get("update_failures") else "")
    )


def _leaktest(args: argparse.Namespace) -> int:
    from stubresolver.control import request  # noqa: PLC0415
    from stubresolver.errors import ControlError, ControlPermissionError  # noqa: PLC0415
    from stubresolver.leaktest import report  # noqa: PLC0415
    from stubresolver.leaktest.run import Options, leaktest  # noqa: PLC0415

    status: dict[str, Any] | None = None
    error = None
    denied = False
    try:
        response = request(_socket_path(args), "status")
        status = response if response.get("ok") else None
        error = None if status else str(response.get("error"))
    except ControlPermissionError as exc:
        error, denied = str(exc), True
    except (ConfigError, ControlError) as exc:
        error = str(exc)
    options = Options(probe_domain=args.probe_domain, window=args.window, whoami=args.whoami)
    steps = leaktest(status, error, options, denied=denied)
    if args.json:
        print(json.dumps(report.as_json(steps), indent=2))
    else:
        print(report.as_text(steps))
    return report.overall(steps)[1]


def _guard(args: argparse.Namespace) -> int:
    """`guard off` removes the table (a lockdown too); `guard show` prints it. Root only."""
    from stubresolver.errors import GuardError  # noqa: PLC0415
    from stubresolver.guard import nftables, ruleset  # noqa: PLC0415

    try:
        if args.action == "show":
            if not nftables.table_exists():
                print("no guard table")
                return 0
            print(nftables.run_nft("", args=("list", "table", ruleset.FAMILY, ruleset.TABLE)))
            return 0
        removed = nftables.remove_table()
    except GuardError as exc:
        print(f"stubresolver guard: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    print("guard table inet stubresolver removed" if removed else "no guard table")
    return 0


def _privileges_text(privileges: dict[str, Any]) -> str:
    who = f"uid {privileges.get('uid')}, gid {privileges.get('gid')}"
    if privileges.get("dropped"):
        caps = ", ".join(privileges.get("capabilities") or []) or "none"
        return f"{privileges.get('user')}:{privileges.get('group')} ({who}); capabilities {caps}"
    if privileges.get("kept_root"):
        return f"{who}; NOT dropped to {privileges.get('user')}: {privileges['kept_root']}"
    return f"{who} (server.user is empty: not dropped)"


def _takeover_text(takeover: dict[str, Any]) -> str:
    if not takeover.get("active"):
        return f"not active (takeover.mode {takeover.get('mode', 'off')})"
    paths = ", ".join(takeover.get("paths") or [])
    return (
        f"backend {takeover.get('backend')} owns {paths}"
        f"{' (resumed from the journal)' if takeover.get('resumed') else ''}; "
        f"drifts {takeover.get('drifts')}, re-asserts {takeover.get('reasserts')}"
        + (f", failed {takeover['reassert_failures']}" if takeover.get("reassert_failures") else "")
    )


def _restore(args: argparse.Namespace) -> int:
    """Idempotent: without a journal there is nothing to restore, and that is success."""
    from stubresolver.errors import TakeoverError  # noqa: PLC0415
    from stubresolver.takeover.session import restore  # noqa: PLC0415

    if args.state_dir:
        state_dir = Path(args.state_dir)
    else:
        try:
            state_dir = load_config(args.config).state_dir
        except ConfigError as exc:
            print(f"stubresolver: invalid config: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    try:
        done = restore(state_dir)
    except TakeoverError as exc:
        print(f"stubresolver restore: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    if done is None:
        print(f"nothing to restore (no takeover journal in {state_dir})")
    for line in done or ():
        print(f"restored: {line}")
    return _remove_guard_if_there()


def _remove_guard_if_there() -> int:
    from stubresolver.errors import GuardError  # noqa: PLC0415
    from stubresolver.guard import nftables  # noqa: PLC0415

    try:
        if nftables.remove_if_there():
            print("restored: guard table inet stubresolver removed")
    except GuardError as exc:
        print(f"stubresolver restore: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    return 0


def _print_plan(config: Config) -> int:
    """What `run` would do to the system's DNS; only reads."""
    from stubresolver.errors import TakeoverError  # noqa: PLC0415
    from stubresolver.takeover.session import plan  # noqa: PLC0415

    if config.takeover.mode == "off":
        print("takeover: off (resolv.conf is left alone)")
        return 0
    try:
        lines = plan(config).describe()
    except ConfigError as exc:
        print(f"stubresolver: invalid config: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except TakeoverError as exc:
        print(f"stubresolver: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    print("\n".join(lines))
    return 0


def _print_guard(config: Config) -> None:
    """The nftables table `run` would load (tunnel not known yet: loopback only)."""
    if not config.guard.enabled:
        print("guard: off (the firewall is left alone)")
        return
    from stubresolver.guard.nftables import Guard  # noqa: PLC0415
    from stubresolver.guard.ruleset import render  # noqa: PLC0415

    print("guard: would load, in one nft transaction (the tunnel's name goes in its set):")
    print(render(Guard(config.guard, config.listen).plan(None)), end="")


def _print_privileges(config: Config) -> None:
    """Who `run` becomes after the start; raises ConfigError for a name that does not
    exist here."""
    from stubresolver import privilege  # noqa: PLC0415

    accounts = privilege.resolve(config.server)
    if accounts.uid is None:
        print("privileges: not dropped (server.user is empty)")
        return
    caps = ", ".join(privilege.names(privilege.kept(config)))
    print(
        f"privileges: after the start, run as {accounts.user}:{accounts.group} "
        f"(uid {accounts.uid}, gid {accounts.gid}) keeping {caps} (root is kept with the "
        f"takeover backends {', '.join(privilege.KEEPS_ROOT)})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in CONTROL_COMMANDS:
        return _control(args)
    if args.command == "restore":
        return _restore(args)
    if args.command == "guard":
        return _guard(args)
    if args.command == "demo":
        from stubresolver.demo.main import main as demo  # noqa: PLC0415 - only the demo needs it

        return demo(args.tag)
    if args.command == "leaktest":
        return _leaktest(args)
    if args.command in ("install", "uninstall"):
        return _install(args)
    path = Path(args.config)
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"stubresolver: invalid config: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    for warning in config_warnings(config):
        print(f"stubresolver: warning: {warning}", file=sys.stderr)
    if args.command == "check-config" or args.dry_run:
        try:
            _print_privileges(config)
        except ConfigError as exc:
            print(f"stubresolver: invalid config: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        code = _print_plan(config)
        _print_guard(config)
        if code == 0 and args.command == "check-config":
            print(f"{path}: ok")
        return code
    from stubresolver.app import configure_logging, serve  # noqa: PLC0415 - keep check-config light
    from stubresolver.errors import (  # noqa: PLC0415
        GuardError,
        ListenError,
        PrivilegeError,
        TakeoverError,
    )

    configure_logging(config.logging.level)
    try:
        serve(config, path)
    except ConfigError as exc:  # e.g. an upstream scheme this build cannot serve
        print(f"stubresolver: invalid config: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (GuardError, ListenError, TakeoverError, PrivilegeError) as exc:
        print(f"stubresolver: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
