"""The egress listeners: forward proxies for the shadow's (and, opt-in, the live's) outbound calls.

`shadow_egress HOST:PORT` adds a mitmproxy regular-mode listener there; the shadow service is
started with HTTP_PROXY/HTTPS_PROXY pointing at it. Each of its calls is decided by the rules'
`egress:` section (rules/egress.py): stub, replay and block are answered here by setting
`flow.response` in the request hook, so mitmproxy never opens a connection upstream (the
listener runs with connection_strategy lazy); only pass reaches the real dependency.
`shadow_egress_live HOST:PORT` is a plain pass-through proxy for the live service's calls,
executed for real and recorded; its answers are kept (bounded) for `replay`.

Each call is attached to its exchange by the W3C baggage entry `shadowproxy.id` (or the shadow
header's value) and handed to the pipeline (the worker process) through the dispatcher: the
record is made there, after the shadow answered and the settle time passed. A call that carries
no id is still intercepted, and counted `uncorrelated`.

This addon is nested in ShadowAddon (`addons`), which leaves every flow of these listeners to it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from mitmproxy import ctx, exceptions, http

from shadowproxy.engine.egress import OutboundCall, Side, exchange_id_of, with_baggage
from shadowproxy.errors import ConfigError
from shadowproxy.proxy.convert import path_of
from shadowproxy.rules.egress import (
    BLOCK_HEADER,
    DEFAULT_EGRESS,
    CallValues,
    EgressDecision,
    EgressRules,
    render_stub,
)
from shadowproxy.rules.matcher import path_template
from shadowproxy.shadow.egress import EGRESS_ROUTE

if TYPE_CHECKING:
    from shadowproxy.proxy.addon import ShadowAddon

log = logging.getLogger("shadowproxy")

OptStr = Optional[str]  # noqa: UP045  (mitmproxy checks option types with typing.Optional)
_SIDE = "shadowproxy.egress"
_DECISION = "shadowproxy.egress_decision"
EXCHANGE_ID = "shadowproxy.exchange_id"  # the id a live request carries (correlate_live)
_BODY_HEADERS = frozenset({"content-type", "content-encoding"})
MAX_REPLAY_EXCHANGES = 1000  # live answers kept for replay, by exchange (the oldest go first)
MAX_REPLAY_ANSWERS = 100  # ... and per exchange
MAX_REPLAY_BODY = 1024 * 1024  # a larger live answer is not kept (a replay of it is a miss)


def parse_host_port(value: str, flag: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ConfigError(f"{flag} {value!r}: not HOST:PORT (e.g. 127.0.0.1:8081)")
    return host, int(port)


def mode_spec(host: str, port: int) -> str:
    return f"regular@{f'[{host}]' if ':' in host else host}:{port}"


@dataclass(frozen=True, slots=True)
class _Answer:
    key: tuple[str, str, str]
    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


def _authority(req: http.Request) -> str:
    default = 443 if req.scheme == "https" else 80
    host = f"[{req.host}]" if ":" in req.host else req.host
    return host if req.port == default else f"{host}:{req.port}"


_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection", b"keep-alive"})


def _make(status: int, headers: tuple[tuple[bytes, bytes], ...], body: bytes) -> http.Response:
    """An answer with these headers and this body as it goes on the wire (a replayed live
    answer keeps its content coding): framing headers are mitmproxy's to set."""
    resp = http.Response.make(status, b"", [(k, v) for k, v in headers if k.lower() not in _FRAMING])
    resp.raw_content = body
    resp.headers["content-length"] = str(len(body))
    return resp


class EgressAddon:
    """The egress listeners' flows: decide, answer or pass, capture, hand over."""

    def __init__(self, shadow: ShadowAddon) -> None:
        self.shadow = shadow
        self.specs: dict[str, Side] = {}  # mitmproxy mode spec -> whose outbound calls it carries
        self._answers: OrderedDict[str, list[_Answer]] = OrderedDict()
        self.captured = 0
        self.uncorrelated = 0

    def load(self, loader: Any) -> None:
        loader.add_option(
            "shadow_egress", OptStr, None,
            "HOST:PORT: also serve a forward proxy there (HTTP, and HTTPS through CONNECT) for the "
            "shadow's outbound calls; start the shadow with HTTP_PROXY/HTTPS_PROXY pointing at it. "
            "The rules' egress: section decides each call (default: safe methods pass, others are "
            "stubbed, never executed). Required by a rules file whose routes mirror writes.")
        loader.add_option(
            "shadow_egress_live", OptStr, None,
            "HOST:PORT: a pass-through forward proxy for the live service's outbound calls (executed "
            "for real, recorded); with egress: {correlate_live: true} they are compared with the shadow's.")

    def configure(self, updated: set[str]) -> None:
        if not {"shadow_egress", "shadow_egress_live"} & updated:
            return
        o = ctx.options
        specs: dict[str, Side] = {}
        try:
            for name, side in (("shadow_egress", "shadow"), ("shadow_egress_live", "live")):
                value = getattr(o, name)
                if value:
                    specs[mode_spec(*parse_host_port(value, name))] = side  # type: ignore[assignment]
        except ConfigError as e:
            raise exceptions.OptionsError(str(e)) from e
        if len(set(specs)) < sum(1 for n in ("shadow_egress", "shadow_egress_live") if getattr(o, n)):
            raise exceptions.OptionsError("shadow_egress and shadow_egress_live must be different addresses")
        self.specs = specs
        missing = [s for s in specs if s not in o.mode]
        if missing:
            o.update(mode=[*o.mode, *missing])

    # -- what the shadow addon asks ---------------------------------------------------------

    def side(self, flow: http.HTTPFlow) -> Side | None:
        """Whose outbound call this flow is, or None: not an egress listener's flow."""
        if not self.specs:
            return None
        return self.specs.get(flow.client_conn.proxy_mode.full_spec)

    @property
    def rules(self) -> EgressRules:
        policy = self.shadow.policy
        found = policy.rules.egress if policy is not None else None
        return found if found is not None else DEFAULT_EGRESS

    @property
    def correlate_live(self) -> bool:
        return "live" in self.specs.values() and self.rules.settings.correlate_live

    def tag_live(self, flow: http.HTTPFlow) -> None:
        """correlate_live: the live request gets the baggage entry with the exchange id it will
        have (the one change to live traffic, off by default)."""
        xid = uuid.uuid4().hex
        flow.metadata[EXCHANGE_ID] = xid
        fields = tuple((k, v) for k, v in flow.request.headers.items(multi=True))
        tagged = with_baggage(fields, xid)
        for k, v in tagged[len(fields):]:
            flow.request.headers.add(k, v)
        for (k, v), (_, new) in zip(fields, tagged, strict=False):
            if v != new:
                flow.request.headers[k] = new

    # -- hooks ------------------------------------------------------------------------------

    def tls_clienthello(self, data: Any) -> None:
        """The live's HTTPS calls are tunnelled untouched (the live does not trust our CA): the
        live's outbound calls are compared when they are plain HTTP."""
        if self.specs.get(data.context.client.proxy_mode.full_spec) == "live":
            data.ignore_connection = True

    def request(self, flow: http.HTTPFlow) -> None:
        side = self.side(flow)
        if side is None:
            return
        flow.metadata[_SIDE] = side
        if side == "live" or flow.request.method == "CONNECT":
            return
        req = flow.request
        headers = {k.lower(): v for k, v in req.headers.items()}
        decision = self.rules.decide(req.method, req.host, req.port, path_of(req), headers)
        flow.metadata[_DECISION] = decision
        if decision.action != "pass":
            flow.response = self._answer(flow, decision)

    def response(self, flow: http.HTTPFlow) -> None:
        side = flow.metadata.get(_SIDE)
        if side is None or flow.request.method == "CONNECT":
            return
        call = self._call(flow, side)
        if side == "live" and call.exchange_id is not None and flow.response is not None:
            self._keep_answer(call, flow.response)
        self._hand_over(call)

    def error(self, flow: http.HTTPFlow) -> None:
        side = flow.metadata.get(_SIDE)
        if side is not None and flow.response is None and flow.request.method != "CONNECT":
            self._hand_over(self._call(flow, side))  # a pass that failed: status None

    # -- the work ---------------------------------------------------------------------------

    def _exchange_id(self, flow: http.HTTPFlow) -> str | None:
        policy = self.shadow.policy
        marker = policy.rules.defaults.shadow_header if policy is not None else None
        return exchange_id_of(flow.request.headers.items(multi=True), marker)

    def _answer(self, flow: http.HTTPFlow, decision: EgressDecision) -> http.Response:
        req = flow.request
        xid = self._exchange_id(flow) or ""
        if decision.action == "stub":
            assert decision.stub is not None
            values = CallValues(req.method, req.host, path_of(req), req.url, xid, dict(req.query.items()),
                                {k.lower(): v for k, v in req.headers.items()}, req.raw_content or b"")
            status, headers, body = render_stub(decision.stub, values)
            return _make(status, tuple((k.encode(), v.encode()) for k, v in headers), body)
        if decision.action == "replay":
            got = self._replay(xid, (req.method, _authority(req), path_template(path_of(req))))
            if got is not None:
                return _make(got.status, got.headers, got.body)
            note = "no live answer to replay for this call (live capture off, or the live did not make it)"
        else:
            note = f"blocked by egress rule {decision.rule}"
        return http.Response.make(503, f"shadowproxy: {note}\n".encode(),
                                  {"content-type": "text/plain", BLOCK_HEADER: "1"})

    def _call(self, flow: http.HTTPFlow, side: Side) -> OutboundCall:
        req = flow.request
        decision: EgressDecision | None = flow.metadata.get(_DECISION)
        return OutboundCall(
            side=side,
            exchange_id=self._exchange_id(flow),
            method=req.method,
            url=req.url,
            host=_authority(req),
            template=path_template(path_of(req)),
            headers=tuple((k, v) for k, v in req.headers.items(multi=True) if k.lower() in _BODY_HEADERS),
            body=req.raw_content or b"",
            status=flow.response.status_code if flow.response is not None else None,
            action=decision.action if decision is not None else "pass",
            rule=decision.rule if decision is not None else None,
            ts=req.timestamp_start or time.time(),
        )

    def _hand_over(self, call: OutboundCall) -> None:
        self.captured += 1
        stats = self.shadow.stats
        if call.exchange_id is None:
            self.uncorrelated += 1
            stats.count(EGRESS_ROUTE, "uncorrelated")
            return
        d = self.shadow.dispatcher
        if d is None or not self.shadow.dispatcher_ready:
            stats.count(EGRESS_ROUTE, "egress_dropped")
            return
        d.egress(call)

    def _keep_answer(self, call: OutboundCall, resp: http.Response) -> None:
        body = resp.raw_content or b""
        if len(body) > MAX_REPLAY_BODY:
            return
        assert call.exchange_id is not None
        kept = self._answers.get(call.exchange_id)
        if kept is None:
            kept = self._answers[call.exchange_id] = []
            if len(self._answers) > MAX_REPLAY_EXCHANGES:
                self._answers.popitem(last=False)
        if len(kept) < MAX_REPLAY_ANSWERS:
            kept.append(_Answer(call.key, resp.status_code, tuple(resp.headers.fields), body))

    def _replay(self, xid: str, key: tuple[str, str, str]) -> _Answer | None:
        """The live's answer to the same call of the same exchange (each answer replayed once,
        in order: a second identical call gets the live's second answer)."""
        kept = self._answers.get(xid)
        if not kept:
            return None
        for i, a in enumerate(kept):
            if a.key == key:
                return kept.pop(i)
        return None


def egress_modes(options: dict[str, Any]) -> list[str]:
    """The mitmproxy modes of the egress listeners named in these shadow_* options."""
    return [mode_spec(*parse_host_port(options[n], n))
            for n in ("shadow_egress", "shadow_egress_live") if options.get(n)]
