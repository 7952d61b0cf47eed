"""Single-flight: one forward per distinct question in flight, shared by every client that
asks it meanwhile, and never across a tunnel epoch (STYLE.md 11).

Bounded in count and in bytes (issue 7): at most ``max_flights`` flights, at most
``max_waiters`` clients on one flight, and at most ``max_waiter_bytes`` of waiting queries
over all flights. A query past a bound is answered SERVFAIL by the driver, for itself alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from stubresolver import wire
from stubresolver.tunnel_state import TunnelState

Reply = Callable[[bytes], None]
# Withdraws the exchange in progress (a UDP query, the TCP retry after TC, a TLS task):
# after it returns, that exchange sends nothing more and reports nothing.
Withdraw = Callable[[], None]

# What one waiting client costs beyond its query bytes: the tuple, the parsed query, the
# reply callable (a bound method or partial with the client's address).
WAITER_OVERHEAD = 300
MAX_WAITERS = 512
MAX_WAITER_BYTES = 8 * 1024 * 1024


def _nothing() -> None:
    """The withdraw of a flight with no exchange in progress."""


@dataclass(slots=True, eq=False)
class Flight:
    """One forward in flight, shared by every identical query."""

    epoch: int
    key: bytes  # wire.Query.key: question plus the bits that change the answer
    data: bytes  # what goes upstream
    state: TunnelState
    order: list[int]  # upstreams still to try
    question: bytes  # wire.question_key of the query, for matching answers
    withdraw: Withdraw = _nothing
    finished: bool = False
    waiters: list[tuple[wire.Query, bytes, Reply]] = field(default_factory=list)
    waiter_bytes: int = 0


class Flights:
    """The table of flights in progress, keyed by `wire.Query.key`."""

    def __init__(
        self,
        max_flights: int = 1024,
        max_waiters: int = MAX_WAITERS,
        max_waiter_bytes: int = MAX_WAITER_BYTES,
    ) -> None:
        self.max_flights = max_flights
        self.max_waiters = max_waiters
        self.max_waiter_bytes = max_waiter_bytes
        self._flights: dict[bytes, Flight] = {}
        self._waiter_bytes = 0

    def __len__(self) -> int:
        return len(self._flights)

    @property
    def waiter_bytes(self) -> int:
        """The estimated bytes held by waiting queries over all flights."""
        return self._waiter_bytes

    def current(self, key: bytes, epoch: int) -> Flight | None:
        """The flight for ``key`` made under ``epoch``; an older one is not joined."""
        flight = self._flights.get(key)
        if flight is None or flight.epoch != epoch:
            return None
        return flight

    def full(self) -> bool:
        """No new flight may start: a flood of unique names cannot pile up work."""
        return len(self._flights) >= self.max_flights

    def start(
        self, key: bytes, outgoing: bytes, state: TunnelState, order: list[int], question: bytes
    ) -> Flight:
        flight = Flight(state.epoch, key, outgoing, state, order, question)
        self._flights[key] = flight  # replaces a flight of an older epoch, which still lands
        return flight

    def join(self, flight: Flight, query: wire.Query, data: bytes, reply: Reply) -> str | None:
        """Add a waiter; returns None, or why not (the bound that was reached)."""
        if len(flight.waiters) >= self.max_waiters:
            return "too many clients waiting for this name"
        cost = len(data) + WAITER_OVERHEAD
        if self._waiter_bytes + cost > self.max_waiter_bytes:
            return "too many queries waiting"
        flight.waiters.append((query, data, reply))
        flight.waiter_bytes += cost
        self._waiter_bytes += cost
        return None

    def finish(self, flight: Flight) -> list[tuple[wire.Query, bytes, Reply]]:
        """End ``flight``: it leaves the table and its waiters are handed back, once."""
        if flight.finished:
            return []
        flight.finished = True
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
        waiters, flight.waiters = flight.waiters, []
        self._waiter_bytes -= flight.waiter_bytes
        flight.waiter_bytes = 0
        return waiters

    def finish_all(self) -> list[Flight]:
        """End every flight (the tunnel changed, the config was reloaded). The flights are
        returned with their waiters still attached, for the driver to answer and withdraw."""
        flights = list(self._flights.values())
        self._flights.clear()
        for flight in flights:
            flight.finished = True
            self._waiter_bytes -= flight.waiter_bytes
            flight.waiter_bytes = 0
        return flights
