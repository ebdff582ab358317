"""Request -> decision: mirror (as is, or rewritten into an idempotent copy) or skip.

Cheap and pure: it runs in the proxy's hook for every request, so it only matches the route,
samples, and builds the request the shadow will get. No I/O, no waiting.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from shadowproxy.engine import grpc
from shadowproxy.engine.exchange import Headers, Request
from shadowproxy.rules.matcher import path_template
from shadowproxy.rules.ruleset import RouteSettings, RuleSet

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

SKIP_REASONS = ("method", "route", "sampled_out", "disabled", "live_error", "grpc_streaming", "not_ready")


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one request. `shadow_request` is set when action is "mirror"."""

    action: str  # mirror | skip
    reason: str  # why it was skipped (one of SKIP_REASONS), or "" / "rewrite" when mirrored
    route: str  # the route name, or the path template when no route matched
    rule: str | None
    settings: RouteSettings
    shadow_request: Request | None = None
    target: str | None = None  # a rewrite's own shadow base URL


@dataclass(slots=True)
class Switch:
    """The runtime kill switch and sample override (the admin API changes these)."""

    enabled: bool = True
    sample: float | None = None  # overrides every route's sample when set


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


def shadow_headers(headers: Headers, settings: RouteSettings, extra: dict[str, str] | None = None) -> Headers:
    """The client's headers minus hop-by-hop and stripped ones, plus the shadow marker."""
    drop = HOP_BY_HOP | settings.strip_headers
    replaced = {k.lower() for k in (extra or {})} | {settings.shadow_header.lower()}
    kept = [(k, v) for k, v in headers if k.lower() not in drop and k.lower() not in replaced]
    kept.extend((extra or {}).items())
    kept.append((settings.shadow_header, "1"))
    return tuple(kept)


def grpc_streaming(req: Request, settings: RouteSettings) -> bool:
    """A streaming gRPC call (never mirrored): the descriptor says so, or the request holds
    more than one message."""
    descriptor: str | None = getattr(settings.compare, "protobuf_descriptor", None)
    if descriptor and settings.grpc_method:
        try:
            info = grpc.method_info(descriptor, settings.grpc_method)
        except grpc.GrpcError:
            info = None
        if info is not None and info.streaming:
            return True
    return grpc.frame_count(req.body) > 1


def _rewrite(req: Request, settings: RouteSettings, params: dict[str, str], request_id: str) -> Request:
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
        headers=shadow_headers(req.headers, settings, headers),
        body=req.body,
        http_version=req.http_version,
    )


class Policy:
    """Decides per request, from a RuleSet and the runtime switch."""

    def __init__(
        self, rules: RuleSet, switch: Switch | None = None, rng: random.Random | None = None
    ) -> None:
        self.rules = rules
        self.switch = switch or Switch()
        self._random = (rng or random.Random()).random

    def decide(self, req: Request, request_id: str = "") -> Decision:
        headers = {k.lower(): v for k, v in req.headers}
        settings, params = self.rules.route_for(req.method, req.path, headers)
        route = settings.name or path_template(req.path)

        def skip(reason: str) -> Decision:
            return Decision("skip", reason, route, settings.name, settings)

        if settings.action == "skip":
            return skip("route")
        rewriting = settings.action == "rewrite"
        # a grpc_method route with action mirror says its (POST) calls are read-safe
        if not rewriting and req.method not in settings.mirror_methods and settings.grpc_method is None:
            return skip("method")
        if settings.grpc_method is not None and grpc_streaming(req, settings):
            return skip("grpc_streaming")
        if not self.switch.enabled:
            return skip("disabled")
        sample = self.switch.sample if self.switch.sample is not None else settings.sample
        if sample < 1.0 and self._random() >= sample:
            return skip("sampled_out")
        if rewriting:
            shadow_req = _rewrite(req, settings, params, request_id)
            target = settings.rewrite.target if settings.rewrite else None
            return Decision("mirror", "rewrite", route, settings.name, settings, shadow_req, target)
        shadow_req = Request(
            req.method, req.path, req.query, shadow_headers(req.headers, settings), req.body, req.http_version
        )
        return Decision("mirror", "", route, settings.name, settings, shadow_req)
