"""The open-files limit raised to what the system allows, once, at `run`'s start.

Why: every client connection, its live connection and each shadow connection hold a file
descriptor. Linux starts processes with a soft limit of 1024 even where the hard limit is far
higher; an outside attack opened 1,100 idle connections and live traffic then got no answer at
all for 60 s (mitmproxy could not accept). nginx (`worker_rlimit_nofile`), Envoy and most servers
raise the soft limit to the hard one; so does `run` (the worker inherits it). Idle connections
are still closed only by mitmproxy's own 10-minute timeout: see docs/reliability.md.
"""

from __future__ import annotations

import resource

CAP = 1 << 20  # an "unlimited" hard limit is capped here (select() is never used)


def raise_open_files_limit() -> tuple[int, int]:
    """Set the soft RLIMIT_NOFILE to the hard one (capped); returns (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = CAP if hard == resource.RLIM_INFINITY else min(hard, CAP)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft, soft
        return soft, target
    return soft, soft
