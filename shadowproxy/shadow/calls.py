"""A copy's calls: the shadow's, and beside it at the same moment the secondary's (a second
instance of the live version) or a noise pair's (the shadow asked twice).

    calls = Calls(client, secondary_url, noise_state, rng)
    called = await calls.make(job)       # Called(result, second, who, partner, skipped, queues)

`who` is who answered `second` ("secondary", "shadow" or None); `partner` is set when that
answer is a noise pair (engine.noise), None when the secondary was asked for the latency check
only; `skipped`: the secondary was not asked, `concurrency` calls to it being in flight. With a
secondary every read copy not rewritten asks it (docs/report.md, "Backends on the proxy's
host"): both calls start together in a random order, so neither is always the first to reach a
shared host. Once the shadow has answered, a copy still waiting for the secondary hands its
dispatch slot on (`hand_over`), and at most `concurrency` calls to the secondary are in flight:
a slow or hung secondary never holds back the shadow calls of the copies behind it. `queues`
are the calls in flight at each of the two when a copy's calls start: the report compares the
two latencies on copies that found both queues alike when the servers' latency follows them.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass

from shadowproxy.engine.exchange import Failure, Response
from shadowproxy.engine.noise import NoiseState
from shadowproxy.shadow.client import ShadowCaller, ShadowClient
from shadowproxy.shadow.jobs import ShadowJob

__all__ = ["READ_METHODS", "Called", "Calls", "hand_over"]

log = logging.getLogger("shadowproxy")

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})  # only these are ever asked twice

Answer = Response | Failure


@dataclass(frozen=True, slots=True)
class Called:
    """What a copy's calls gave: the shadow's answer, and the second call's (see the module)."""

    result: Answer
    second: Answer | None = None
    who: str | None = None
    partner: str | None = None
    skipped: bool = False  # a secondary read copy not sent there: too many of its calls in flight
    # the worker's calls in flight at the shadow and at `who` when this copy's two calls started:
    # the queue ahead of each (engine.histogram.SecondaryLatency); None without a second call
    queues: tuple[int, int] | None = None
    # the worker's calls in flight at the shadow when the shadow's call started (Response.queue:
    # compared with live's in engine.stats)
    shadow_queue: int | None = None


def _read_copy(job: ShadowJob) -> bool:
    """A read, not rewritten: the only copies ever asked twice (a noise pair, the secondary)."""
    return not job.rewritten and job.shadow_request.method in READ_METHODS


def hand_over(job: ShadowJob) -> None:
    """The shadow has answered and the copy waits for something else (live's answer, the
    secondary's): its dispatch slot goes to the next copy, once."""
    if job.on_called is not None:
        on_called, job.on_called = job.on_called, None
        on_called()


class Calls:
    def __init__(self, client: ShadowCaller, secondary_url: str | None, noise: NoiseState,
                 rng: random.Random | None = None) -> None:
        self.client = client
        self.secondary: ShadowCaller | None = None
        if secondary_url:
            self.secondary = ShadowClient(secondary_url, client.cfg)
        self.noise = noise
        self._random = (rng or random.Random()).random
        self._order = random.Random().random  # which of two calls at once starts first (not seeded)
        self.shadow_calls = 0  # calls made to the shadow (not the secondary): the host figures' per-call base
        self.pair_failures = 0  # second calls (noise pair, secondary) that failed: left out
        self.secondary_skipped = 0  # copies not sent to the secondary: `concurrency` calls in flight
        self._secondary_calls = 0  # calls to the secondary in flight (some past their copy's slot)
        self._shadow_in_flight = 0  # calls to the shadow in flight (every kind of copy)

    async def make(self, job: ShadowJob) -> Called:
        """The shadow's answer, and the second call's with who made it and whether it is a noise
        pair."""
        who, partner = self._second_call(job)
        shadow_queue = self._shadow_in_flight
        if who is None or who == "skipped":
            return Called(await self.call(job), skipped=who == "skipped", shadow_queue=shadow_queue)
        queues = (shadow_queue, self._secondary_calls if who == "secondary" else shadow_queue)
        result, second = await self._both(job, who)
        if isinstance(second, Failure):
            self.pair_failures += 1
            if self.pair_failures == 1:  # once: a down secondary must not flood the log
                log.warning("the %s call failed (%s: %s); such copies are left out of noise "
                            "pairs and latency against it", who, second.kind, second.message)
        return Called(result, second, who, partner, queues=queues, shadow_queue=shadow_queue)

    def _pair_partner(self, job: ShadowJob) -> str | None:
        """Who answers this job's noise pair ("shadow" or "secondary"), or None: no pair."""
        cfg = job.settings.noise
        if not cfg.enabled or not _read_copy(job):
            return None
        partner = cfg.partner(self.secondary is not None)
        if partner is None or not self.noise.want_pair(job.exchange.route, cfg, partner, self._random()):
            return None
        return partner

    def _second_call(self, job: ShadowJob) -> tuple[str | None, str | None]:
        """Who else is asked for this copy, and whether that answer is a noise pair: (who,
        partner). A secondary is asked for every read copy not rewritten: the latency reference
        (`Stats.secondary`) as well as noise's pair; not while `concurrency` calls to it are in
        flight (who "skipped", counted in `secondary_skipped`)."""
        partner = self._pair_partner(job)
        who = partner
        if partner is None and self.secondary is not None and _read_copy(job):
            who = "secondary"
        if who == "secondary" and self._secondary_calls >= self.client.cfg.concurrency:
            self.secondary_skipped += 1
            return "skipped", None
        return who, partner

    async def call(self, job: ShadowJob, partner: str | None = None) -> Answer:
        s = job.settings
        to_shadow = partner != "secondary"
        if to_shadow:
            client, base = self.client, job.target
            self.shadow_calls += 1
            self._shadow_in_flight += 1
        else:
            assert self.secondary is not None
            client, base = self.secondary, None
        try:
            # on a new connection when the live hop's was new (shadow.client: like for like)
            return await client.call(job.shadow_request, timeout_ms=s.timeout_ms,
                                     max_body_bytes=s.max_body_bytes, base=base,
                                     fresh=bool(job.exchange.live.new_connection))
        finally:
            if to_shadow:
                self._shadow_in_flight -= 1

    async def _both(self, job: ShadowJob, who: str) -> tuple[Answer, Answer]:
        """The shadow's call and `who`'s, started in a random order; the copy's slot handed on
        once the shadow's has answered and the other has not."""
        calls = (self.call(job), self.call(job, who))
        order = (0, 1) if self._order() < 0.5 else (1, 0)
        started: dict[int, asyncio.Future[Answer]] = {}
        for i in order:
            started[i] = asyncio.ensure_future(calls[i])
        mine, theirs = started[0], started[1]
        if who == "secondary":
            self._secondary_calls += 1
            theirs.add_done_callback(self._secondary_done)
        try:
            result = await mine
            if not theirs.done():
                hand_over(job)
            return result, await theirs
        except BaseException:  # cancelled (a drain that timed out): neither call outlives the copy
            mine.cancel()
            theirs.cancel()
            raise

    def _secondary_done(self, _: object) -> None:
        self._secondary_calls -= 1

    async def close(self) -> None:
        await self.client.close()
        if self.secondary is not None:
            await self.secondary.close()
