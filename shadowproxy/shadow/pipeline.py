"""One mirrored exchange, start to end: call the shadow, compare, record, count.

Host-agnostic: the live proxy's dispatcher, the worker process and offline replay all feed
`Pipeline.process`. It never raises for anything the shadow or the bodies do; a failure is a
record. Comparisons have their own bound, separate from shadow sends, so shedding diffs under
load never stops shadow traffic, and a slow shadow never stops diffs of what did answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

from shadowproxy.engine.diff import Comparison, compare_responses
from shadowproxy.engine.exchange import Exchange, Failure, Request, Response
from shadowproxy.engine.options import CompareOptions
from shadowproxy.engine.record import build_record
from shadowproxy.engine.stats import Stats
from shadowproxy.rules.ruleset import RouteSettings
from shadowproxy.shadow.client import ShadowClient
from shadowproxy.sinks.base import Sink

log = logging.getLogger("shadowproxy")

HEAVY_DIFF_BYTES = 256 * 1024  # bodies above this are compared off the event loop


@dataclass(slots=True)
class ShadowJob:
    """Everything the pipeline needs: picklable, so it can cross into a worker process."""

    exchange: Exchange
    shadow_request: Request
    settings: RouteSettings
    target: str | None = None  # a rewrite's own shadow base URL
    rewritten: bool = False


class Pipeline:
    def __init__(
        self,
        client: ShadowClient,
        sink: Sink,
        stats: Stats,
        *,
        max_pending_compares: int = 256,
        diff_executor: Executor | None = None,
    ) -> None:
        self.client = client
        self.sink = sink
        self.stats = stats
        self._compare_slots = max_pending_compares
        self._executor = diff_executor
        self._own_executor = False

    async def process(self, job: ShadowJob) -> None:
        try:
            await self._process(job)
        except Exception:  # a bug here must never take the proxy down; say it loudly
            log.exception(
                "shadow pipeline failed for %s %s", job.exchange.request.method, job.exchange.request.path
            )
            self.stats.count(job.exchange.route, "shadow_errors")

    async def _process(self, job: ShadowJob) -> None:
        ex, s = job.exchange, job.settings
        result = await self.client.call(
            job.shadow_request, timeout_ms=s.timeout_ms, max_body_bytes=s.max_body_bytes, base=job.target
        )
        if isinstance(result, Failure):
            outcome = "too_large" if result.kind == "too_large" else "shadow_error"
            self.stats.count(ex.route, "too_large" if outcome == "too_large" else "shadow_errors")
            await self.sink.write(build_record(ex, outcome, result, shadow_request=self._shadow_request(job),
                                               redactor=s.redact))
            return
        self.stats.latency(ex.route, ex.live.latency_ms, result.latency_ms)
        if self._compare_slots <= 0:
            self.stats.count(ex.route, "dropped")  # comparisons shed; the shadow still got its copy
            return
        self._compare_slots -= 1
        try:
            comparison = await self._compare(ex.live, result, s.compare)
        finally:
            self._compare_slots += 1
        await self._conclude(job, result, comparison)

    async def _compare(self, live: Response, shadow: Response, opts: CompareOptions) -> Comparison:
        start = time.perf_counter()
        if len(live.body) + len(shadow.body) < HEAVY_DIFF_BYTES:
            result = compare_responses(live, shadow, opts)
        else:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="shadowproxy-diff")
                self._own_executor = True
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self._executor, compare_responses, live, shadow, opts)
        self.stats.diff_latency.observe((time.perf_counter() - start) * 1000)
        return result

    async def _conclude(self, job: ShadowJob, shadow: Response, comparison: Comparison) -> None:
        ex = job.exchange
        if comparison.too_large:
            self.stats.count(ex.route, "too_large")
            outcome = "too_large"
        else:
            self.stats.count(ex.route, "compared")
            if comparison.equal:
                self.stats.count(ex.route, "equal")
                return
            self.stats.count(ex.route, "mismatched")
            outcome = "mismatch"
        record = build_record(
            ex,
            outcome,
            shadow,
            comparison,
            live_decoded=getattr(comparison, "live_body", None),
            shadow_decoded=getattr(comparison, "shadow_body", None),
            shadow_request=self._shadow_request(job),
            redactor=job.settings.redact,
        )
        await self.sink.write(record)

    @staticmethod
    def _shadow_request(job: ShadowJob) -> dict[str, str] | None:
        if not job.rewritten:
            return None
        out = {"method": job.shadow_request.method, "target": job.shadow_request.target}
        if job.target:
            out["base"] = job.target
        return out

    async def emit_stats(self) -> None:
        record = self.stats.stats_record()
        if record is not None:
            await self.sink.write(record)

    async def close(self) -> None:
        await self.client.close()
        if self._own_executor and self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
