"""The shadow's load budget: token buckets (`max_rps`) and the rarity budget (`sample: {mode: budget}`).

A shadow is usually smaller than live, so a spike on live must not become a spike on the
shadow, and a fixed fraction small enough to protect it starves rare routes. Both pieces run
in the proxy's hook for every eligible request: a call is O(1) (the budget's O(routes) work
happens once a second, on the request that crosses the second) and allocates nothing but a
route's window the first time the route is seen. The clock is injected, so tests drive it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

Clock = Callable[[], float]

BURST_S = 0.2  # a bucket holds this many seconds of its rate, at least MIN_BURST tokens: a small burst
MIN_BURST = 2.0  # with one token, a slow rate under jittery arrivals lost about a fifth of its copies
SLOT_S = 1.0  # the budget's window moves in steps of one second
MAX_BUDGET_ROUTES = 1000  # routes tracked by name; more share one window (unmatched paths are unbounded)
OTHER = ""  # the shared window's key
FIRST_S = 0.25  # in the first second, a route's rate is its count over the time so far, at least this


def burst_for(rate: float) -> float:
    """max(2, 0.2 s x rate): 2 tokens up to 10/s, then 0.2 s of the rate."""
    return max(MIN_BURST, rate * BURST_S)


class TokenBucket:
    """`rate` copies per second, at most `burst` at once; decides at once, never waits."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.burst = burst_for(rate)
        self._tokens = self.burst  # starts full
        self._last = now

    def take(self, now: float) -> bool:
        """One token if there is one (True), else False; `now` from the same clock each time."""
        tokens = self._tokens + (now - self._last) * self.rate
        self._last = now
        if tokens > self.burst:
            tokens = self.burst
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return True
        self._tokens = tokens
        return False

    def give_back(self) -> None:
        """Undo a `take` whose copy was refused by a later limit."""
        self._tokens = min(self.burst, self._tokens + 1.0)


class _Window:
    """One route's request counts: per second over the window, and in the current second."""

    __slots__ = ("current", "rate", "slots", "total")

    def __init__(self, size: int) -> None:
        self.slots = [0] * size
        self.total = 0  # sum of slots
        self.current = 0  # requests in the second under way
        self.rate = 0.0  # requests/s, as estimated at the last step

    def step(self, index: int, count: int) -> None:
        self.total += count - self.slots[index]
        self.slots[index] = count


def water_level(rates: list[float], budget: float) -> float:
    """The level c with sum(min(rate, c)) == budget (max-min fair shares); inf when all fit.

    A route below the level gets all its requests, the ones above get c copies/s each.
    """
    remaining = budget
    rates = sorted(rates)
    for i, rate in enumerate(rates):
        share = remaining / (len(rates) - i)
        if rate > share:
            return share
        remaining -= rate
    return math.inf


class Budget:
    """Spends `rps` shadow copies per second across routes, rarest first.

    Each route's rate is estimated from its counts over a sliding window of `window_s` seconds
    (the larger of the window's average and the last second, so a spike is down-sampled within
    a second and forgotten slowly). Once a second the fair level c is computed from the rates
    (`water_level`): a route at or below c keeps every request, a busier one keeps c/rate of
    them. Within a second, a route that already sent more than its estimate is treated as
    that busy (and, when every route fitted, may take only the budget left over). The window
    starts with the first request (and again after a whole window without any): before its
    first second ends, a route's rate is its count over the time so far, and the budget is
    shared by the routes seen.

    What is spent is metered by a pool of credit that fills at `rps` and holds `burst_for(rps)`
    copies (the global token bucket's burst at the same rate, so a budget capped by the global
    rate stays within that bucket). Every copy kept takes one. A busy route's copy needs two in
    the pool (one is left for a rare route's next copy), and takes it either by its c/rate draw
    or because the pool is nearly full: what the rare routes and the estimates leave unspent
    goes to the busy routes within a fraction of a second, so under demand the budget spends
    close to `rps` (within a burst over any period). A rare route's copy is kept while the pool
    is above minus one burst, so rare routes stay at 100% unless their own rates overspend it.
    """

    def __init__(self, rps: float, window_s: int, now: float, max_routes: int = MAX_BUDGET_ROUTES) -> None:
        self.rps = rps
        self.size = max(1, int(window_s / SLOT_S))
        self.max_routes = max_routes
        self.level = math.inf  # from the first step on; before it, rps shared by the routes seen
        self._slack = rps  # with level inf: rps minus the routes' rates
        self._routes: dict[str, _Window] = {}
        self._index = 0
        self._start = now  # when the window started (its first request)
        self._next = now + SLOT_S  # when the second under way ends
        self._started = False  # a step has estimated the rates
        self._burst = burst_for(rps)
        self._pool = self._burst  # credit: copies that may be kept now (starts full, like a bucket)
        self._filled = now  # when the pool was last refilled

    def set_rps(self, rps: float, now: float) -> None:
        """Spend `rps` from now on (the global rate caps the budget, and changes at runtime)."""
        self._refill(now)
        self.rps = rps
        self._burst = burst_for(rps)
        self._pool = min(self._pool, self._burst)
        if self._started:
            rates = [w.rate for w in self._routes.values()]
            self.level = water_level(rates, rps)
            self._slack = max(0.0, rps - sum(rates))

    def _refill(self, now: float) -> float:
        pool = self._pool + (now - self._filled) * self.rps
        self._filled = now
        if pool > self._burst:
            pool = self._burst
        self._pool = pool
        return pool

    def keep(self, route: str, now: float, draw: Callable[[], float]) -> bool:
        """Count one request of `route` and say whether it is copied; `draw()` is in [0, 1)."""
        if now >= self._next:
            self._step(now)
        pool = self._pool + (now - self._filled) * self.rps  # _refill, inlined: this runs per request
        self._filled = now
        if pool > self._burst:
            pool = self._burst
        self._pool = pool
        w = self._routes.get(route)
        if w is None:
            w = self._new(route, now)
        w.current += 1
        rate = w.rate
        if self._started:
            level = self.level
        else:  # no estimate yet: the rate so far (one request is not a rate: at least FIRST_S)
            level = self.rps / len(self._routes)
            rate = w.current / max(now - self._start, FIRST_S)
        if w.current / SLOT_S > rate:  # busier than estimated: as busy as this second says
            if level == math.inf:  # all fitted: the budget left over is what it may take
                level = rate + self._slack
            rate = w.current / SLOT_S
        if rate <= level:  # a rare route: every request, unless the budget is overspent by a burst
            if pool <= -self._burst:
                return False
            self._pool = pool - 1.0
            return True
        # down-sampled: level/rate of the requests, or the credit left unspent (the pool nearly full)
        if pool >= 2.0 and (pool >= self._burst - 1.0 or draw() * rate < level):
            self._pool = pool - 1.0
            return True
        return False

    def keep_probability(self, route: str) -> float:
        """The share of `route`'s requests kept at the current level (for tests and docs)."""
        w = self._routes.get(route)
        if w is None or w.rate <= self.level:
            return 1.0
        return self.level / w.rate

    def _new(self, route: str, now: float) -> _Window:
        if not self._routes:  # the first request, or the first after a whole idle window
            self._start, self._next, self._started = now, now + SLOT_S, False
        if len(self._routes) >= self.max_routes:
            route = OTHER
            got = self._routes.get(route)
            if got is not None:
                return got
        w = self._routes[route] = _Window(self.size)
        return w

    def _step(self, now: float) -> None:
        """Close the seconds that ended: fold each route's count in, re-estimate, re-level."""
        passed = int((now - self._next) / SLOT_S) + 1
        closed = self._next + (passed - 1) * SLOT_S  # when the last whole second ended
        self._next = closed + SLOT_S
        idle = min(passed - 1, self.size)  # whole seconds without a request: zeros
        span = max(FIRST_S, min(self.size * SLOT_S, closed - self._start))  # seconds the window holds
        first = max(FIRST_S, min(SLOT_S, closed - passed * SLOT_S - self._start + SLOT_S))
        gone: list[str] = []
        for name, w in self._routes.items():
            index = (self._index + 1) % self.size
            w.step(index, w.current)
            last = w.current / first  # the second that just ended (shorter if the window began in it)
            for _ in range(idle):
                index = (index + 1) % self.size
                w.step(index, 0)
                last = 0.0
            w.current = 0
            w.rate = max(w.total / span, last)
            if w.total == 0:
                gone.append(name)
        self._index = (self._index + 1 + idle) % self.size
        for name in gone:
            del self._routes[name]
        if not self._routes:  # idle for a whole window: the next request starts it afresh
            self.level, self._slack, self._started = math.inf, self.rps, False
            return
        rates = [w.rate for w in self._routes.values()]
        self.level = water_level(rates, self.rps)
        self._slack = max(0.0, self.rps - sum(rates))
        self._started = True
