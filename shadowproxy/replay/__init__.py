"""Offline replay: diff recorded traffic against a candidate, without a live proxy.

    scan(path) -> InputScan                        format and counts; InputFileError on bad input
    read_entries(path) -> Iterator[Entry]          mitmproxy flow files and HAR 1.2, by content
    await Replayer(ReplayConfig(...), sink, rules).run(entries, total) -> ReplaySummary
    JudgingSink(sink, thresholds).verdict() / gate_fails(level, fail_on)   `--fail-on`, as `report`

The same policy, pipeline, records and stats as the live proxy (jobs are built by
`shadow.jobs`, the one place that turns a request and its live response into a ShadowJob).
"""

from shadowproxy.replay.gate import JudgingSink, RouteVerdict, gate_fails
from shadowproxy.replay.inputs import Entry, InputScan, detect_format, read_entries, scan
from shadowproxy.replay.runner import Pacer, ReplayConfig, Replayer, ReplayStats, ReplaySummary
from shadowproxy.shadow.jobs import build_job, decide, job_of

__all__ = [
    "Entry",
    "InputScan",
    "JudgingSink",
    "Pacer",
    "ReplayConfig",
    "ReplayStats",
    "ReplaySummary",
    "Replayer",
    "RouteVerdict",
    "build_job",
    "decide",
    "detect_format",
    "gate_fails",
    "job_of",
    "read_entries",
    "scan",
]
