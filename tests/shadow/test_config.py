"""One typed pipeline config and one factory: what the addon parses, the worker is sent and
replay holds is the same `PipelineConfig`, and `build_pipeline` builds every host's pipeline."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest
from mitmproxy.test import taddons

from shadowproxy.engine.stats import Stats
from shadowproxy.proxy.addon import ShadowAddon
from shadowproxy.shadow.channel import WorkerConfig
from shadowproxy.shadow.client import ClientConfig, ShadowClient
from shadowproxy.shadow.config import PipelineConfig, build_pipeline
from shadowproxy.shadow.dispatch import DispatchConfig
from shadowproxy.sinks.jsonl import JsonlSink
from shadowproxy.testing import MemorySink


async def test_every_pipeline_option_of_the_addon_lands_in_its_pipeline_config(tmp_path: Path) -> None:
    """A pipeline field no option fills would silently keep its default in `run`."""
    addon = ShadowAddon()
    sink = f"jsonl:{tmp_path / 'r.jsonl'}"
    with taddons.context(addon) as tctx:
        tctx.configure(addon, shadow_url="http://127.0.0.1:9", shadow_sink=sink, shadow_concurrency=7,
                       shadow_insecure=True, shadow_h2c=True, shadow_secondary_url="http://127.0.0.1:8",
                       shadow_noise_state=str(tmp_path / "noise.json"), shadow_egress="127.0.0.1:7",
                       shadow_egress_live="127.0.0.1:6", mode=["reverse:http://127.0.0.1:5@127.0.0.1:0"])
        assert addon.config is not None
        expected = PipelineConfig("http://127.0.0.1:9", sink, ClientConfig(7, None, True, True),
                                  "http://127.0.0.1:8", str(tmp_path / "noise.json"), egress="live",
                                  live_url="http://127.0.0.1:5")  # the reverse mode's backend
        assert addon.config.pipeline == expected
        # every field but the compare bound (no option: its default everywhere) differs from its default
        defaults = PipelineConfig("http://127.0.0.1:9")
        same = {f.name for f in dataclasses.fields(PipelineConfig)
                if getattr(expected, f.name) == getattr(defaults, f.name)}
        assert same == {"shadow_url", "max_pending_compares"}
        tctx.configure(addon, shadow_url=None)
        assert addon.config.pipeline is None  # mirroring off


async def test_the_worker_config_carries_the_whole_pipeline_config_across_a_pickle() -> None:
    pipeline = PipelineConfig("http://127.0.0.1:9", "jsonl:/tmp/x.jsonl", ClientConfig(3, None, True),
                              "http://127.0.0.1:8", "/tmp/n.json", max_pending_compares=5)
    cfg = WorkerConfig(pipeline, DispatchConfig(stats_interval=0), nice=0)
    assert pickle.loads(pickle.dumps(cfg)) == cfg


async def test_build_pipeline_opens_the_configured_sink_or_takes_the_one_it_is_given(tmp_path: Path) -> None:
    cfg = PipelineConfig("http://127.0.0.1:9", f"jsonl:{tmp_path / 'r.jsonl'}",
                         secondary_url="http://127.0.0.1:8", max_pending_compares=3)
    opened = build_pipeline(cfg, Stats())
    assert isinstance(opened.sink, JsonlSink)
    assert isinstance(opened.client, ShadowClient) and opened.client.base_url == "http://127.0.0.1:9"
    assert opened.secondary is not None and opened.secondary.cfg is opened.client.cfg
    assert opened._compare_slots == 3  # the compare bound
    await opened.close()
    given, client = MemorySink(), ShadowClient("http://127.0.0.1:7")
    built = build_pipeline(cfg, Stats(), sink=given, client=client)
    assert built.sink is given and built.client is client
    await built.close()


@pytest.mark.parametrize(
    ("modes", "url"),
    [
        (["reverse:http://127.0.0.1:8001@127.0.0.1:8080"], "http://127.0.0.1:8001"),
        (["reverse:https://[::1]:8443/"], "https://[::1]:8443"),
        # an egress listener first
        (["regular@127.0.0.1:7000", "reverse:http://localhost:81"], "http://localhost:81"),
        (["regular"], None),
        ([], None),
    ],
)
def test_the_live_url_is_the_first_reverse_modes_backend(modes: list[str], url: str | None) -> None:
    from types import SimpleNamespace

    from shadowproxy.proxy.options import live_url_of

    assert live_url_of(SimpleNamespace(mode=modes)) == url
