"""`shadowproxy run`: the live proxy."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import subprocess
import sys
from typing import Any

import click

from shadowproxy.cli import cli
from shadowproxy.cli.params import ADMIN_ADDR, HOST_PORT, HTTP_URL, SINK_URI
from shadowproxy.sinks.uri import DEFAULT_SINK


def setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    ours = logging.getLogger("shadowproxy")
    ours.handlers[:] = [handler]
    ours.setLevel(level)
    ours.propagate = False
    mitm = logging.getLogger("mitmproxy")
    mitm.addHandler(handler)
    mitm.setLevel(logging.INFO if verbose else logging.WARNING)


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
    help="Where records go: jsonl:PATH or kafka://HOST:PORT/TOPIC[?options].",
)
@click.option(
    "--queue-size",
    type=click.IntRange(1),
    default=1000,
    envvar="SHADOWPROXY_QUEUE_SIZE",
    show_default=True,
    help="Copies waiting for the shadow; beyond it a copy is dropped and counted.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1),
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
@click.option("--secondary", type=HTTP_URL, default=None, envvar="SHADOWPROXY_SECONDARY",
              show_envvar=True,
              help="A second instance of the live version (Diffy's secondary): with noise mode auto or "
              "secondary, reads also go there and live-vs-secondary differences teach which fields are "
              "noise.")
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
    help="Added to the worker process's nice value (default -5: ahead of the proxy, so mirroring keeps "
    "up on a saturated machine; needs root or CAP_SYS_NICE, else ignored).",
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
    "first process only (its /metrics counts that process).",
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
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
def run_cmd(
    listen: tuple[str, int],
    live: str,
    shadow: str,
    rules: str | None,
    sink: str,
    queue_size: int,
    concurrency: int,
    stats_interval: int,
    secondary: str | None,
    noise_state: str | None,
    dispatch: str | None,
    worker_nice: int | None,
    reuse_port: int,
    ca_file: str | None,
    insecure: bool,
    admin: tuple[str, int] | None,
    admin_token: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    h2c: bool,
    upstream_h2c: bool,
    verbose: int,
) -> None:
    """Run the shadow proxy in front of LIVE, mirroring safe requests to SHADOW.

    Clients get exactly what the live backend answers. Each eligible request is copied to the
    shadow in the background; the two responses are diffed and every mismatch, shadow failure or
    oversized body becomes one record in the sink. SIGINT/SIGTERM: stop accepting, finish what is
    in flight, flush the sink, exit 0.
    """
    from shadowproxy.errors import ConfigError
    from shadowproxy.proxy.addon import ShadowAddon
    from shadowproxy.proxy.master import ProxySettings, check_listen, check_tls_files, serve
    from shadowproxy.rules import default_ruleset, load_rules

    setup_logging(verbose)
    ruleset = load_rules(rules) if rules else default_ruleset()  # a bad file: one line per problem, exit 2
    sibling = int(os.environ.get(SIBLING_ENV, "0"))  # > 0: started by the first of --reuse-port N
    if sibling and sink.startswith("jsonl:"):
        sink = f"{sink}.{sibling}"  # appends from several processes would interleave inside lines
    if sibling and noise_state:
        noise_state = f"{noise_state}.{sibling}"  # one writer per file; `noise export` merges them
    if sibling:
        admin = None
    check_listen(*listen, reuse_port=reuse_port > 1)
    shadow_options: dict[str, Any] = {
        "shadow_url": shadow,
        "shadow_rules": rules,
        "shadow_sink": sink,
        "shadow_queue_size": queue_size,
        "shadow_concurrency": concurrency,
        "shadow_stats_interval": stats_interval,
        "shadow_ca_file": ca_file,
        "shadow_insecure": insecure,
        "shadow_h2c": upstream_h2c,
        "shadow_secondary_url": secondary,
        "shadow_noise_state": noise_state,
    }
    if dispatch is not None:
        shadow_options["shadow_dispatch"] = dispatch
    if worker_nice is not None:
        shadow_options["shadow_worker_nice"] = worker_nice
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together: give both, or neither for plain HTTP")
    if tls_cert and tls_key:
        check_tls_files(tls_cert, tls_key)
    settings = ProxySettings(listen[0], listen[1], live, shadow_options, tls_cert=tls_cert, tls_key=tls_key,
                             h2c=h2c, ca_file=ca_file, insecure=insecure, reuse_port=reuse_port > 1,
                             live_h2c=upstream_h2c)
    logging.getLogger("shadowproxy").info(
        "listening on %s:%d, live %s, shadow %s, rules %s", listen[0], listen[1], live, shadow, ruleset.source
    )
    shadow_addon = ShadowAddon()
    extra: tuple[Any, ...] = ()
    if admin is not None:
        from shadowproxy.admin import AdminAddon
        from shadowproxy.admin.addon import check_admin

        check_admin(admin[0], admin_token)
        check_listen(*admin, flag="--admin")
        extra = (AdminAddon(shadow_addon, admin[0], admin[1], admin_token),)
    if reuse_port > 1 and not sibling:
        asyncio.run(_serve_with_siblings(settings, shadow_addon, extra, reuse_port - 1))
    else:
        asyncio.run(serve(settings, shadow_addon, extra_addons=extra))


SIBLING_ENV = "SHADOWPROXY_REUSE_PORT_SIBLING"


def _spawn_siblings(n: int) -> list[subprocess.Popen[bytes]]:
    """The same command in n more processes; each dies with this one (PR_SET_PDEATHSIG)."""

    def die_with_parent() -> None:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    cmd = [sys.executable, "-c", "from shadowproxy.cli import main; main()", *sys.argv[1:]]
    return [
        subprocess.Popen(cmd, env={**os.environ, SIBLING_ENV: str(i)}, preexec_fn=die_with_parent)
        for i in range(1, n + 1)
    ]


async def _serve_with_siblings(settings: Any, addon: Any, extra: tuple[Any, ...], n: int) -> None:
    """Serve here and in n sibling processes; SIGTERM here reaches them, and they end with us."""
    from shadowproxy.proxy.master import request_stop, serve

    siblings = _spawn_siblings(n)
    loop = asyncio.get_running_loop()
    started: asyncio.Future[Any] = loop.create_future()
    task = asyncio.ensure_future(serve(settings, addon, extra_addons=extra, started=started))

    def on_term() -> None:
        for p in siblings:
            p.send_signal(signal.SIGTERM)
        request_stop(started.result(), addon)

    try:
        await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
        if started.done():
            loop.add_signal_handler(signal.SIGTERM, on_term)  # replaces serve's: forward, then stop
        await task
    finally:
        for p in siblings:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in siblings:
            await loop.run_in_executor(None, _reap, p)


def _reap(p: subprocess.Popen[bytes]) -> None:
    try:
        p.wait(60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
