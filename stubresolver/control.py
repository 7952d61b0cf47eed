"""The local control socket (DESIGN.md "control"): status, flush, tunnel-changed, reload,
and the VPN hooks' tunnel-up/tunnel-down with the servers and domains the VPN announced.

A UNIX stream socket, root only (mode 0600); with ``server.group`` set, that group's too
(mode 0660), so a VPN hook running unprivileged in the group (OpenVPN ``--user nobody
--group stubresolver``) can still call ``tunnel-down``. One JSON request line
``{"cmd": "..."}`` gets one JSON response line, then the connection is closed. Every
response carries ``"ok"``; a failure is ``{"ok": false, "error": "..."}``, never a dropped
connection or a crash.

The socket is a convenience for people and VPN hooks, not part of the leak promise: the
tunnel monitor sees tunnel changes through netlink whether or not a hook calls in, so a
failure to create the socket is a warning and the resolver keeps serving.

Layout (STYLE.md 1): `dispatch` turns request bytes into a response dict and `render_status`
turns service state into a dict, both without I/O; `ControlServer` is the thin asyncio
driver and `request` the blocking client the CLI uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from stubresolver.errors import ControlError, ControlPermissionError
from stubresolver.resolver import Outcome, Resolver
from stubresolver.tunnel_state import TunnelState

log = logging.getLogger("stubresolver.control")

#: Longest request line accepted, newline included.
MAX_REQUEST = 4096
#: Seconds a client has to send its request line (and to take the response).
REQUEST_TIMEOUT = 2.0
#: Control connections served at once; more are answered with an error and closed.
MAX_CONNECTIONS = 16
COMMANDS = ("status", "flush", "tunnel-changed", "reload", "tunnel-up", "tunnel-down")

Response = dict[str, Any]


class Controlled(Protocol):
    """What the control socket drives; `stubresolver.app.Service` implements it."""

    def control_status(self) -> Response: ...

    def flush_cache(self) -> int: ...

    def refresh_tunnel(self) -> tuple[TunnelState, TunnelState]:
        """Probe the tunnel now; returns (before, after)."""
        ...

    def reload(self) -> str | None:
        """Re-read the config; None when applied, else why it was rejected."""
        ...

    def announce(self, request: Mapping[str, Any]) -> Response:
        """``tunnel-up``: take the servers and domains a VPN hook announced. ValueError
        with a message for the hook when they cannot be used."""
        ...

    def withdraw(self, request: Mapping[str, Any]) -> Response:
        """``tunnel-down``: forget the announcement; the tunnel reads as down."""
        ...


# --- sans-IO -------------------------------------------------------------------------------


def tunnel_dict(state: TunnelState) -> Response:
    return {
        "up": state.up,
        "ifname": state.ifname,
        "ifindex": state.ifindex,
        "addresses": list(state.addresses),
        "epoch": state.epoch,
    }


def render_status(
    *,
    version: str,
    uptime: float,
    listen: Sequence[object],
    tunnel: TunnelState,
    netlink: bool,
    resolver: Resolver,
    config_path: Path | None,
) -> Response:
    """The ``status`` response, from the running service's state."""
    upstreams: list[Response] = []
    for upstream, health in zip(resolver.upstreams, resolver.health, strict=True):
        item: Response = {
            "url": health.url,
            "healthy": health.healthy,
            "srtt_ms": round(health.srtt * 1000, 3) if health.answers else None,
            "failures": health.failures,
            "last_error": health.last_error,
            "answers": health.answers,
        }
        # Transport counters (UDP sockets, TLS connections and handshakes), declared by
        # every upstream (upstream/base.py).
        item.update(upstream.counters())
        upstreams.append(item)
    cache = resolver.cache
    outcomes = resolver.stats.outcomes
    return {
        "ok": True,
        "version": version,
        "pid": os.getpid(),
        "uptime": round(uptime, 3),
        "config": str(config_path) if config_path is not None else None,
        "listen": [str(address) for address in listen],
        "tunnel": {**tunnel_dict(tunnel), "netlink": netlink},
        "upstreams": upstreams,
        "cache": {
            "enabled": cache is not None,
            "entries": len(cache) if cache is not None else 0,
            "bytes": cache.size_bytes if cache is not None else 0,
            "hits": cache.hits if cache is not None else 0,
            "misses": cache.misses if cache is not None else 0,
        },
        "outcomes": {outcome.value: outcomes.get(outcome, 0) for outcome in Outcome},
    }


def error(message: str) -> Response:
    return {"ok": False, "error": message}


def parse_request(line: bytes) -> tuple[str, dict[str, Any]]:
    """The command of one request line and the request object; raises ValueError with a
    message for the client."""
    try:
        request = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"request is not JSON: {exc}") from None
    except RecursionError:
        # 4 KB of "[" nests past the interpreter's recursion limit inside json's scanner;
        # that is a bad request like any other, not a crash of the connection handler.
        raise ValueError("request is nested too deeply") from None
    if not isinstance(request, dict):
        raise ValueError('request must be a JSON object like {"cmd": "status"}')
    cmd = request.get("cmd")
    if not isinstance(cmd, str):
        raise ValueError('request needs "cmd" (a string)')
    if cmd not in COMMANDS:
        raise ValueError(f"unknown command {cmd[:64]!r} (known: {', '.join(COMMANDS)})")
    return cmd, request


def dispatch(line: bytes, target: Controlled) -> Response:
    """Answer one request line. Never raises: a failure becomes ``{"ok": false, ...}``."""
    try:
        cmd, request = parse_request(line)
    except ValueError as exc:
        return error(str(exc))
    try:
        if cmd in ("tunnel-up", "tunnel-down"):
            try:
                if cmd == "tunnel-up":
                    return target.announce(request)
                return target.withdraw(request)
            except ValueError as exc:  # servers or names the stub cannot use (announce.py)
                return error(str(exc))
        if cmd == "status":
            return target.control_status()
        if cmd == "flush":
            return {"ok": True, "flushed": target.flush_cache()}
        if cmd == "tunnel-changed":
            before, after = target.refresh_tunnel()
            return {
                "ok": True,
                "changed": after.epoch != before.epoch,
                "tunnel": tunnel_dict(after),
            }
        problem = target.reload()  # cmd == "reload"
        return {"ok": True} if problem is None else error(problem)
    except Exception as exc:  # the daemon must outlive any bug behind a command
        log.exception("control command %r failed", cmd)
        return error(f"internal error: {exc!r}")


def encode(response: Response) -> bytes:
    return json.dumps(response, separators=(",", ":")).encode() + b"\n"


# --- the server ------------------------------------------------------------------------------


class ControlServer:
    """Serves `dispatch` on a UNIX socket at ``path``; `start` and `close` bracket its life."""

    def __init__(self, path: Path, target: Controlled, *, group: int | None = None) -> None:
        self.path = path
        self.target = target
        #: The gid that may connect too (mode 0660); None: the owner only (0600).
        self.group = group
        self._server: asyncio.AbstractServer | None = None
        self._inode: tuple[int, int] | None = None  # (st_dev, st_ino) of the file we made
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Create the socket. Raises OSError (or ControlError) when it cannot."""
        sock = self._bind()
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, sock=sock, limit=MAX_REQUEST
            )
        except BaseException:
            sock.close()
            self._unlink()
            raise
        log.info("control socket on %s", self.path)

    def _bind(self) -> socket.socket:
        self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        self._remove_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # Create the file 0600 from the start (umask), so there is no moment when
            # another user could connect; chmod again in case the filesystem ignored it.
            old_umask = os.umask(0o177)
            try:
                sock.bind(str(self.path))
            finally:
                os.umask(old_umask)
            # Listen at once: a second daemon probing the path must see it live, not stale.
            sock.listen(16)
            if self.group is not None:
                # The group first, then its permission: never readable by a wrong group.
                os.chown(self.path, -1, self.group)
            os.chmod(self.path, 0o600 if self.group is None else 0o660)
            info = os.stat(self.path)
            self._inode = (info.st_dev, info.st_ino)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def _remove_stale(self) -> None:
        """Remove a socket file left by a process that died; never a live one or a non-socket."""
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(info.st_mode):
            raise ControlError(f"{self.path} exists and is not a socket; not replacing it")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.5)
            try:
                probe.connect(str(self.path))
            except OSError as exc:
                if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                    raise
            else:
                raise ControlError(f"another process is serving {self.path}; not replacing it")
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        log.info("removed stale control socket %s", self.path)

    def _unlink(self) -> None:
        """Remove the socket file, but only if it is still the one this server made."""
        if self._inode is None:
            return
        with contextlib.suppress(OSError):
            info = os.lstat(self.path)
            if (info.st_dev, info.st_ino) == self._inode:
                self.path.unlink()
        self._inode = None

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            if len(self._connections) > MAX_CONNECTIONS:
                response = error("too many control connections")
            else:
                response = await self._one_request(reader)
            writer.write(encode(response))
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        except (OSError, TimeoutError):
            pass  # the client went away or stopped reading: nothing to answer
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), REQUEST_TIMEOUT)

    async def _one_request(self, reader: asyncio.StreamReader) -> Response:
        try:
            line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
        except TimeoutError:
            return error(f"no request line within {REQUEST_TIMEOUT:g} s")
        except ValueError:  # StreamReader's limit: the line is longer than MAX_REQUEST
            return error(f"request longer than {MAX_REQUEST} bytes")
        if not line.strip():
            return error("empty request")
        response = dispatch(line, self.target)
        log.debug("control request %.64r -> %s", line.strip(), _summary(response))
        return response


def _summary(response: Response) -> str:
    if not response.get("ok"):
        return f"error: {response.get('error')}"
    tunnel = response.get("tunnel")
    if isinstance(tunnel, dict) and "changed" in response:
        state = "up" if tunnel.get("up") else "down"
        return f"tunnel {tunnel.get('ifname')} {state}, epoch {tunnel.get('epoch')}"
    return "ok"


# --- the client (blocking: the CLI has no event loop) ----------------------------------------


def request(
    path: Path | str, cmd: str, timeout: float = 10.0, fields: Mapping[str, Any] | None = None
) -> Response:
    """Send ``{"cmd": cmd, **fields}`` to the daemon at ``path`` and return its response.

    Raises ControlError with a message for people when the daemon cannot be reached or
    answers something that is not one JSON object.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except FileNotFoundError:
            raise ControlError(
                f"cannot reach the daemon: {path} does not exist (is stubresolver running, "
                "with control_socket set to this path?)"
            ) from None
        except ConnectionRefusedError:
            raise ControlError(
                f"cannot reach the daemon: nothing listens on {path} (stale socket?)"
            ) from None
        except PermissionError:
            raise ControlPermissionError(
                f"cannot reach the daemon: permission denied on {path} (the control socket "
                "is root's, and server.group's when that is set)"
            ) from None
        except OSError as exc:
            raise ControlError(
                f"cannot reach the daemon at {path}: {exc.strerror or exc}"
            ) from None
        try:
            sock.sendall(json.dumps({**(fields or {}), "cmd": cmd}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n") and len(data) < 1 << 20:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            raise ControlError(
                f"the daemon at {path} did not answer within {timeout:g} s"
            ) from None
        except OSError as exc:
            raise ControlError(f"talking to the daemon at {path}: {exc.strerror or exc}") from None
    try:
        response = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ControlError(f"the daemon at {path} sent no valid JSON response") from None
    if not isinstance(response, dict) or not isinstance(response.get("ok"), bool):
        raise ControlError(f"the daemon at {path} sent an unexpected response")
    return response
