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
With process dispatch the shadow's listener runs in the worker process instead (a lean master of
its own, proxy/egress_server.py, beside the pipeline): the shadow's calls never cost the live's
event loop anything. The live's listener stays here (it is on the live's path either way).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid
from typing import TYPE_CHECKING, Any, Optional, Protocol

from mitmproxy import ctx, exceptions, http
from mitmproxy.proxy import layers, mode_specs
from mitmproxy.proxy.layers.http import HTTPMode

from shadowproxy.engine.egress import Answer, OutboundCall, Side, exchange_id_of, with_baggage
from shadowproxy.engine.stats import Stats
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
MAX_REPLAY_BODY = 1024 * 1024  # a larger live answer is not kept (a replay of it is a miss)


def parse_host_port(value: str, flag: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ConfigError(f"{flag} {value!r}: not HOST:PORT (e.g. 127.0.0.1:8081)")
    return host, int(port)


def mode_spec(host: str, port: int) -> str:
    return f"regular@{f'[{host}]' if ':' in host else host}:{port}"


def _authority(req: http.Request) -> str:
    default = 443 if req.scheme == "https" else 80
    host = f"[{req.host}]" if ":" in req.host else req.host
    return host if req.port == default else f"{host}:{req.port}"


_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection", b"keep-alive"})


METHOD_OVERRIDES = ("x-http-method-override", "x-http-method", "x-method-override")


def effective_method(method: str, headers: dict[str, str]) -> str:
    """The method a dependency may act on: a method-override header (a GET that says POST)
    counts, so a stubbed write cannot pass as a read."""
    for name in METHOD_OVERRIDES:
        if (value := headers.get(name, "").strip().upper()):
            return value
    return method


def _make(status: int, headers: tuple[tuple[bytes, bytes], ...], body: bytes) -> http.Response:
    """An answer with these headers and this body as it goes on the wire (a replayed live
    answer keeps its content coding): framing headers are mitmproxy's to set."""
    resp = http.Response.make(status, b"", [(k, v) for k, v in headers if k.lower() not in _FRAMING])
    resp.raw_content = body
    resp.headers["content-length"] = str(len(body))
    return resp


class EgressHost(Protocol):
    """What the egress addon needs from where it runs: the proxy (ShadowAddon) or the worker."""

    @property
    def stats(self) -> Stats: ...

    def egress_rules(self) -> EgressRules | None: ...

    def shadow_header(self) -> str | None: ...

    def shadow_egress_here(self) -> bool: ...  # the shadow's listener runs in this process

    def hand_over(self, call: OutboundCall) -> None: ...

    def replay_answer(self, exchange_id: str, key: tuple[str, str, str]) -> Answer | None: ...


class EgressAddon:
    """The egress listeners' flows: decide, answer or pass, capture, hand over."""

    def __init__(self, host: EgressHost) -> None:
        self.host = host
        self.specs: dict[str, Side] = {}  # mitmproxy mode spec -> whose outbound calls it carries
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
            "shadow_egress_ca", OptStr, None,
            "PEM file, a CA certificate and its key: the shadow's egress listener intercepts HTTPS "
            "(CONNECT) with certificates it signs (the shadow must trust it; docs/egress.md).")
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
        missing = [s for s in self.local_modes() if s not in o.mode]
        if missing:
            o.update(mode=[*o.mode, *missing])

    def local_modes(self) -> list[str]:
        """The listeners this process serves: the live's, and the shadow's unless the worker does."""
        here = self.host.shadow_egress_here()
        return [spec for spec, side in self.specs.items() if side == "live" or here]

    def live_modes(self) -> list[mode_specs.ProxyMode]:
        """The live's listener, as mitmproxy's server manager knows it (kept open while stopping)."""
        return [mode_specs.ProxyMode.parse(spec) for spec, side in self.specs.items() if side == "live"]

    def shadow_listen(self) -> str | None:
        """The shadow's listener's mode spec, if one is configured."""
        return next((spec for spec, side in self.specs.items() if side == "shadow"), None)

    # -- what the shadow addon asks ---------------------------------------------------------

    def side(self, flow: http.HTTPFlow) -> Side | None:
        """Whose outbound call this flow is, or None: not an egress listener's flow."""
        if not self.specs:
            return None
        return self.specs.get(flow.client_conn.proxy_mode.full_spec)

    @property
    def rules(self) -> EgressRules:
        found = self.host.egress_rules()
        return found if found is not None else DEFAULT_EGRESS

    @property
    def captures_live(self) -> bool:
        """The live's outbound calls are captured (`--egress-live`): a shadow call that replays
        or is compared with them must come after them (no early copy)."""
        return "live" in self.specs.values()

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

    def next_layer(self, nextlayer: Any) -> None:
        """A tunnel through the shadow's listener whose first bytes do not read as HTTP or TLS (a
        leading blank line, a request written a few bytes at a time, another protocol) would be
        forwarded as raw bytes (mitmproxy's rawtcp): the dependency would get them, unseen by any
        rule. The shadow's tunnels are parsed as HTTP instead: what is not HTTP fails there."""
        if (isinstance(nextlayer.layer, layers.TCPLayer)
                and self.specs.get(nextlayer.context.client.proxy_mode.full_spec) == "shadow"):
            nextlayer.layer = layers.HttpLayer(nextlayer.context, HTTPMode.transparent)

    def request(self, flow: http.HTTPFlow) -> None:
        side = self.side(flow)
        if side is None:
            return
        flow.metadata[_SIDE] = side
        if side == "live" or flow.request.method == "CONNECT":
            return
        req = flow.request
        headers = {k.lower(): v for k, v in req.headers.items()}
        decision = self.rules.decide(effective_method(req.method, headers), req.host, req.port,
                                     path_of(req), headers)
        if decision.action == "pass" and decision.rule is None and "upgrade" in headers:
            # what follows an upgrade (WebSocket messages) is never seen by a rule: not by default
            decision = EgressDecision("block", None)
        flow.metadata[_DECISION] = decision
        if decision.action != "pass":
            flow.response = self._answer(flow, decision)

    def response(self, flow: http.HTTPFlow) -> None:
        side = flow.metadata.get(_SIDE)
        if side is None or flow.request.method == "CONNECT":
            return
        call = self._call(flow, side)
        resp = flow.response
        if side == "live" and call.exchange_id is not None and resp is not None and self.rules.replays:
            body = resp.raw_content or b""
            if len(body) <= MAX_REPLAY_BODY:  # kept with the call: the shadow's replay answer
                call = dataclasses.replace(call, answer=(resp.status_code, tuple(resp.headers.fields), body))
        self._hand_over(call)

    def error(self, flow: http.HTTPFlow) -> None:
        side = flow.metadata.get(_SIDE)
        if side is not None and flow.response is None and flow.request.method != "CONNECT":
            self._hand_over(self._call(flow, side))  # a pass that failed: status None

    # -- the work ---------------------------------------------------------------------------

    def _exchange_id(self, flow: http.HTTPFlow) -> str | None:
        return exchange_id_of(flow.request.headers.items(multi=True), self.host.shadow_header())

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
            got = self.host.replay_answer(xid, (req.method, _authority(req), path_template(path_of(req))))
            if got is not None:
                return _make(*got)
            note = "no live answer to replay for this call (live capture off, or the live did not make it)"
        elif decision.rule is None:
            note = "an upgrade (e.g. WebSocket) is blocked by default: add an egress rule to pass it"
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
        if call.exchange_id is None:
            self.uncorrelated += 1
            self.host.stats.count(EGRESS_ROUTE, "uncorrelated")
            return
        self.host.hand_over(call)


class ProxyEgressHost:
    """The egress addon's host in the proxy process: the shadow addon's rules, stats and dispatcher."""

    def __init__(self, shadow: ShadowAddon) -> None:
        self.shadow = shadow

    @property
    def stats(self) -> Stats:
        return self.shadow.stats

    def egress_rules(self) -> EgressRules | None:
        policy = self.shadow.policy
        return policy.rules.egress if policy is not None else None

    def shadow_header(self) -> str | None:
        policy = self.shadow.policy
        return policy.rules.defaults.shadow_header if policy is not None else None

    def shadow_egress_here(self) -> bool:
        return self.shadow.inline_dispatch()

    def hand_over(self, call: OutboundCall) -> None:
        d = self.shadow.dispatcher
        if d is None or not self.shadow.dispatcher_ready:
            self.stats.count(EGRESS_ROUTE, "egress_dropped")
            return
        d.egress(call)

    def replay_answer(self, exchange_id: str, key: tuple[str, str, str]) -> Answer | None:
        d = self.shadow.dispatcher
        store = getattr(getattr(d, "pipeline", None), "egress", None)  # inline dispatch only
        return store.replay(exchange_id, key) if store is not None else None


def check_egress_ca(path: str, flag: str = "--egress-ca") -> bytes:
    """The PEM (a CA certificate and its private key) the egress listener signs with, checked."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(f"{flag} {path}: cannot read it: {e.strerror or e}") from None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(f"{flag} {path}: no PEM certificate in it (want the CA certificate and its "
                          "key in one file)") from None
    try:
        key = load_pem_private_key(data, None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{flag} {path}: no unencrypted PEM private key in it ({e})") from None
    if certs[0].public_key().public_numbers() != key.public_key().public_numbers():  # type: ignore[union-attr]
        raise ConfigError(f"{flag} {path}: the key does not belong to the first certificate")
    try:
        ca = certs[0].extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        ca = False
    if not ca:
        raise ConfigError(f"{flag} {path}: the certificate is not a CA (basicConstraints CA:TRUE)")
    return data


def install_egress_ca(path: str, confdir: str) -> None:
    """Make the user's CA mitmproxy's in `confdir`: it signs the certificates an intercepting
    CONNECT client is shown (the shadow trusts this CA; docs/egress.md)."""
    data = check_egress_ca(path)
    fd = os.open(os.path.join(confdir, "mitmproxy-ca.pem"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
