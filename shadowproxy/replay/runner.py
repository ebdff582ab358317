"""Replay recorded exchanges through the shared pipeline, at a bounded rate and concurrency.

    summary = await Replayer(config, sink, ruleset).run(read_entries(path), total=n)

For each replayable entry: the policy decides exactly as in the proxy (a skip is counted and
nothing is sent anywhere); the live side is the recorded response, or with `live_url` a fresh
call to the live base URL with the same request the shadow gets; then `Pipeline.process` calls
the shadow, diffs, writes records and counts. At the end one `Stats(source="replay")` record
holds every count, so a report over the sink is exact.

Load: a pacer lets at most `rate` requests start per second (evenly spaced, no bursts), and
`concurrency` workers bound how many are in flight. `stop()` (the first Ctrl-C) stops feeding;
what is in flight finishes, the stats record is written and the sink flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from shadowproxy.engine.exchange import Failure, Request, Response
from shadowproxy.engine.stats import Stats
from shadowproxy.policy import Decision, Policy
from shadowproxy.replay.inputs import Entry
from shadowproxy.rules.ruleset import RuleSet
from shadowproxy.shadow.client import ShadowClient
from shadowproxy.shadow.config import PipelineConfig, build_pipeline
from shadowproxy.shadow.jobs import decide, job_of
from shadowproxy.sinks.base import Sink

_Item = tuple[Entry, Decision, str]  # an entry, its decision and the request id it was made with

__all__ = ["Pacer", "ReplayConfig", "ReplayStats", "ReplaySummary", "Replayer"]


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    """The pipeline (the shadow, its client, noise: as `run` has them) and replay's own load."""

    pipeline: PipelineConfig  # its client settings (TLS, concurrency) also call --live
    live_url: str | None = None  # None: the recorded response is the live side
    rate: float | None = None  # requests started per second at most; None: no limit
    concurrency: int = 16  # requests in flight at most (per side)


@dataclass(slots=True)
class ReplaySummary:
    """Totals of one replay. `skipped` holds policy skips and live errors by reason;
    `unreplayable` what the input held that cannot be replayed (not_http)."""

    total: int = 0  # entries in the input
    done: int = 0  # entries handled (replayed, skipped or unreplayable)
    replayed: int = 0  # sent to the shadow
    equal: int = 0
    mismatched: int = 0
    shadow_errors: int = 0
    too_large: int = 0
    dropped: int = 0
    # replayed entries adjusted (docs/replay.md): recorded revalidations, bodies not recorded
    adjusted: int = 0
    adjusted_by: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    unreplayable: Counter[str] = field(default_factory=Counter)
    interrupted: bool = False
    elapsed_s: float = 0.0

    def fill_from(self, stats: Stats) -> None:
        self.equal = stats.total("equal")
        self.mismatched = stats.total("mismatched")
        self.shadow_errors = stats.total("shadow_errors")
        self.too_large = stats.total("too_large")
        self.dropped = stats.total("dropped")
        self.adjusted = stats.total("adjusted")
        self.skipped = Counter()
        for rs in stats.totals.values():
            self.skipped.update(rs.skipped_by)


ProgressCallback = Callable[[ReplaySummary, Stats], None]


class ReplayStats(Stats):
    """`Stats(source="replay")`. Without `--live` the live latency was measured when the
    traffic was recorded, through another path at another time: not comparable with a fresh
    shadow call, so only the shadow's latency is kept, and the report's latency check (which
    needs both sides) does not run. With `--live` both sides are fresh and both are kept."""

    def __init__(self, *, live_latency: bool) -> None:
        super().__init__(source="replay")
        self.live_latency = live_latency

    def latency(self, route: str, live_ms: float, shadow_ms: float) -> None:
        if self.live_latency:
            super().latency(route, live_ms, shadow_ms)
            return
        for rs in self._route(route):
            rs.shadow_latency.observe(shadow_ms)


class Pacer:
    """Lets at most `rate` callers through per second, evenly spaced (a bucket of one token)."""

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        if rate is not None and rate <= 0:
            msg = f"rate must be above 0, got {rate}"
            raise ValueError(msg)
        self.interval = 1.0 / rate if rate else 0.0
        self._clock = clock
        self._next = 0.0

    def delay(self) -> float:
        """Seconds the next caller must wait; reserves its slot."""
        if not self.interval:
            return 0.0
        now = self._clock()
        start = max(now, self._next)
        self._next = start + self.interval
        return start - now


class Replayer:
    def __init__(self, config: ReplayConfig, sink: Sink, rules: RuleSet, *,
                 on_progress: ProgressCallback | None = None) -> None:
        self.config = config
        self.sink = sink
        self.stats = ReplayStats(live_latency=config.live_url is not None)
        self.policy = Policy(rules, limits=False)  # the load limits are for live traffic; --rate paces replay
        self.pipeline = build_pipeline(config.pipeline, self.stats, sink=sink)
        self.live = ShadowClient(config.live_url, config.pipeline.client) if config.live_url else None
        self.summary = ReplaySummary()
        self.on_progress = on_progress
        self._stop = asyncio.Event()
        self._pacer = Pacer(config.rate)

    def stop(self) -> None:
        """Stop feeding new requests; those in flight finish. Safe to call more than once."""
        self.summary.interrupted = True
        self._stop.set()

    async def run(self, entries: Iterable[Entry], total: int = 0) -> ReplaySummary:
        self.summary.total = total
        started = time.monotonic()
        queue: asyncio.Queue[_Item | None] = asyncio.Queue(self.config.concurrency)
        await self.sink.start()
        workers = [asyncio.create_task(self._worker(queue)) for _ in range(self.config.concurrency)]
        try:
            await self._feed(entries, queue)
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            # Even when cancelled (a second Ctrl-C): the counts so far, then flush.
            await self.pipeline.emit_stats()
            await self.sink.stop()
            await self.pipeline.close()
            if self.live is not None:
                await self.live.close()
            self.summary.fill_from(self.stats)
            self.summary.elapsed_s = time.monotonic() - started
        return self.summary

    async def _feed(self, entries: Iterable[Entry], queue: asyncio.Queue[_Item | None]) -> None:
        for entry in entries:
            if self._stop.is_set():
                return
            item = self._admit(entry)
            if item is None:
                self._advance()
                continue
            delay = self._pacer.delay()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                if self._stop.is_set():
                    return
            await queue.put(item)

    def _admit(self, entry: Entry) -> _Item | None:
        """The entry with its decision, or None when it is not replayed (counted here)."""
        if entry.request is None or entry.unreplayable == "not_http":
            self.summary.unreplayable[entry.unreplayable or "not_http"] += 1
            return None
        if entry.live is None:  # recorded without a response: the proxy would count the same
            self.stats.skip(self.policy.route_name(entry.request.path), entry.unreplayable or "live_error")
            return None
        decision, request_id = decide(self.policy, self.stats, entry.request)
        if decision.shadow_request is None:
            return None
        return entry, decision, request_id

    async def _worker(self, queue: asyncio.Queue[_Item | None]) -> None:
        while (item := await queue.get()) is not None:
            try:
                await self._replay(*item)
            finally:
                self._advance()

    async def _replay(self, entry: Entry, decision: Decision, request_id: str) -> None:
        assert entry.request is not None and entry.live is not None and decision.shadow_request is not None
        live = entry.live
        if self.live is not None:
            fresh = await self._call_live(decision.shadow_request, decision)
            if fresh is None:
                return
            live = fresh
        self.summary.replayed += 1
        if decision.streamed_answer(live):
            self.stats.skip(decision.route, "grpc_streaming")
            return
        job = job_of(entry.request, live, decision, request_id)
        if self.live is None and entry.ts:
            # the live side was answered when recorded: noise shapes judge its clock by that
            job.exchange.annotations["recorded_at"] = repr(entry.ts)
        if self.live is None and entry.adjusted == "revalidation":
            # a browser's 200 that was a 304 on the wire: a shadow 304 is judged against the
            # recorded validators (engine.conditional), so the pipeline applies it to the recording
            job.exchange.annotations["revalidation"] = "1"
            self.stats.count(decision.route, "adjusted")
            self.summary.adjusted_by["revalidation"] += 1
        if self.live is None and not entry.body_recorded:
            # the recording holds no body (a browser never read it): status and headers only
            job.exchange.annotations["body_not_recorded"] = "1"
            if entry.adjusted != "revalidation":
                self.stats.count(decision.route, "adjusted")
            self.summary.adjusted_by["body_not_recorded"] += 1
        await self.pipeline.process(job)

    async def _call_live(self, request: Request, decision: Decision) -> Response | None:
        assert self.live is not None
        s = decision.settings
        # The live gets exactly what the shadow gets (a rewrite's dry-run copy included): replay
        # compares two versions on the same input and never sends a recorded write to either.
        result = await self.live.call(request, timeout_ms=s.timeout_ms, max_body_bytes=s.max_body_bytes)
        if isinstance(result, Failure):
            if result.kind == "too_large":  # as the pipeline counts an oversized body
                self.stats.count(decision.route, "too_large")
            else:
                self.stats.skip(decision.route, "live_error")
            return None
        return result

    def _advance(self) -> None:
        self.summary.done += 1
        if self.on_progress is not None:
            self.on_progress(self.summary, self.stats)
