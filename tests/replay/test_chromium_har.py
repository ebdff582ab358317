"""A HAR recorded by a real browser (Debian's chromium via Playwright's `record_har_path`) of a
small local site with reloads and cached assets, replayed with `shadowproxy replay`.

Chromium records what the page saw, not what went over the wire: cache hits (`_transferSize:
0`, no wait) that never reached the server, and revalidations recorded as the 200 it served
from its cache while the request carries `If-None-Match`/`If-Modified-Since`. Replayed against
an identical shadow: nothing mismatches, only what was on the wire is sent. Against a shadow
whose one JSON field changed: exactly the entries of that resource mismatch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner

from shadowproxy.cli import cli
from shadowproxy.cli import replay as _replay_cli  # noqa: F401  (registers `replay` on cli)
from shadowproxy.testing import Backend
from tests.kit import read_records
from tests.report.browser import launch_kwargs

DATA = {"name": "Ada", "version": 1, "items": [1, 2, 3]}
# no-cache: revalidated on every load; max-age: served from the browser's cache on reloads
CACHE = {".html": "no-cache", ".css": "no-cache", ".json": "no-cache", ".js": "max-age=3600",
         ".svg": "max-age=3600"}
RELOADS = 3


def write_site(root: Path) -> None:
    (root / "api").mkdir(parents=True)
    (root / "index.html").write_text(
        '<!doctype html><html><head><link rel="stylesheet" href="/style.css">'
        '<script src="/app.js"></script></head><body><img src="/logo.svg"><p id="out"></p></body></html>')
    (root / "app.js").write_text(
        'fetch("/api/data.json").then(r => r.json())'
        '.then(d => { document.getElementById("out").textContent = d.name; });'
        'fetch("/api/user.json?id=7");')  # an answer the page never reads: Chromium keeps no body
    (root / "style.css").write_text("body { color: #333; }")
    (root / "logo.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="8" height="8"/></svg>')
    (root / "api" / "data.json").write_text(json.dumps(DATA))
    (root / "api" / "user.json").write_text(json.dumps({"id": 7, "name": "Ada"}))


def site(root: Path, data_root: Path | None = None) -> Backend:
    """Static files with ETag and Last-Modified (aiohttp's FileResponse answers conditional
    requests with 304); /api/data.json from `data_root` when given."""

    async def handler(request: web.Request) -> web.StreamResponse:
        rel = request.path.lstrip("/") or "index.html"
        base = data_root if data_root is not None and rel == "api/data.json" else root
        path = base / rel
        if not path.is_file():
            return web.Response(status=404)
        cache = "no-store" if path.name == "user.json" else CACHE[path.suffix]
        return web.FileResponse(path, headers={"Cache-Control": cache})

    return Backend(handler)


@dataclass
class Recorded:
    har: Path
    root: Path
    on_wire: int  # requests the site saw for entries the HAR holds


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    from playwright.sync_api import sync_playwright

    tmp = tmp_path_factory.mktemp("chromium-har")
    root = tmp / "site"
    write_site(root)
    har = tmp / "site.har"
    with site(root) as live, sync_playwright() as pw:
        browser = pw.chromium.launch(**launch_kwargs())
        try:
            context = browser.new_context(record_har_path=str(har))
            page = context.new_page()
            # not "networkidle": the answer the page never reads stays open until the reload
            # cuts it (net::ERR_ABORTED), as a real page's unread fetch does
            page.goto(f"{live.url}/", wait_until="load")
            for i in range(RELOADS + 1):
                page.wait_for_function('document.getElementById("out").textContent === "Ada"')
                page.wait_for_timeout(300)
                if i < RELOADS:
                    page.reload(wait_until="load")
            context.close()  # writes the HAR
        finally:
            browser.close()
        on_wire = sum(1 for s in live.seen if s.path != "/favicon.ico")  # a HAR leaves favicons out
    yield Recorded(har, root, on_wire)


def har_entries(path: Path) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(path.read_text())["log"]["entries"]
    return entries


def replay(recorded: Recorded, shadow: Backend, out: Path) -> tuple[list[str], list[dict[str, Any]]]:
    result = CliRunner().invoke(cli, ["replay", str(recorded.har), "--shadow", shadow.url,
                                      "--sink", f"jsonl:{out}", "--no-progress"])
    assert result.exit_code in (0, 1), result.output
    return result.stdout.splitlines(), read_records(out)


def line(lines: list[str], label: str) -> str:
    return next(x for x in lines if x.strip().startswith(label)).split(None, len(label.split()))[-1]


def test_the_recording_holds_cache_hits_and_revalidations_recorded_as_200(recorded: Recorded) -> None:
    entries = har_entries(recorded.har)
    cache_hits = [e for e in entries if e["response"].get("_transferSize") == 0]
    conditional_200 = [e for e in entries if e["response"]["status"] == 200 and any(
        h["name"].lower() == "if-none-match" for h in e["request"]["headers"])]
    assert len(cache_hits) == 2 * RELOADS  # app.js and logo.svg on each reload
    assert len(conditional_200) == 2 * RELOADS  # the page and data.json: 304 on the wire
    assert len(entries) - len(cache_hits) == recorded.on_wire
    unread = [e for e in entries if e["request"]["url"].endswith("/api/user.json?id=7")]
    assert len(unread) == RELOADS + 1
    assert all(e["response"]["content"]["size"] == -1 and "text" not in e["response"]["content"]
               for e in unread), [e["response"] for e in unread]


def test_replay_against_an_identical_shadow_gives_no_mismatch_and_sends_only_what_was_on_the_wire(
    recorded: Recorded, tmp_path: Path
) -> None:
    same_root = tmp_path / "same"
    write_site(same_root)
    # the same files, byte for byte and by date: the validators (ETag, Last-Modified) agree
    for src in recorded.root.rglob("*"):
        if src.is_file():
            dst = same_root / src.relative_to(recorded.root)
            dst.write_bytes(src.read_bytes())
            st = src.stat()
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    with site(same_root) as shadow:
        lines, records = replay(recorded, shadow, tmp_path / "o.jsonl")
        sent = len(shadow.seen)
    print("\n".join(lines))
    assert [r for r in records if r["outcome"] != "stats"] == []
    assert line(lines, "mismatched") == "0"
    assert int(line(lines, "replayed")) == sent == recorded.on_wire
    assert line(lines, "skipped").startswith(f"{2 * RELOADS}  (not_on_wire: {2 * RELOADS})")
    # revalidations (the page, data.json on each reload) and the unread user.json answers, whose
    # body the recording does not hold: compared on status and headers only
    assert line(lines, "adjusted") == (
        f"{3 * RELOADS + 1}  (bodies not recorded: status and headers compared: {RELOADS + 1}; "
        f"recorded revalidations: a shadow 304 judged against the recorded validators: {2 * RELOADS})")


def test_replay_against_a_shadow_with_one_changed_json_field_mismatches_exactly_its_entries(
    recorded: Recorded, tmp_path: Path
) -> None:
    changed = tmp_path / "changed"
    (changed / "api").mkdir(parents=True)
    (changed / "api" / "data.json").write_text(json.dumps({**DATA, "name": "Grace"}))
    with site(recorded.root, data_root=changed) as shadow:
        lines, records = replay(recorded, shadow, tmp_path / "o.jsonl")
    mismatches = [r for r in records if r["outcome"] != "stats"]
    data_entries = [e for e in har_entries(recorded.har) if e["request"]["url"].endswith("/api/data.json")]
    assert [r["path"] for r in mismatches] == ["/api/data.json"] * len(data_entries)
    for r in mismatches:
        assert {"body:/name"} <= {f"{d['part']}:{d['path']}" for d in r["differences"]}
    assert line(lines, "mismatched") == str(len(data_entries))
