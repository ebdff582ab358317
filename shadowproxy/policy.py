"""Request -> decision: mirror (as is, or rewritten into an idempotent copy) or skip.

Cheap and pure: it runs in the proxy's hook for every request, so it only matches the route,
samples, applies the load limits (shadowproxy.sampling), and builds the request the shadow
will get. No I/O, no waiting.

The order: shadow traffic (the shadow header already there), route and method, gRPC streaming,
kill switch (these requests are not "eligible"),
then sampling (a fraction, or the rarity budget) -> `sampled_out`, then the route's and the
global token buckets -> `rate_limited`, then mirror.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import time
from dataclasses import dataclass
from typing import Any, Literal

from shadowproxy.engine import grpc
from shadowproxy.engine.egress import with_baggage
from shadowproxy.engine.exchange import Headers, Request, Response
from shadowproxy.rules.matcher import RouteNames
from shadowproxy.rules.ruleset import RouteSettings, RuleSet
from shadowproxy.sampling import Budget, Clock, TokenBucket

# Never forwarded to the shadow: they describe one hop, or the shadow's client sets them itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)

SKIP_REASONS = (
    "method", "route", "sampled_out", "disabled", "live_error", "grpc_streaming", "rate_limited",
    "client_aborted", "too_large", "stopping", "not_ready", "shadow_traffic", "header_too_large",
    "lost_on_crash", "live_late",
)


Action = Literal["mirror", "skip"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one request. `shadow_request` is set when action is "mirror"."""

    action: Action
    reason: str  # why it was skipped (one of SKIP_REASONS), or "" / "rewrite" when mirrored
    route: str  # the route name, or the path template when no route matched
    rule: str | None
    settings: RouteSettings
    shadow_request: Request | None = None
    target: str | None = None  # a rewrite's own shadow base URL

    def streamed_answer(self, live: Response) -> bool:
        """The last word on gRPC streaming, once the live answer is there: a gRPC route's call
        the policy let through (neither its descriptor nor its request said it streams) whose
        answer holds more than one message is a server-streaming call after all: not mirrored."""
        return self.settings.grpc_method is not None and grpc.frame_count(live.body) > 1


@dataclass(slots=True)
class Switch:
    """The runtime kill switch, sample override and global rate (the admin API changes these)."""

    enabled: bool = True
    sample: float | None = None  # overrides every route's sample (and the budget) when set
    max_rps: float | None = None  # copies/s to the shadow at most, the whole proxy; None: no limit
    processes: int = 1  # proxy processes sharing this switch (--reuse-port N): each gets 1/N of the limits
    options: bool = True  # the addon's shadow_max_rps option sets max_rps (False: a --reuse-port sibling)


SWITCH_BYTES = 24  # SharedSwitch's block: three doubles (enabled, sample, max_rps; NaN is None)


class SharedSwitch(Switch):
    """A Switch kept in a block of shared memory, so every process of `run --reuse-port N` sees
    what the admin API (in the first process) sets, with the next request, and without a lock.

    Each value is one aligned 8-byte double, written and read whole; a reader sees the old or
    the new value of a field, never a mix. `init=True` (the creating process) writes the
    starting values; a sibling attaching to the block (`init=False`) reads what is there.
    """

    __slots__ = ("_cells",)

    def __init__(
        self, buffer: Any, processes: int, *, init: bool, options: bool = True, max_rps: float | None = None
    ) -> None:
        self._cells = memoryview(buffer).cast("B")[:SWITCH_BYTES].cast("d")
        self.processes = processes
        self.options = options
        if init:
            self.enabled, self.sample, self.max_rps = True, None, max_rps

    @property
    def enabled(self) -> bool:
        return self._cells[0] != 0.0

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._cells[0] = 1.0 if value else 0.0

    @property
    def sample(self) -> float | None:
        v: float = self._cells[1]
        return None if v != v else v

    @sample.setter
    def sample(self, value: float | None) -> None:
        self._cells[1] = math.nan if value is None else value

    @property
    def max_rps(self) -> float | None:
        v: float = self._cells[2]
        return None if v != v else v

    @max_rps.setter
    def max_rps(self, value: float | None) -> None:
        self._cells[2] = math.nan if value is None else value


def request_hash(req: Request) -> str:
    h = hashlib.sha256()
    h.update(req.method.encode())
    h.update(b"\0")
    h.update(req.target.encode())
    h.update(b"\0")
    h.update(req.body)
    return h.hexdigest()


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def fill(template: str, values: dict[str, str]) -> str:
    """Replace {name} placeholders; unknown names are left as they are."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def shadow_headers(headers: Headers, settings: RouteSettings, extra: dict[str, str] | None = None,
                   client_host: str | None = None, exchange_id: str = "") -> Headers:
    """The client's headers minus hop-by-hop and stripped ones, plus the shadow marker, and the
    Host the route's `shadow_host` chooses (none: the shadow client sets its URL's).

    With an egress section the marker's value is the exchange id, also sent as the W3C baggage
    entry `shadowproxy.id`: services pass baggage on to their outbound calls, which the egress
    listener then attaches to this exchange (docs/egress.md)."""
    drop = HOP_BY_HOP | settings.strip_headers
    replaced = {k.lower() for k in (extra or {})} | {settings.shadow_header.lower()}
    kept = [(k, v) for k, v in headers if k.lower() not in drop and k.lower() not in replaced]
    host = _shadow_host(headers, settings.shadow_host, client_host)
    if host and "host" not in replaced:
        kept.insert(0, ("Host", host))
    kept.extend((extra or {}).items())
    if settings.egress is not None and exchange_id:
        kept.append((settings.shadow_header, exchange_id))
        return with_baggage(tuple(kept), exchange_id)
    kept.append((settings.shadow_header, "1"))
    return tuple(kept)


def _shadow_host(headers: Headers, choice: str, client_host: str | None) -> str | None:
    """live: the Host the live backend got; client: the one the client addressed (the proxy
    passes it: in reverse mode mitmproxy rewrites Host before any addon sees it)."""
    if choice == "shadow":
        return None
    live = next((v for k, v in headers if k.lower() in ("host", ":authority")), None)
    return (client_host or live) if choice == "client" else live


def declared_streaming(settings: RouteSettings) -> bool:
    """The route's descriptor set says its gRPC method streams (an unreadable one: not known)."""
    opts = settings.compare
    if settings.grpc_method is None or not isinstance(opts, grpc.GrpcCompareOptions):
        return False
    if not opts.protobuf_descriptor:
        return False
    try:
        info = grpc.method_info(opts.protobuf_descriptor, settings.grpc_method)
    except grpc.GrpcError:
        return False
    return info is not None and info.streaming


def grpc_streaming(req: Request, settings: RouteSettings) -> bool:
    """A streaming gRPC call (never mirrored): the descriptor says so, or the request holds
    more than one message. (Its answer is judged later: `Decision.streamed_answer`.)"""
    if settings.grpc_method is None:
        return False
    return declared_streaming(settings) or grpc.frame_count(req.body) > 1


def _not_mirrored(method: str, settings: RouteSettings) -> str | None:
    """The skip reason the route alone gives a request ("route", "method"), or None."""
    if settings.action == "skip":
        return "route"
    # a grpc_method route with action mirror says its (POST) calls are read-safe
    if settings.action == "mirror" and settings.grpc_method is None and method not in settings.mirror_methods:
        return "method"
    return None


def _rewrite(req: Request, settings: RouteSettings, params: dict[str, str], request_id: str,
             client_host: str | None = None) -> Request:
    rw = settings.rewrite
    assert rw is not None
    values = {**params, "request_hash": request_hash(req), "request_id": request_id}
    query = dict(req.query)
    query.update({k: fill(v, values) for k, v in rw.query.items()})
    headers = {k: fill(v, values) for k, v in rw.headers.items()}
    return Request(
        method=rw.method or req.method,
        path=fill(rw.path, values) if rw.path else req.path,
        query=tuple(query.items()),
        headers=shadow_headers(req.headers, settings, headers, client_host, request_id),
        body=req.body,
        http_version=req.http_version,
    )


class Policy:
    """Decides per request, from a RuleSet and the runtime switch.

    `limits=False` leaves out the load limits (max_rps, the budget and the global rate): replay
    paces itself with --rate instead. `clock` is the limits' clock (seconds, monotonic).
    """

    def __init__(
        self,
        rules: RuleSet,
        switch: Switch | None = None,
        rng: random.Random | None = None,
        *,
        clock: Clock = time.monotonic,
        limits: bool = True,
    ) -> None:
        self.rules = rules
        self.switch = switch or Switch()
        self._random = (rng or random.Random()).random
        self._clock = clock
        self._limits = limits
        now = clock()
        # every limit is for the whole proxy: with --reuse-port N, each process gets 1/N of it
        self._share = share = 1.0 / max(1, self.switch.processes)
        # one bucket per route (the defaults' limit applies to each route, and to the unmatched
        # requests together), keyed by route name: None is the defaults
        self._buckets: dict[str | None, TokenBucket] = {}
        if limits:
            for s in (rules.defaults, *(r.settings for r in rules.routes)):
                if s.max_rps is not None:
                    self._buckets[s.name] = TokenBucket(s.max_rps * share, now)
        budget = rules.budget
        self._budget_rps = budget.rps * share if budget is not None else 0.0
        self.budget = (
            Budget(self._budget_rps, budget.window_s, now) if limits and budget is not None else None
        )
        self._global: TokenBucket | None = None
        self.route_names = RouteNames()

    def route_name(self, path: str) -> str:
        """The stats route of a path no route names: its template, bounded in number."""
        return self.route_names.name(path)

    def passes_through(self, method: str, path: str, headers: dict[str, str]) -> bool:
        """Known from a gRPC call's headers alone (`headers` lower-cased): never mirrored, as
        `decide` would find (its route skips it, its method is not mirrored, or its descriptor
        says it streams). The proxy streams such a call both ways instead of holding it whole."""
        settings, _ = self.rules.route_for(method, path, headers)
        return _not_mirrored(method, settings) is not None or declared_streaming(settings)

    def decide(self, req: Request, request_id: str = "", client_host: str | None = None) -> Decision:
        headers = {k.lower(): v for k, v in req.headers}
        settings, params = self.rules.route_for(req.method, req.path, headers)
        # a card number or a `name=secret` in the path must not become a route (a label)
        route = settings.name or settings.redact.text(self.route_name(req.path))

        def skip(reason: str) -> Decision:
            return Decision("skip", reason, route, settings.name, settings)

        if settings.shadow_header.lower() in headers:
            # a copy we (or another shadowproxy) sent, come back through us: a shadow URL that is
            # this proxy or a balancer in front of it. Answered from live, never mirrored again.
            return skip("shadow_traffic")
        reason = _not_mirrored(req.method, settings)
        if reason is not None:
            return skip(reason)
        rewriting = settings.action == "rewrite"
        if grpc_streaming(req, settings):
            return skip("grpc_streaming")
        if not self.switch.enabled:
            return skip("disabled")
        now = self._clock()
        sample = self.switch.sample
        metered = False  # the budget already spends at the global rate: its bucket is not asked again
        if sample is None and self.budget is not None:
            budget = self.budget
            cap = self.switch.max_rps  # the budget spends no more than the global rate
            rps = self._budget_rps
            if cap is not None and cap * self._share <= rps:
                rps, metered = cap * self._share, True
            if rps != budget.rps:
                budget.set_rps(rps, now)
            if not budget.keep(route, now, self._random):
                return skip("sampled_out")
        else:
            if sample is None:
                sample = settings.sample
            if sample < 1.0 and self._random() >= sample:
                return skip("sampled_out")
        if self._limits and not self._within_limits(settings.name, now, metered):
            return skip("rate_limited")
        if rewriting:
            shadow_req = _rewrite(req, settings, params, request_id, client_host)
            target = settings.rewrite.target if settings.rewrite else None
            return Decision("mirror", "rewrite", route, settings.name, settings, shadow_req, target)
        shadow_req = Request(
            req.method, req.path, req.query,
            shadow_headers(req.headers, settings, None, client_host, request_id), req.body, req.http_version,
        )
        return Decision("mirror", "", route, settings.name, settings, shadow_req)

    def _within_limits(self, name: str | None, now: float, metered: bool = False) -> bool:
        """A token from the route's bucket and from the global one (runtime rate), or False.

        `metered`: the budget, capped at the global rate, kept this copy; a second meter at the
        same rate would refuse the rare routes' copies the budget lets overdraw its pool.
        """
        bucket = self._buckets.get(name)
        if bucket is not None and not bucket.take(now):
            return False
        rate = self.switch.max_rps
        if rate is None or metered:
            return True
        rate *= self._share
        overall = self._global
        if overall is None or overall.rate != rate:  # set or changed at runtime
            overall = self._global = TokenBucket(rate, now)
        if overall.take(now):
            return True
        if bucket is not None:
            bucket.give_back()  # the copy is not sent: the route's token is not spent
        return False
