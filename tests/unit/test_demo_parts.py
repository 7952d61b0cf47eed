"""The pure parts of `stubresolver demo`: the preflight messages, reading dig's output, and
the teardown that runs once whatever ends the demo (a real signal to this process)."""

from __future__ import annotations

import os
import signal

import pytest

from stubresolver.demo.preflight import TOOLS, problems
from stubresolver.demo.probes import parse_dig
from stubresolver.demo.processes import recording
from stubresolver.demo.teardown import Teardown

REFUSED = """
; <<>> DiG 9.18.49-1~deb12u3-Debian <<>> +time=2 +tries=1 @127.0.0.1 www.example. A
; (1 server found)
;; global options: +cmd
;; Got answer:
;; ->>HEADER<<- opcode: QUERY, status: REFUSED, id: 40071
;; flags: qr rd ra; QUERY: 1, ANSWER: 0, AUTHORITY: 0, ADDITIONAL: 1

;; OPT PSEUDOSECTION:
; EDNS: version: 0, flags:; udp: 1232
; EDE: 23 (Network Error): (tunnel sr12dwc down)
;; QUESTION SECTION:
;www.example.\t\t\tIN\tA

;; Query time: 0 msec
"""

ANSWERED = """
;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 5
;; flags: qr rd ra; QUERY: 1, ANSWER: 2, AUTHORITY: 0, ADDITIONAL: 1

;; QUESTION SECTION:
;www.example.\t\t\tIN\tA

;; ANSWER SECTION:
www.example.\t\t300\tIN\tA\t192.0.2.10
www.example.\t\t300\tIN\tA\t192.0.2.11

;; AUTHORITY SECTION:
example.\t\t300\tIN\tA\t192.0.2.99

;; Query time: 1 msec
"""


def test_parse_dig_refused_keeps_the_ede_text() -> None:
    result = parse_dig(REFUSED)
    assert result.status == "REFUSED"
    assert result.ede == "23 (Network Error): (tunnel sr12dwc down)"
    assert result.answers == ()
    assert result.summary() == "status REFUSED; EDE 23 (Network Error): (tunnel sr12dwc down)"


def test_parse_dig_reads_only_the_answer_section() -> None:
    result = parse_dig(ANSWERED)
    assert result.status == "NOERROR"
    assert result.answers == ("192.0.2.10", "192.0.2.11")
    assert result.ede == ""
    assert result.summary() == "status NOERROR; answer 192.0.2.10, 192.0.2.11"


def test_parse_dig_without_an_answer() -> None:
    result = parse_dig(";; communications error to 127.0.0.1#53: connection refused\n")
    assert result.status == "NO ANSWER"


def test_preflight_all_there_as_root() -> None:
    assert problems(0, lambda tool: f"/usr/bin/{tool}") == []


def test_preflight_not_root() -> None:
    [found] = problems(1000, lambda tool: f"/usr/bin/{tool}")
    assert "must run as root" in found


def test_preflight_names_each_package_once() -> None:
    absent = {"unbound", "unbound-checkconf", "dig", "wireguard-go"}
    [found] = problems(0, lambda tool: None if tool in absent else f"/usr/bin/{tool}")
    assert found == (
        "missing wireguard-go, unbound, unbound-checkconf, dig: apt-get install "
        "--no-install-recommends bind9-dnsutils unbound wireguard-go"
    )
    assert set(TOOLS) >= absent


def test_teardown_runs_once_on_a_real_signal_and_restores_handlers() -> None:
    before = signal.getsignal(signal.SIGTERM)
    calls: list[str] = []
    with (
        pytest.raises(KeyboardInterrupt) as caught,
        Teardown(lambda: calls.append("torn down")) as t,
    ):
        os.kill(os.getpid(), signal.SIGTERM)
        pytest.fail("the signal did not interrupt")
    assert caught.value.args == ("SIGTERM",)
    t.run()  # again: a no-op, as atexit's call would be
    assert calls == ["torn down"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_teardown_ignores_signals_while_it_runs() -> None:
    seen: list[bool] = []

    def action() -> None:
        os.kill(os.getpid(), signal.SIGINT)  # an impatient second Ctrl-C
        seen.append(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)

    with Teardown(action):
        pass
    assert seen == [True]


def test_a_signal_while_a_child_is_started_waits_until_it_is_recorded() -> None:
    """The CI failure this answers: a Ctrl-C between Popen and the world's process list
    left that child running. Inside `recording` the interrupt is held, then raised."""
    recorded: list[str] = []
    calls: list[str] = []
    with (
        pytest.raises(KeyboardInterrupt) as caught,
        Teardown(lambda: calls.append("torn down")),
    ):
        with recording():
            os.kill(os.getpid(), signal.SIGINT)  # arrives "between Popen and the list"
            recorded.append("child")  # still runs: the interrupt waits
        pytest.fail("the held signal was not raised after the block")
    assert caught.value.args == ("SIGINT",)
    assert recorded == ["child"] and calls == ["torn down"]
