"""`shadowproxy run`: the live proxy."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any

import click

from shadowproxy.cli import cli
from shadowproxy.cli.fdlimit import raise_open_files_limit
from shadowproxy.cli.lograte import RepeatFilter
from shadowproxy.cli.params import ADMIN_ADDR, HOST_PORT, HTTP_URL, RATE, SINK_URI
from shadowproxy.cli.siblings import SIBLING_ENV, serve_with_siblings, shared_switch
from shadowproxy.shadow.ledger import PROCESSES_ENV
from shadowproxy.sinks.uri import DEFAULT_SINK

MAX_QUEUE_SIZE = 1_000_000
MAX_CONCURRENCY = 10_000


def setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(RepeatFilter())  # a flood of one error: a line per thousand (cli.lograte)
    ours = logging.getLogger("shadowproxy")
    ours.handlers[:] = [handler]
    ours.setLevel(level)
    ours.propagate = False
    from shadowproxy.sinks.kafka import quiet_aiokafka

    quiet_aiokafka(debug=verbose > 1)
    mitm = logging.getLogger("mitmproxy")
    mitm.addHandler(handler)
    mitm.setLevel(logging.INFO if verbose else logging.WARNING)


@dataclass(frozen=True, slots=True)
class RunFlags:
    """`run`'s flags as click parsed them: one field per option, named as its parameter."""

    listen: tuple[str, int]
    live: str
    shadow: str
    rules: str | None
    sink: str
    queue_size: int
    concurrency: int
    stats_interval: int
    shadow_max_rps: float | None
    max_copy_bytes: int
    max_header_bytes: int
    secondary: str | None
    noise_state: str | None
    dispatch: str | None
    worker_nice: int | None
    reuse_port: int
    ca_file: str | None
    insecure: bool
    admin: tuple[str, int] | None
    admin_token: str | None
    tls_cert: str | None
    tls_key: str | None
    h2c: bool
    upstream_h2c: bool
    egress: tuple[str, int] | None
    egress_live: tuple[str, int] | None
    egress_ca: str | None
    verbose: int


@cli.command("run")
@click.option(
    "--listen",
    type=HOST_PORT,
    required=True,
    envvar="SHADOWPROXY_LISTEN",
    show_envvar=True,
    help="Address clients connect to, e.g. 127.0.0.1:8080.",
)
@click.option(
    "--live",
    type=HTTP_URL,
    required=True,
    envvar="SHADOWPROXY_LIVE",
    show_envvar=True,
    help="Live backend base URL: it answers every client.",
)
@click.option(
    "--shadow",
    type=HTTP_URL,
    required=True,
    envvar="SHADOWPROXY_SHADOW",
    show_envvar=True,
    help="Shadow (candidate) backend base URL: it gets a copy of each eligible request.",
)
@click.option(
    "--rules",
    type=click.Path(dir_okay=False),
    default=None,
    envvar="SHADOWPROXY_RULES",
    show_envvar=True,
    help="Rules file (YAML, version 1). Default: the embedded default (safe methods, full sample).",
)
@click.option(
    "--sink",
    type=SINK_URI,
    default=DEFAULT_SINK,
    envvar="SHADOWPROXY_SINK",
    show_envvar=True,
    show_default=True,
    help="Where records go: jsonl:PATH or kafka://HOST:PORT/TOPIC[?options]. Beside it, a crash "
    "ledger (PATH.ledger; with Kafka SPOOL_DIR/TOPIC.ledger) counts at the next start what a kill left "
    "uncounted; it is locked while the run lasts: one run per sink.",
)
@click.option(
    "--queue-size",
    type=click.IntRange(1, MAX_QUEUE_SIZE),
    default=1000,
    envvar="SHADOWPROXY_QUEUE_SIZE",
    show_default=True,
    help="Copies waiting for the shadow; beyond it a copy is dropped and counted.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, MAX_CONCURRENCY),
    default=64,
    envvar="SHADOWPROXY_CONCURRENCY",
    show_default=True,
    help="Shadow calls in flight at most.",
)
@click.option(
    "--stats-interval",
    type=click.IntRange(0),
    default=10,
    envvar="SHADOWPROXY_STATS_INTERVAL",
    show_default=True,
    help="Seconds between stats records (the report's denominators); 0: at exit only.",
)
@click.option(
    "--shadow-max-rps",
    type=RATE,
    default=None,
    envvar="SHADOWPROXY_SHADOW_MAX_RPS",
    show_envvar=True,
    help="Copies per second sent to the shadow at most, all routes together, for the whole proxy "
    "(with --reuse-port N each process gets 1/N; token bucket, burst max(2, 0.2 s)); more are skipped "
    "and counted rate_limited. A budget in the rules spends at most this. Changed at runtime with "
    "PUT /shadow/rate. Default: no limit (rules may still set max_rps per route).",
)
@click.option(
    "--max-copy-bytes",
    type=click.IntRange(1),
    default=8 * 1024 * 1024,
    envvar="SHADOWPROXY_MAX_COPY_BYTES",
    show_default=True,
    help="A request or response body larger than this is streamed between client and live, never "
    "held in memory, and not mirrored (counted as skipped: too_large); so is a header block over 64 KiB.",
)
@click.option(
    "--max-header-bytes",
    type=click.IntRange(1024, 16 * 1024 * 1024),
    default=64 * 1024,
    envvar="SHADOWPROXY_MAX_HEADER_BYTES",
    show_default=True,
    help="An HTTP/1 request head (request line and headers) larger than this is answered 431 by the "
    "proxy and its connection closed: never forwarded to live nor mirrored (counted as skipped: "
    "header_too_large). So is a chunked request's trailer section over it.",
)
@click.option("--secondary", type=HTTP_URL, default=None, envvar="SHADOWPROXY_SECONDARY",
              show_envvar=True,
              help="A second instance of the live version (Diffy's secondary). Every mirrored read also "
              "goes there, at the same moment as the shadow's copy: the report judges the shadow's "
              "latency against the secondary's (docs/report.md). With noise mode auto or secondary, "
              "live-vs-secondary differences also teach which fields are noise.")
@click.option("--noise-state", type=click.Path(dir_okay=False), default=None,
              envvar="SHADOWPROXY_NOISE_STATE", show_envvar=True,
              help="File that keeps learned noise across restarts; unset: kept in memory.")
@click.option(
    "--dispatch",
    type=click.Choice(["process", "inline"]),
    default=None,
    envvar="SHADOWPROXY_DISPATCH",
    show_envvar=True,
    help="Where shadow calls, diffs and the sink run: process (a worker process, off the "
    "proxy's event loop; the default) or inline (the proxy's event loop).",
)
@click.option(
    "--worker-nice",
    type=click.IntRange(-20, 19),
    default=None,
    envvar="SHADOWPROXY_WORKER_NICE",
    show_envvar=True,
    help="Added to the worker process's nice value (default 0: the proxy's priority; a negative value "
    "puts mirroring ahead of live traffic on a saturated machine and needs root or CAP_SYS_NICE, "
    "else it is ignored).",
)
@click.option(
    "--reuse-port",
    type=click.IntRange(1, 64),
    default=1,
    envvar="SHADOWPROXY_REUSE_PORT",
    show_envvar=True,
    show_default=True,
    help="Run N proxy processes on --listen (SO_REUSEPORT: the kernel spreads connections), each with "
    "its own shadow worker. With a jsonl sink, process i > 0 writes PATH.i; the admin API runs in the "
    "first process (its /metrics counts that process; its kill switch, sample override and rate act "
    "on all N). Rate limits and the budget are for the whole proxy: each process gets 1/N.",
)
@click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    envvar="SHADOWPROXY_CA_FILE",
    help="Extra CA certificates (PEM) trusted for an https live and shadow, on top of the system's.",
)
@click.option(
    "--insecure",
    is_flag=True,
    envvar="SHADOWPROXY_INSECURE",
    help="Do not verify the live's and the shadow's TLS certificates (logged as a warning).",
)
@click.option(
    "--admin",
    type=ADMIN_ADDR,
    default="127.0.0.1:9090",
    envvar="SHADOWPROXY_ADMIN",
    show_envvar=True,
    show_default=True,
    help="Admin API address (/metrics, /healthz, /readyz, kill switch); 'off' disables it.",
)
@click.option(
    "--admin-token",
    default=None,
    envvar="SHADOWPROXY_ADMIN_TOKEN",
    show_envvar=True,
    help="Bearer token for admin calls that change something; required when --admin is not loopback.",
)
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), default=None,
              envvar="SHADOWPROXY_TLS_CERT", show_envvar=True,
              help="Serve HTTPS (HTTP/1.1 and HTTP/2 by ALPN) with this certificate chain (PEM); "
              "needs --tls-key.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), default=None,
              envvar="SHADOWPROXY_TLS_KEY", show_envvar=True, help="The private key (PEM) of --tls-cert.")
@click.option("--h2c", is_flag=True, envvar="SHADOWPROXY_H2C", show_envvar=True,
              help="Also accept plain-text HTTP/2 with prior knowledge (h2c) on --listen.")
@click.option("--upstream-h2c", is_flag=True, envvar="SHADOWPROXY_UPSTREAM_H2C", show_envvar=True,
              help="Speak plain-text HTTP/2 with prior knowledge (h2c) to an http:// live and shadow, "
              "e.g. gRPC servers without TLS.")
@click.option("--egress", type=HOST_PORT, default=None, envvar="SHADOWPROXY_EGRESS", show_envvar=True,
              help="Also serve a forward proxy here for the shadow's outbound calls (start the shadow with "
              "HTTP_PROXY/HTTPS_PROXY pointing at it): the rules' egress: section stubs, replays, blocks or "
              "passes each call; by default safe methods pass and every other call is stubbed, never "
              "executed. Required when a route mirrors writes. See docs/egress.md.")
@click.option("--egress-live", type=HOST_PORT, default=None, envvar="SHADOWPROXY_EGRESS_LIVE",
              show_envvar=True,
              help="A pass-through forward proxy for the live service's outbound calls (executed for real, "
              "recorded); with egress: {correlate_live: true} they are compared with the shadow's.")
@click.option("--egress-ca", type=click.Path(exists=True, dir_okay=False), default=None,
              envvar="SHADOWPROXY_EGRESS_CA", show_envvar=True,
              help="PEM file with a CA certificate and its key: --egress intercepts HTTPS (CONNECT) with "
              "certificates it signs; the shadow must trust it (docs/egress.md).")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
def run_cmd(**flags: Any) -> None:
    """Run the shadow proxy in front of LIVE, mirroring safe requests to SHADOW.

    Clients get exactly what the live backend answers. Each eligible request is copied to the
    shadow in the background; the two responses are diffed and every mismatch, shadow failure or
    oversized body becomes one record in the sink. SIGINT/SIGTERM (to this process or its whole
    process group): stop accepting, finish what is in flight, flush the sink, log one `stopped:`
    line, exit 0.
    """
    f = RunFlags(**flags)
    # SIGINT/SIGTERM before the proxy serves: a clean stop, not a kill (143) or "Aborted!"; this
    # also undoes the SIGINT that a shell's `run &` leaves ignored
    from shadowproxy.proxy.master import StoppedBeforeServing, stop_before_serving

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop_before_serving)
    try:
        _run(f)
    except StoppedBeforeServing as e:
        setup_logging(f.verbose)
        e.log_line()


def _run(f: RunFlags) -> None:
    from shadowproxy.cli.params import load_rules_for
    from shadowproxy.errors import ConfigError
    from shadowproxy.proxy.addon import ShadowAddon
    from shadowproxy.proxy.master import (
        ProxySettings,
        check_listen,
        check_not_self,
        check_tls_files,
        serve,
    )
    from shadowproxy.proxy.options import check_ca_file, check_noise
    from shadowproxy.rules import default_ruleset
    from shadowproxy.sinks.uri import check_sink

    setup_logging(f.verbose)
    before, after = raise_open_files_limit()
    if after != before:
        logging.getLogger("shadowproxy").debug("open files limit raised from %d to %d", before, after)
    # a bad rules file: one line per problem, exit 2
    ruleset = load_rules_for(f.rules) if f.rules else default_ruleset()
    sibling = int(os.environ.get(SIBLING_ENV, "0"))  # > 0: started by the first of --reuse-port N
    sink, noise_state, admin = f.sink, f.noise_state, f.admin
    if sibling and sink.startswith("jsonl:"):
        sink = f"{sink}.{sibling}"  # appends from several processes would interleave inside lines
    if sibling and noise_state:
        noise_state = f"{noise_state}.{sibling}"  # one writer per file; `noise export` merges them
    if sibling:
        admin = None
    else:  # the first process folds in the crash ledgers of siblings this run will not start
        os.environ[PROCESSES_ENV] = str(max(1, f.reuse_port))
    # everything the worker would find wrong later, checked now: one line and exit 2, never a
    # worker that fails to start again and again while live traffic passes unmirrored
    for flag, url in (("--live", f.live), ("--shadow", f.shadow), ("--secondary", f.secondary)):
        if url:
            check_not_self(*f.listen, url, flag)
    check_sink(sink, flag="--sink")
    check_noise(ruleset, f.secondary, noise_state, secondary_flag="--secondary", state_flag="--noise-state")
    if f.ca_file:
        check_ca_file(f.ca_file)
    check_listen(*f.listen, reuse_port=f.reuse_port > 1)
    _check_egress(ruleset, f.listen, f.egress, f.egress_live, f.egress_ca, f.tls_cert, f.reuse_port)
    shadow_options: dict[str, Any] = {
        "shadow_url": f.shadow,
        "shadow_rules": f.rules,
        "shadow_sink": sink,
        "shadow_queue_size": f.queue_size,
        "shadow_concurrency": f.concurrency,
        "shadow_stats_interval": f.stats_interval,
        "shadow_max_copy_bytes": f.max_copy_bytes,
        "shadow_max_header_bytes": f.max_header_bytes,
        "shadow_ca_file": f.ca_file,
        "shadow_insecure": f.insecure,
        "shadow_h2c": f.upstream_h2c,
        "shadow_secondary_url": f.secondary,
        "shadow_noise_state": noise_state,
        "shadow_max_rps": None if f.shadow_max_rps is None else repr(f.shadow_max_rps),
    }
    if f.egress is not None:
        shadow_options["shadow_egress"] = f"{f.egress[0]}:{f.egress[1]}"
    if f.egress_ca is not None:
        shadow_options["shadow_egress_ca"] = f.egress_ca
    if f.egress_live is not None:
        shadow_options["shadow_egress_live"] = f"{f.egress_live[0]}:{f.egress_live[1]}"
    if f.dispatch is not None:
        shadow_options["shadow_dispatch"] = f.dispatch
    if f.worker_nice is not None:
        shadow_options["shadow_worker_nice"] = f.worker_nice
    if (f.tls_cert is None) != (f.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together: give both, or neither for plain HTTP")
    if f.tls_cert and f.tls_key:
        check_tls_files(f.tls_cert, f.tls_key)
    settings = ProxySettings(f.listen[0], f.listen[1], f.live, shadow_options, tls_cert=f.tls_cert,
                             tls_key=f.tls_key, h2c=f.h2c, ca_file=f.ca_file, insecure=f.insecure,
                             reuse_port=f.reuse_port > 1, live_h2c=f.upstream_h2c)
    switch, switch_fd = (shared_switch(sibling, f.reuse_port, f.shadow_max_rps) if f.reuse_port > 1
                         else (None, -1))
    shadow_addon = ShadowAddon(switch=switch)
    extra: tuple[Any, ...] = ()
    if admin is not None:  # its errors come before the `listening` line: nothing has started
        from shadowproxy.admin import AdminAddon
        from shadowproxy.admin.addon import check_admin

        check_admin(admin[0], f.admin_token)
        if _same_address(admin, f.listen):  # each binds alone, so check_listen would pass both
            raise ConfigError(f"--admin {admin[0]}:{admin[1]}: the same address as --listen; give the admin"
                              " API a port of its own (or --admin off)")
        check_listen(*admin, flag="--admin")
        extra = (AdminAddon(shadow_addon, admin[0], admin[1], f.admin_token),)

    def say_listening(port: int) -> None:
        # said once the socket is bound and the shadow worker is up: a client may connect now;
        # the bound port (with --listen HOST:0, the one the system chose)
        logging.getLogger("shadowproxy").info(
            "listening on %s:%d, live %s, shadow %s, rules %s", f.listen[0], port, f.live, f.shadow,
            ruleset.source,
        )

    if f.reuse_port > 1 and not sibling:
        asyncio.run(serve_with_siblings(settings, shadow_addon, extra, f.reuse_port - 1, switch_fd,
                                         say_listening))
    else:
        asyncio.run(serve(settings, shadow_addon, extra_addons=extra, on_listening=say_listening))


def _check_egress(ruleset: Any, listen: tuple[str, int], egress: tuple[str, int] | None,
                  egress_live: tuple[str, int] | None, egress_ca: str | None, tls_cert: str | None,
                  reuse_port: int) -> None:
    """The egress flags, checked before anything starts: one line naming the flag, exit 2."""
    from shadowproxy.errors import ConfigError
    from shadowproxy.proxy.egress import check_egress_ca
    from shadowproxy.proxy.master import check_listen
    from shadowproxy.rules.egress import mirrors_writes

    if egress is None:
        if mirrors_writes(ruleset.rules):
            raise ConfigError(f"--rules {ruleset.source}: a route mirrors writes as is; the shadow never "
                              "gets a write without egress protection: give --egress HOST:PORT")
        for flag, value in (("--egress-live", egress_live), ("--egress-ca", egress_ca)):
            if value is not None:
                raise ConfigError(f"{flag} needs --egress HOST:PORT (the shadow's egress listener)")
        return
    if reuse_port > 1:
        raise ConfigError("--egress with --reuse-port: not supported (one egress listener per proxy)")
    if egress_ca and tls_cert:
        raise ConfigError("--egress-ca with --tls-cert: not supported yet (the listener's certificate would "
                          "be shown to the shadow's HTTPS calls too)")
    taken = [("--listen", listen)]
    for flag, addr in (("--egress", egress), ("--egress-live", egress_live)):
        if addr is None:
            continue
        for other_flag, other in taken:
            if _same_address(addr, other):
                raise ConfigError(f"{flag} {addr[0]}:{addr[1]}: the same address as {other_flag}")
        check_listen(*addr, flag=flag)
        taken.append((flag, addr))
    if egress_ca:
        check_egress_ca(egress_ca)


def _same_address(a: tuple[str, int], b: tuple[str, int]) -> bool:
    """Whether two listeners would want the same port on an overlapping address (a wildcard
    address overlaps every other; port 0 is a fresh port each time)."""
    wildcard = ("0.0.0.0", "::", "")
    return a[1] == b[1] != 0 and (a[0] == b[0] or a[0] in wildcard or b[0] in wildcard)
