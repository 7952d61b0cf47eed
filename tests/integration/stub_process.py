"""Run the real `stubresolver run` as a subprocess for integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import yaml

REPO = Path(__file__).resolve().parents[2]


class StubProcess:
    def __init__(
        self, proc: subprocess.Popen[bytes], host: str, port: int, config: Path, log: Path
    ) -> None:
        self.proc = proc
        self.host = host
        self.port = port
        self.config = config
        self.log = log

    def udp(self, msg: dns.message.Message, timeout: float = 3.0) -> dns.message.Message:
        return dns.query.udp(msg, self.host, port=self.port, timeout=timeout)

    def tcp(self, msg: dns.message.Message, timeout: float = 3.0) -> dns.message.Message:
        return dns.query.tcp(msg, self.host, port=self.port, timeout=timeout)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        return code

    @property
    def stderr(self) -> str:
        """Everything the process logged so far."""
        return self.log.read_text(errors="replace")


def listen_port(config: dict[str, Any]) -> int:
    """The port of a test config's first listen address."""
    return int(str(config["listen"][0]).rsplit(":", 1)[1])


def run_cli(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """The real CLI from this checkout, as a VPN hook or a person would run it."""
    proc = subprocess.run(
        [sys.executable, "-m", "stubresolver", *args],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def wait_answering(stub: StubProcess, deadline: float = 15.0) -> None:
    """Wait until the stub answers a local name (it needs no upstream for that)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if not stub.alive():
            raise RuntimeError(f"stubresolver exited early:\n{stub.stderr}")
        try:
            stub.udp(dns.message.make_query("localhost.", "A"), timeout=0.2)
            return
        except (dns.exception.Timeout, OSError):
            time.sleep(0.05)
    raise RuntimeError("stubresolver did not start answering")


@contextmanager
def run_stub(config_path: Path, host: str, port: int) -> Iterator[StubProcess]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    log = config_path.with_suffix(".log")
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stubresolver", "run", "--config", str(config_path)],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    stub = StubProcess(proc, host, port, config_path, log)
    try:
        wait_answering(stub)
        yield stub
    finally:
        stub.stop()
