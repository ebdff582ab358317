"""A copy (ShadowJob), and Request + live response -> ShadowJob, the one way: the proxy's addon
and replay both use it. The pipeline (shadow.pipeline) takes jobs; dispatch and the worker's
channel carry them.

    decide(policy, stats, request) -> (Decision, request_id), the skip already counted
    decision.streamed_answer(live) -> bool: a server-streaming gRPC answer, never mirrored
    job_of(request, live, decision, request_id) -> ShadowJob
    build_job(policy, stats, request, live) -> ShadowJob | None   all at once, after the live answer
    early_job(policy, stats, request, new_connection) -> (Decision, ShadowJob) | None
        at request time: the copy leaves while live runs; its live answer follows by the copy's
        id (shadow.dispatch `start_copy` / `finish_copy`), or it is abandoned (`not_copied`)

Replay with `--live` needs the decision before there is a live response (a skipped request is
sent to neither side), hence the two halves; the proxy's early copies too.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from shadowproxy.engine.exchange import Exchange, Request, Response
from shadowproxy.engine.stats import SAMPLING_SKIPS, Stats
from shadowproxy.policy import Decision, Policy
from shadowproxy.rules.ruleset import RouteSettings

__all__ = [
    "LiveAnswer",
    "ShadowJob",
    "build_job",
    "decide",
    "early_job",
    "finished_copy",
    "job_of",
    "rewrite_of",
    "streamed_skip",
]


# an early copy's live answer and when it came; None: never (abandoned, or waited too long)
LiveAnswer = tuple[Response, float] | None


@dataclass(slots=True)
class ShadowJob:
    """Everything the pipeline needs: picklable, so it can cross into a worker process.

    An early copy (shadow.dispatch `start_copy`) is made before the live answer: its
    `exchange.live` is a stand-in (only `new_connection`, live's predicted), and `live_wait`
    resolves to the real one. The shadow call is made at once, so live and shadow run at the
    same moment; the comparison waits for live's answer."""

    exchange: Exchange
    shadow_request: Request
    settings: RouteSettings
    target: str | None = None  # a rewrite's own shadow base URL
    rewritten: bool = False
    live_wait: asyncio.Future[LiveAnswer] | None = None  # not pickled (channel: encode_job)
    # called once the shadow answered and live (an early copy) or the secondary has not: the
    # copy's slot goes to the next (dispatch)
    on_called: Callable[[], None] | None = None


def finished_copy(job: ShadowJob) -> bool:
    """Not an early copy, or one whose live answer has come (this process counts it)."""
    w = job.live_wait
    return w is None or (w.done() and not w.cancelled() and w.result() is not None)


def rewrite_of(job: ShadowJob) -> dict[str, str] | None:
    """What a rewritten copy sent the shadow (its record's `shadow_request`); None: not rewritten."""
    if not job.rewritten:
        return None
    out = {"method": job.shadow_request.method, "target": job.shadow_request.target}
    if job.target:
        out["base"] = job.target
    return out


def decide(policy: Policy, stats: Stats, request: Request,
           client_host: str | None = None, request_id: str | None = None) -> tuple[Decision, str]:
    """The policy's decision and the request id it was made with (given: the id the live request
    already carried, egress correlate_live); a skip is counted here."""
    request_id = request_id or uuid.uuid4().hex
    decision = policy.decide(request, request_id, client_host)
    if decision.shadow_request is None:
        stats.skip(decision.route, decision.reason)
        if decision.reason in SAMPLING_SKIPS:
            stats.count(decision.route, "eligible")
    else:
        stats.count(decision.route, "eligible")
    return decision, request_id


def job_of(request: Request, live: Response, decision: Decision, request_id: str,
           ts: float | None = None) -> ShadowJob:
    """The job for a mirrored decision (`decision.shadow_request` set)."""
    assert decision.shadow_request is not None
    when = time.time() if ts is None else ts
    exchange = Exchange(request, live, request_id, when, decision.route, decision.rule)
    return ShadowJob(exchange, decision.shadow_request, decision.settings, decision.target,
                     decision.reason == "rewrite")


def build_job(policy: Policy, stats: Stats, request: Request, live: Response,
              client_host: str | None = None, live_scheme: str = "",
              request_id: str | None = None) -> ShadowJob | None:
    """The shadow job for a completed exchange, or None (counted) when it is not mirrored."""
    decision, request_id = decide(policy, stats, request, client_host, request_id)
    if decision.shadow_request is None:
        return None
    if decision.streamed_answer(live):
        streamed_skip(stats, decision.route)
        return None
    return _scheme(job_of(request, live, decision, request_id), live_scheme)


def streamed_skip(stats: Stats, route: str) -> None:
    """A server-streaming gRPC answer (`decision.streamed_answer`): not copied after all."""
    stats.skip(route, "grpc_streaming")
    stats.count(route, "eligible", -1)  # out of the sample rate


def _scheme(job: ShadowJob, live_scheme: str) -> ShadowJob:
    if live_scheme:
        job.exchange.annotations["live_scheme"] = live_scheme
    return job


def early_job(policy: Policy, stats: Stats, request: Request, new_connection: bool | None,
              client_host: str | None = None, live_scheme: str = "",
              request_id: str | None = None) -> tuple[Decision, ShadowJob] | None:
    """The decision and the job for a request whose live answer has not come yet, or None
    (counted) when it is not mirrored. The job's live response is a stand-in that says only
    whether live opens a new connection (the shadow call follows it); the real one replaces it
    when it comes (shadow.pipeline)."""
    decision, request_id = decide(policy, stats, request, client_host, request_id)
    if decision.shadow_request is None:
        return None
    stand_in = Response(0, new_connection=new_connection)
    return decision, _scheme(job_of(request, stand_in, decision, request_id), live_scheme)

