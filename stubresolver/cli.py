"""Command-line entry points; argument handling only (DESIGN.md "cli")."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from stubresolver import __version__
from stubresolver.config import load_config
from stubresolver.errors import ConfigError

DEFAULT_CONFIG = "/etc/stubresolver/config.yaml"
EXIT_CONFIG = 2  # like argparse: the invocation cannot work as given
EXIT_RUNTIME = 1


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    path = Path(args.config)
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"stubresolver: invalid config: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check-config":
        print(f"{path}: ok")
        return 0
    from stubresolver.app import configure_logging, serve  # noqa: PLC0415 - keep check-config light
    from stubresolver.server import ListenError  # noqa: PLC0415

    configure_logging(config.logging.level)
    try:
        serve(config, path)
    except ConfigError as exc:  # e.g. an upstream scheme this build cannot serve
        print(f"stubresolver: invalid config: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ListenError as exc:
        print(f"stubresolver: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
