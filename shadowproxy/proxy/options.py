"""The shadow addon's mitmproxy options: declared once, parsed once into a typed `ShadowConfig`.

`shadowproxy run` sets these options from its flags (cli/run.py); `mitmdump -s addons/shadow.py`
takes them from `--set`. `ShadowAddon.load` declares them with `declare_options`, and its
`configure` turns them into a `ShadowConfig` with `parse_options`: the pipeline's part a
`PipelineConfig` (shadow.config; `pipeline_config_of` is its one mapping from options), the rest
what only the proxy uses. A bad value is one line naming the option (mitmproxy's OptionsError).
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from mitmproxy import exceptions
from mitmproxy.proxy import mode_specs

from shadowproxy.errors import ConfigError, ShadowProxyError
from shadowproxy.proxy import headlimit
from shadowproxy.rules.egress import mirrors_writes
from shadowproxy.rules.ruleset import RuleSet
from shadowproxy.shadow.channel import DEFAULT_WORKER_NICE
from shadowproxy.shadow.client import ClientConfig
from shadowproxy.shadow.config import PipelineConfig
from shadowproxy.shadow.dispatch import DispatchConfig
from shadowproxy.shadow.egress import egress_mode
from shadowproxy.sinks.uri import DEFAULT_SINK, check_sink

log = logging.getLogger("shadowproxy")

DEFAULT_MAX_COPY_BYTES = 8 * 1024 * 1024
DISPATCH_MODES = ["process", "inline"]
DISPATCH_DEFAULT = "process"  # bench/README.md: the numbers behind this choice

# mitmproxy 11 checks option types with typing.Optional, not `str | None`.
OptStr = Optional[str]  # noqa: UP045


@dataclass(frozen=True, slots=True)
class ShadowConfig:
    """The addon's options, parsed once in configure()."""

    pipeline: PipelineConfig | None  # None: no shadow_url, mirroring is off
    rules: RuleSet
    dispatch: DispatchConfig
    dispatch_mode: str = DISPATCH_DEFAULT
    worker_nice: int = DEFAULT_WORKER_NICE
    keep_host_header: bool = False  # mitmproxy's option: the live gets the client's Host
    max_copy_bytes: int = DEFAULT_MAX_COPY_BYTES


def options_error(msg: str) -> Exception:
    err: Exception = exceptions.OptionsError(msg)
    return err


def parse_rate(value: str | None, name: str = "shadow_max_rps") -> float | None:
    """A copies-per-second limit: a number above 0 (a string, as `--set` gives it); None or "" unset."""
    if value is None or value.strip() == "":
        return None
    try:
        rate = float(value)
    except ValueError:
        rate = float("nan")
    if not 0 < rate < float("inf"):
        raise ConfigError(f"{name} {value!r}: must be a number of copies per second above 0")
    return rate


def check_ca_file(path: str, flag: str = "--ca-file") -> None:
    """Fail with one clear line when `path` holds no PEM CA certificate."""
    try:
        ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as e:
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e)
        msg = f"{flag} {path}: not a PEM file of CA certificates ({reason})"
        raise ConfigError(msg) from None


def load_rules_option(path: str | None) -> RuleSet:
    from shadowproxy.rules import default_ruleset, load_rules

    return load_rules(path) if path else default_ruleset()


def check_noise(rules: RuleSet, secondary: str | None, state: str | None, *,
                secondary_flag: str = "shadow_secondary_url", state_flag: str = "shadow_noise_state") -> None:
    """Noise options that cannot work, as one clear error before anything starts."""
    from shadowproxy.shadow.pipeline import load_noise_state

    if secondary is not None and not secondary.startswith(("http://", "https://")):
        raise ConfigError(f"{secondary_flag} {secondary!r}: must be an http:// or https:// URL")
    modes = {(r.settings.name or "defaults"): r.settings.noise.mode for r in rules.routes}
    modes["defaults"] = rules.defaults.noise.mode
    wants = sorted(name for name, mode in modes.items() if mode == "secondary")
    if wants and secondary is None:
        raise ConfigError(f"noise mode 'secondary' ({', '.join(wants)}) needs a secondary: "
                          "give --secondary URL (shadow_secondary_url)")
    if secondary is not None and set(modes.values()) == {"off"}:
        log.info("a secondary is given and noise is off for every route: reads go there for the "
                 "latency check only (noise.mode: auto in the rules also learns noise from it)")
    if state is not None:
        if not Path(state).parent.is_dir():
            raise ConfigError(f"{state_flag} {state!r}: its directory does not exist")
        load_noise_state(state)  # a file that is not a noise state fails here, not in the worker


def declare_options(loader: Any) -> None:
    """The shadow_* options, for `ShadowAddon.load`."""
    loader.add_option("shadow_url", OptStr, None, "Shadow (candidate) base URL; unset: mirroring off.")
    loader.add_option("shadow_rules", OptStr, None, "Rules file (YAML); unset: the embedded default.")
    loader.add_option("shadow_sink", str, DEFAULT_SINK,
                      "Where records go: jsonl:PATH or kafka://HOST:PORT/TOPIC.")
    loader.add_option("shadow_queue_size", int, 1000,
                      "Copies waiting for the shadow; beyond it, dropped and counted.")
    loader.add_option("shadow_concurrency", int, 64, "Shadow calls in flight at most.")
    loader.add_option("shadow_stats_interval", int, 10, "Seconds between stats records; 0: only at exit.")
    loader.add_option("shadow_dispatch", str, DISPATCH_DEFAULT,
                      "Where shadow calls, diffs and the sink run: process (a worker process, "
                      "off the proxy's event loop) or inline (this event loop). An injected or "
                      "memory: sink is always inline.", choices=DISPATCH_MODES)
    loader.add_option("shadow_worker_nice", int, DEFAULT_WORKER_NICE,
                      "Added to the worker process's nice value (default 0); negative (needs root "
                      "or CAP_SYS_NICE) puts mirroring ahead of live traffic on a saturated machine.")
    loader.add_option("shadow_max_rps", OptStr, None,
                      "Copies per second sent to the shadow at most, all routes together (a number "
                      "above 0, e.g. 20 or 0.5; a token bucket with a burst of max(2, 0.2 s x rate)); "
                      "more are skipped and counted rate_limited. Unset: no global limit. The admin API "
                      "changes it at runtime (PUT /shadow/rate).")
    loader.add_option("shadow_ca_file", OptStr, None, "Extra CA bundle to verify an https shadow.")
    loader.add_option("shadow_insecure", bool, False, "Do not verify the shadow's TLS certificate.")
    loader.add_option("shadow_h2c", bool, False,
                      "An http:// shadow speaks HTTP/2 with prior knowledge (h2c), e.g. a plain-text "
                      "gRPC server.")
    loader.add_option("shadow_secondary_url", OptStr, None,
                      "A second instance of the live version (Diffy's secondary): every mirrored "
                      "read also goes there, with the shadow's copy, and the report judges the "
                      "shadow's latency against it; with noise mode auto or secondary, "
                      "live-vs-secondary differences also teach which fields are noise.")
    loader.add_option("shadow_noise_state", OptStr, None,
                      "File that keeps learned noise across restarts (JSON, written atomically "
                      "with each stats record, every 30 s and at stop); unset: kept in memory.")
    loader.add_option("shadow_max_copy_bytes", int, DEFAULT_MAX_COPY_BYTES,
                      "A request or response body larger than this is streamed between client and "
                      "live (never held in memory) and not mirrored: counted as skipped (too_large). "
                      "So is a header block over 64 KiB.")
    loader.add_option(headlimit.OPTION, int, headlimit.DEFAULT_MAX_HEADER_BYTES,
                      "A request head (request line and headers, HTTP/1) larger than this is "
                      "answered 431 by the proxy, never forwarded nor mirrored, and counted "
                      "(skipped: header_too_large); so is a chunked request's trailer section over "
                      "it. mitmproxy alone buffers heads of any size.")


def pipeline_config_of(o: Any) -> PipelineConfig | None:
    """The pipeline the options describe (None: no shadow_url); values checked by `parse_options`."""
    if o.shadow_url is None:
        return None
    return PipelineConfig(
        shadow_url=o.shadow_url,
        sink_uri=o.shadow_sink,
        client=ClientConfig(o.shadow_concurrency, o.shadow_ca_file, o.shadow_insecure, o.shadow_h2c),
        secondary_url=o.shadow_secondary_url,
        noise_state=o.shadow_noise_state,
        egress=egress_mode(getattr(o, "shadow_egress", None), getattr(o, "shadow_egress_live", None)),
        live_url=live_url_of(o),
    )


def live_url_of(o: Any) -> str | None:
    """The first reverse mode's backend URL (the live backend); None without one."""
    for spec in getattr(o, "mode", None) or ():
        try:
            mode = mode_specs.ProxyMode.parse(spec)
        except ValueError:
            continue
        if isinstance(mode, mode_specs.ReverseMode):
            host, port = mode.address
            return f"{mode.scheme}://{f'[{host}]' if ':' in host else host}:{port}"
    return None


def parse_options(o: Any, *, sink_injected: bool = False) -> tuple[ShadowConfig, float | None]:
    """Check the shadow_* options and parse them: the config, and shadow_max_rps as a number.

    Raises mitmproxy's OptionsError, one line naming the option. `sink_injected`: the addon was
    given a sink object, so shadow_sink is not opened."""
    try:
        if o.shadow_url is not None and not o.shadow_url.startswith(("http://", "https://")):
            raise options_error(f"shadow_url {o.shadow_url!r}: must be an http:// or https:// URL")
        if not 1 <= o.shadow_queue_size <= 1_000_000 or not 1 <= o.shadow_concurrency <= 10_000:
            raise options_error("shadow_queue_size must be 1 to 1000000, shadow_concurrency 1 to 10000")
        if o.shadow_max_copy_bytes < 1:
            raise options_error("shadow_max_copy_bytes must be at least 1")
        if not 1024 <= o.shadow_max_header_bytes <= 16 * 1024 * 1024:
            raise options_error("shadow_max_header_bytes must be 1024 to 16777216")
        if not sink_injected:  # the sink the worker will open: can it? (one line, now)
            check_sink(o.shadow_sink, flag="shadow_sink")
        if o.shadow_ca_file:
            check_ca_file(o.shadow_ca_file, flag="shadow_ca_file")
        max_rps = parse_rate(o.shadow_max_rps)
        rules = load_rules_option(o.shadow_rules)
        check_noise(rules, o.shadow_secondary_url, o.shadow_noise_state)
        if mirrors_writes(rules.rules) and not getattr(o, "shadow_egress", None):
            raise ConfigError(f"{rules.source}: a route mirrors writes as is; the shadow never gets a "
                              "write without egress protection: give --egress HOST:PORT (shadow_egress)")
    except ShadowProxyError as e:
        raise options_error(str(e)) from e
    if o.shadow_insecure:
        log.warning("shadow_insecure: the shadow's TLS certificate is NOT verified")
    config = ShadowConfig(
        pipeline=pipeline_config_of(o),
        rules=rules,
        dispatch=DispatchConfig(o.shadow_queue_size, o.shadow_concurrency, float(o.shadow_stats_interval)),
        dispatch_mode=o.shadow_dispatch,
        worker_nice=o.shadow_worker_nice,
        keep_host_header=bool(getattr(o, "keep_host_header", False)),
        max_copy_bytes=o.shadow_max_copy_bytes,
    )
    return config, max_rps
