"""One mirrored exchange, start to end: call the shadow, compare, record, count.

Host-agnostic: the live proxy's dispatcher, the worker process and offline replay all feed
`Pipeline.process`. It never raises for anything the shadow or the bodies do; a failure is a
record. Comparisons have their own bound, separate from shadow sends, so shedding diffs under
load never stops shadow traffic, and a slow shadow never stops diffs of what did answer.

Noise (docs/noise.md): when a route's noise mode is on, some reads get a noise pair, the
shadow asked a second time or the secondary (a second live instance) asked too, concurrently
with the shadow call. `engine.noise.NoiseState` learns from every comparison and splits each
one into real differences and noise; an exchange whose only differences are noise is counted
`noise_only` and written nowhere. The state lives here, where the pipeline runs (the worker
process in process dispatch), and is saved to `noise_state_path` atomically, periodically and
at close.

Latency against a secondary (docs/report.md): with one, every read copy not rewritten asks
it too, at the same moment as the shadow and in a random order; the report judges the
shadow's latency against the secondary's, two calls that leave the worker together, rather
than against live's, which the proxy made a moment before.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from shadowproxy.engine.conditional import apply_not_modified
from shadowproxy.engine.diff import Comparison, Difference, compare_responses
from shadowproxy.engine.egress import OutboundCall, compare_calls, egress_options
from shadowproxy.engine.exchange import Failure, Response, escape_surrogates
from shadowproxy.engine.noise import NoiseSplit, NoiseState, field_name, field_of
from shadowproxy.engine.options import CompareOptions
from shadowproxy.engine.record import Outcome, build_record
from shadowproxy.engine.reqdelta import LazyRequestDelta, RequestDelta, request_delta
from shadowproxy.engine.stats import Stats
from shadowproxy.shadow.calls import Calls, hand_over
from shadowproxy.shadow.client import ShadowCaller
from shadowproxy.shadow.egress import EGRESS_ROUTE, EgressCalls
from shadowproxy.shadow.hostload import HostProbe
from shadowproxy.shadow.jobs import ShadowJob, finished_copy, rewrite_of
from shadowproxy.shadow.ledger_worker import WorkerLedger
from shadowproxy.shadow.noise_state import load_noise_state as load_noise_state  # (imported from here)
from shadowproxy.shadow.noise_state import save_noise_state as save_noise_state
from shadowproxy.sinks.base import Record, Sink

log = logging.getLogger("shadowproxy")

HEAVY_DIFF_BYTES = 256 * 1024  # bodies above this are compared off the event loop
NOISE_SAVE_INTERVAL = 30.0  # seconds between saves of the noise state (also at each stats record)


def _float(text: str | None) -> float:
    try:
        return float(text) if text else 0.0
    except ValueError:
        return 0.0


# an exchange's egress differences, and its outbound calls as the record lists them
Outbound = tuple[tuple[Difference, ...], list[dict[str, Any]]]


class Pipeline:
    def __init__(
        self,
        client: ShadowCaller,
        sink: Sink,
        stats: Stats,
        *,
        max_pending_compares: int = 256,
        diff_executor: Executor | None = None,
        secondary_url: str | None = None,
        noise_state: NoiseState | None = None,
        noise_state_path: str | None = None,
        rng: random.Random | None = None,
        egress: EgressCalls | None = None,
        host: HostProbe | None = None,
    ) -> None:
        self.client = client
        self.egress = egress  # the shadow's outbound calls, when the egress listener is on
        self.sink = sink
        self.stats = stats
        self._compare_slots = max_pending_compares
        self._executor = diff_executor
        self._own_executor = False
        self.noise_state_path = noise_state_path
        if noise_state is None:
            noise_state = load_noise_state(noise_state_path) if noise_state_path else NoiseState()
        self.noise = noise_state
        # the shadow's calls, and the secondary's (a second instance of the live version) or a
        # noise pair's beside them (shadow.calls)
        self.calls = Calls(client, secondary_url, noise_state, rng)
        self.secondary = self.calls.secondary
        self._noise_saved = time.monotonic()
        self._noise_dirty = False
        self.cut_off = 0  # copies cancelled in flight (a drain that timed out), counted as dropped
        self._cut_writing: set[int] = set()  # ids of jobs cancelled in sink.write: already counted
        self.unwritten = 0  # records that could not be built or written (each copy still counted once)
        self.held_back = 0  # this interval's copies the dispatcher's lag cap held back (shadow.dispatch)
        self.ledger: WorkerLedger | None = None  # the crash ledger (worker process): records not yet flushed
        # this host's CPU pressure and the local backends' CPU use, per stats interval (shadow.hostload)
        self.host = host

    async def process(self, job: ShadowJob) -> None:
        try:
            await self._process(job)
        except asyncio.CancelledError:
            # a stop whose drain timed out cancels copies in flight: each still ends in one counter
            if not finished_copy(job):
                pass  # an early copy whose live answer never came: not this process's to count
            elif id(job) in self._cut_writing:
                self._cut_writing.discard(id(job))  # its outcome was counted before the write
            else:
                self.stats.count(job.exchange.route, "dropped")
                self.cut_off += 1
            raise
        except Exception:  # a bug here must never take the proxy down; say it loudly
            log.exception("shadow pipeline failed for %s %s", job.exchange.request.method,
                          job.settings.redact.text(escape_surrogates(job.exchange.request.path)))
            self.stats.count(job.exchange.route, "shadow_errors")

    async def _process(self, job: ShadowJob) -> None:
        ex, s = job.exchange, job.settings
        called = await self.calls.make(job)
        result, second, who, partner = called.result, called.second, called.who, called.partner
        if job.live_wait is not None:  # an early copy: its live answer, by now or later (bounded)
            if not job.live_wait.done():
                hand_over(job)
            answer = await job.live_wait
            if answer is None:
                return  # abandoned (the proxy counted why) or forgotten: nothing counted here
            job.live_wait = None
            ex.live, ex.ts = answer
        if who == "secondary":  # which of the two failed, if one did (the shadow-error check's reference)
            self.stats.secondary_failed(ex.route, isinstance(result, Failure), isinstance(second, Failure))
        elif called.skipped:
            self.stats.secondary_skipped(ex.route)
        outbound = await self._outbound(job)
        if isinstance(result, Failure):
            outcome: Outcome = "too_large" if result.kind == "too_large" else "shadow_error"
            self.stats.count(ex.route, "too_large" if outcome == "too_large" else "shadow_errors")
            await self._write(job, lambda: build_record(ex, outcome, result, redactor=s.redact,
                                                        shadow_request=rewrite_of(job),
                                                        egress=outbound[1] if outbound else None))
            return
        if result.status == 304 and ex.live.status != 304 and ex.annotations.get("revalidation"):
            result = apply_not_modified(ex.live, result)  # a replayed recorded revalidation
        compared = result
        if ex.annotations.get("body_not_recorded"):
            # replay of an answer whose body the recording does not hold: status and headers only
            compared = dataclasses.replace(result, body=ex.live.body)
        # a noise pair from the shadow: it served two calls at once for this copy, live one (an
        # outside attacker's identical servers read p95 +104% with noise pairs): not timed
        self.stats.exchange(ex.route, ex.live, result, called.shadow_queue, timed=partner != "shadow")
        if who == "secondary" and isinstance(second, Response):
            self.stats.secondary(ex.route, second, result, called.queues)
        if self._compare_slots <= 0:
            self.stats.count(ex.route, "dropped")  # comparisons shed; the shadow still got its copy
            return
        self._compare_slots -= 1
        try:
            comparison = await self._compare(ex.live, compared, s.compare, self._delta(job))
            pair: Comparison | None = None
            if partner is not None and isinstance(second, Response):
                # shadow twice: the two shadow answers (one request: no delta); a secondary: live
                # and secondary (Diffy's), whose requests differ as live's and shadow's do
                first = result if partner == "shadow" else ex.live
                pair_delta = self._delta(job, secondary=True) if partner == "secondary" else None
                pair = await self._compare(first, second, s.compare, pair_delta)
                if pair.too_large:
                    pair = None
        finally:
            self._compare_slots += 1
        await self._conclude(job, result, comparison, pair, outbound)

    def add_call(self, call: OutboundCall) -> None:
        """An outbound call the egress listener captured (correlated): held for its exchange."""
        if self.egress is None:
            return
        before = self.egress.unclaimed
        if not self.egress.add(call):
            self.stats.count(EGRESS_ROUTE, "egress_dropped")
        if self.egress.unclaimed > before:  # let go untaken: their id was no exchange's, or came late
            self.stats.count(EGRESS_ROUTE, "egress_unclaimed", self.egress.unclaimed - before)

    async def _outbound(self, job: ShadowJob) -> Outbound | None:
        """After the shadow answered: wait the settle time, take the exchange's outbound calls, and
        (live capture on) diff them with the live's. None when egress is off for this job."""
        eg, s = self.egress, job.settings.egress
        if eg is None or s is None:
            return None
        if s.settle_ms:
            await asyncio.sleep(s.settle_ms / 1000)  # holds this copy's slot, never anything live
        live, shadow = eg.take(job.exchange.id)
        diffs: tuple[Difference, ...] = ()
        if eg.compare_live and s.correlate_live:
            diffs = compare_calls(live, shadow, egress_options(job.settings.compare, s.ignore_body))
        return diffs, [c.summary() for c in (*live, *shadow)]

    def _delta(self, job: ShadowJob, secondary: bool = False) -> LazyRequestDelta | None:
        """How the shadow's (or the secondary's) request differed from the live's, worked out if
        a difference asks; None when the route turned request-delta cancellation off."""
        if not job.settings.request_delta:
            return None
        return LazyRequestDelta(lambda: self._work_out_delta(job, secondary))

    def _work_out_delta(self, job: ShadowJob, secondary: bool) -> RequestDelta:
        client = self.secondary if secondary and self.secondary is not None else self.client
        url = client.url_for(job.shadow_request, None if secondary else job.target)
        default_port = {"http": 80, "https": 443}.get(url.scheme)
        host = url.raw_host or ""
        authority = f"[{host}]" if ":" in host else host  # an IPv6 literal, as a Host header has it
        if url.port is not None and url.port != default_port:
            authority = f"{authority}:{url.port}"
        return request_delta(job.exchange.request, job.shadow_request, shadow_authority=authority,
                             live_scheme=job.exchange.annotations.get("live_scheme", "http"),
                             shadow_scheme=url.scheme)

    async def _compare(self, live: Response, shadow: Response, opts: CompareOptions,
                       delta: LazyRequestDelta | None = None) -> Comparison:
        start = time.perf_counter()
        if len(live.body) + len(shadow.body) < HEAVY_DIFF_BYTES:
            result = compare_responses(live, shadow, opts, delta)
        else:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="shadowproxy-diff")
                self._own_executor = True
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self._executor, compare_responses, live, shadow, opts, delta)
        self.stats.diff_latency.observe((time.perf_counter() - start) * 1000)
        return result

    def _split_noise(self, job: ShadowJob, comparison: Comparison, pair: Comparison | None) -> NoiseSplit:
        """Learn from this exchange (and its pair), then split its differences."""
        ex, cfg = job.exchange, job.settings.noise
        self.noise.observe(ex.route, comparison, pair)
        self._noise_dirty = True
        now = time.time()
        # when the live answer was made: a replayed recording says when it was recorded
        live_at = _float(ex.annotations.get("recorded_at")) or ex.ts
        elapsed = now - live_at if live_at else 0.0  # at most the time between the two answers
        return self.noise.split(ex.route, comparison, cfg, now=now, elapsed_s=elapsed)

    async def _conclude(
        self, job: ShadowJob, shadow: Response, comparison: Comparison, pair: Comparison | None = None,
        outbound: Outbound | None = None,
    ) -> None:
        ex = job.exchange
        noise: tuple[str, ...] = ()
        explained: tuple[str, ...] = ()
        outcome: Outcome
        if comparison.too_large:
            self.stats.count(ex.route, "too_large")
            outcome = "too_large"
        else:
            self.stats.count(ex.route, "compared")
            explained = self._request_delta_fields(comparison)
            if explained:
                self.stats.request_delta(ex.route, explained)
            if job.settings.noise.enabled:
                split = self._split_noise(job, comparison, pair)
                self._maybe_save_noise()
                if split.noise_only:
                    self.stats.count(ex.route, "noise_only")
                    return
                if split.noise:
                    comparison = dataclasses.replace(comparison, differences=split.real)
                    noise = split.noise
            if outbound is not None and outbound[0]:  # side effects differ: after noise, never noise
                comparison = dataclasses.replace(comparison, differences=comparison.differences + outbound[0])
            if comparison.equal:
                # differed only where the request delta explains it: never a mismatch
                self.stats.count(ex.route, "request_delta" if explained else "equal")
                return
            self.stats.count(ex.route, "mismatched")
            outcome = "mismatch"
        await self._write(job, lambda: build_record(
            ex,
            outcome,
            shadow,
            comparison,
            live_decoded=getattr(comparison, "live_body", None),
            shadow_decoded=getattr(comparison, "shadow_body", None),
            shadow_request=rewrite_of(job),
            redactor=job.settings.redact,
            noise=noise,
            request_delta=explained,
            egress=outbound[1] if outbound is not None else None,
        ))

    async def _write(self, job: ShadowJob, make: Callable[[], Record]) -> None:
        """Build and write one record. The copy is already counted (equal, mismatched...): a
        failure here loses this record only, said in the log and counted in `unwritten`, and
        never counts the copy a second time. A cancel (a drain that timed out) while writing is
        noted, so `process` does not count the copy again as dropped."""
        ledger, outcome = self.ledger, ""
        try:
            record = make()
            if ledger is not None:
                outcome = record["outcome"]
                ledger.written(outcome)  # its copy is finished when the record is flushed
            await self.sink.write(record)
        except asyncio.CancelledError:
            if ledger is not None and outcome:
                ledger.unwritten(outcome)
            self._cut_writing.add(id(job))
            raise
        except Exception as e:
            if ledger is not None and outcome:
                ledger.unwritten(outcome)
            self.unwritten += 1
            if self.unwritten <= 10 or self.unwritten % 1000 == 0:
                req = job.exchange.request
                log.error("record for %s %s not written (%d so far): %s", req.method,
                          job.settings.redact.text(escape_surrogates(req.path)), self.unwritten,
                          type(e).__name__)

    @staticmethod
    def _request_delta_fields(comparison: Comparison) -> tuple[str, ...]:
        """The fields (`where:pointer`, as noise names them) the request delta explained."""
        names = set()
        for d in comparison.request_delta:
            f = field_of(d, comparison.body_kind)
            if f is not None:
                names.add(field_name(f))
        return tuple(sorted(names))

    def sink_counters(self) -> dict[str, int]:
        """The sink's counters, plus `unwritten` when a record could not be built or written."""
        c = self.sink.counters()
        if self.unwritten:
            c["unwritten"] = self.unwritten
        return c

    async def emit_stats(self) -> Record | None:
        """Write the stats record of the interval just ended; it, or None when nothing happened."""
        record = self.stats.stats_record()
        noise = self.noise.take_interval()
        host = None
        if self.host is not None:  # a few /proc reads (a walk when a backend is missing): off the loop
            host = await asyncio.to_thread(self.host.take_interval, self.calls.shadow_calls)
        if record is not None:
            if host:
                record["host"] = host  # how busy the host was, and the local backends (shadow.hostload)
            if noise:
                record["noise"] = noise  # per route: this interval's noise counts (sum them)
            if self.held_back:
                record["held_back"] = self.held_back
                self.held_back = 0
            if self.ledger is not None:
                self.ledger.prepare(record)  # tagged; the ledger knows it may be in the sink from now
            await self.sink.write(record)
        self.save_noise()
        return record

    def _maybe_save_noise(self) -> None:
        if self.noise_state_path and time.monotonic() - self._noise_saved >= NOISE_SAVE_INTERVAL:
            self.save_noise()

    def save_noise(self) -> None:
        """Save the noise state to `noise_state_path` (when set and something was learned).

        A failed save is logged, never raised: losing learned noise must not stop the mirroring."""
        if not self.noise_state_path or not self._noise_dirty:
            return
        self._noise_saved = time.monotonic()
        try:
            save_noise_state(self.noise_state_path, self.noise)
        except OSError as e:
            log.error("noise state %s: cannot save it: %s", self.noise_state_path, e.strerror or e)
            return
        self._noise_dirty = False

    async def start_probe(self) -> None:
        """Find the local backends' processes for the host figures (a walk over /proc, in a thread)."""
        if self.host is not None:
            await asyncio.to_thread(self.host.start)

    async def close(self) -> None:
        self.save_noise()
        await self.calls.close()
        if self._own_executor and self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
