"""Where the pipeline finds each exchange's outbound calls: a bounded store, filled by the proxy.

The egress listener (proxy/egress.py) hands every correlated call over (process dispatch: an
"egress" frame on the channel the jobs use, so a live call sent before its exchange's job
arrives first). The pipeline takes an exchange's calls once the shadow answered and its
settle time passed (`EgressSettings.settle_ms`): a shadow may make calls after it answered.

Bounded: at most `max_exchanges` exchanges are held (the oldest go first: calls of exchanges
that were never mirrored, e.g. the live's with correlate_live on a skipped route, or whose
record was dropped) and at most `max_calls` calls per exchange; a call beyond is counted
`egress_dropped`. Entries older than `max_age_s` are let go as new ones come.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from shadowproxy.engine.egress import Answer, OutboundCall
from shadowproxy.rules.egress import EgressRules

if TYPE_CHECKING:
    from shadowproxy.shadow.pipeline import Pipeline

MAX_EXCHANGES = 10_000
MAX_CALLS = 100
MAX_AGE_S = 120.0
EGRESS_ROUTE = "(egress)"  # the stats route of counts about outbound calls no exchange owns


@dataclass(slots=True)
class _Held:
    since: float
    live: list[OutboundCall] = field(default_factory=list)
    shadow: list[OutboundCall] = field(default_factory=list)
    replayed: dict[tuple[str, str, str], int] = field(default_factory=dict)  # key -> answers replayed


class EgressCalls:
    """Outbound calls by exchange id, until the pipeline takes them."""

    def __init__(self, *, compare_live: bool = False, max_exchanges: int = MAX_EXCHANGES,
                 max_calls: int = MAX_CALLS, max_age_s: float = MAX_AGE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.compare_live = compare_live  # live capture is on: the live's calls are compared
        self.max_exchanges = max_exchanges
        self.max_calls = max_calls
        self.max_age_s = max_age_s
        self._clock = clock
        self._held: OrderedDict[str, _Held] = OrderedDict()
        self.dropped = 0  # calls refused: over max_calls for their exchange
        self.expired = 0  # exchanges let go untaken (age or max_exchanges)
        self.unclaimed = 0  # calls in them: an id no mirrored exchange took (made up, or late)

    def __len__(self) -> int:
        return len(self._held)

    def add(self, call: OutboundCall) -> bool:
        """Hold one call; False when its exchange already holds `max_calls` (counted by the caller)."""
        if call.exchange_id is None:
            return False
        now = self._clock()
        self._expire(now)
        held = self._held.get(call.exchange_id)
        if held is None:
            held = self._held[call.exchange_id] = _Held(now)
            if len(self._held) > self.max_exchanges:
                _, gone = self._held.popitem(last=False)
                self.expired += 1
                self.unclaimed += len(gone.live) + len(gone.shadow)
        calls = held.live if call.side == "live" else held.shadow
        if len(held.live) + len(held.shadow) >= self.max_calls:
            self.dropped += 1
            return False
        calls.append(call)
        return True

    def take(self, exchange_id: str) -> tuple[list[OutboundCall], list[OutboundCall]]:
        """The exchange's live and shadow calls (each in the order made); forgotten here."""
        held = self._held.pop(exchange_id, None)
        if held is None:
            return [], []
        return held.live, held.shadow

    def replay(self, exchange_id: str, key: tuple[str, str, str]) -> Answer | None:
        """The live's answer to the same call (method, host, template) of the exchange: the
        first not yet replayed, so a second identical call gets the live's second answer."""
        held = self._held.get(exchange_id)
        if held is None:
            return None
        answers = [c.answer for c in held.live if c.key == key and c.answer is not None]
        n = held.replayed.get(key, 0)
        if n >= len(answers):
            return None
        held.replayed[key] = n + 1
        return answers[n]

    def _expire(self, now: float) -> None:
        while self._held:
            key, oldest = next(iter(self._held.items()))
            if now - oldest.since <= self.max_age_s:
                return
            del self._held[key]
            self.expired += 1
            self.unclaimed += len(oldest.live) + len(oldest.shadow)


# off; shadow: the shadow's calls captured; live: the live's too (compared when correlate_live)
EgressMode = Literal["off", "shadow", "live"]


def egress_mode(egress: str | None, egress_live: str | None) -> EgressMode:
    """The mode the egress listener options (shadow_egress, shadow_egress_live) give."""
    if not egress:
        return "off"
    return "live" if egress_live else "shadow"


def egress_store(mode: EgressMode) -> EgressCalls | None:
    """The store a pipeline needs for this egress mode; None when the listener is off."""
    if mode == "off":
        return None
    return EgressCalls(compare_live=mode == "live")


@dataclass(frozen=True, slots=True)
class EgressServerConfig:
    """The shadow's egress listener when it runs in the worker process (picklable).

    `server` is the listener's class, given by the proxy layer (mitmproxy lives there): it
    crosses into the worker by reference, so this layer runs it without importing upward."""

    host: str
    port: int
    rules: EgressRules | None  # the rules file's egress: section (None: the defaults)
    shadow_header: str
    ca_file: str | None = None  # --egress-ca: PEM, CA certificate and key
    server: type[EgressService] | None = None


class EgressService(Protocol):
    """What the worker needs of an egress listener: built beside the pipeline, started after
    it, stopped after the pipeline's drain."""

    def __init__(self, cfg: EgressServerConfig, pipeline: Pipeline) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
