"""Benchmark backends: nginx on loopback serving fixed JSON bodies, as live and as shadows.

One nginx (one worker process, so it leaves the cores to the proxy) with five servers:

    live          the bodies as they are
    shadow-equal  the same files: byte-identical answers (the diff's fast path)
    shadow-diff   the same bodies with ONE differing field (`/items/3/price`), same length
    shadow-diff-deep  likewise at `/items/40/price` (20 KB body; the 2 KB one's last item): past
                  the first ~2 KB, which a mismatch record's excerpts show
    shadow-slow   shadow-equal's bodies after `echo_sleep` (nginx's echo module, in Debian's
                  nginx-light): a timer, not a busy backend, so "slow" costs no CPU

"Shadow down" is a port nobody listens on. Every body is served with `etag off` and the
same mtime, so live and shadow headers agree except for what the rules ignore (date).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")
FIXED_MTIME = 1_700_000_000  # same Last-Modified on live and shadow files
PATHS = {"2k": "/api/v1/items/summary", "20k": "/api/v1/items"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ensure_tools() -> None:
    """apt-get install nginx-light and wrk when missing (root, Debian/Ubuntu)."""
    missing = [pkg for pkg, exe in (("nginx-light", "nginx"), ("wrk", "wrk")) if shutil.which(exe) is None]
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def _item(i: int) -> dict[str, object]:
    return {
        "id": 100_000 + i,
        "sku": f"SKU-{i:06d}",
        "name": f"Item number {i} with a realistic product name",
        "price": round(9.99 + i * 1.25, 2),
        "currency": "EUR",
        "in_stock": i % 3 != 0,
        "tags": ["catalog", f"cat-{i % 7}", f"brand-{i % 11}"],
        "owner": {"id": 7000 + i % 13, "name": f"Seller {i % 13}", "rating": 4.5},
        "dimensions": {"w": 10 + i % 5, "h": 20 + i % 3, "d": 5, "unit": "cm"},
        "updated_at": f"2024-05-{1 + i % 28:02d}T12:{i % 60:02d}:00Z",
    }


def make_body(target_bytes: int) -> dict[str, object]:
    """A catalog page: an object with an `items` array of dicts, about `target_bytes` as JSON."""
    items: list[dict[str, object]] = []
    doc: dict[str, object] = {"page": 1, "per_page": 0, "total": 0, "items": items,
                              "updated_at": "2024-05-30T08:00:00Z"}
    while len(json.dumps(doc).encode()) < target_bytes:
        items.append(_item(len(items)))
        doc["per_page"] = doc["total"] = len(items)
    return doc


DEEP_ITEM = 40  # shadow-diff-deep's differing item: past a record's excerpt window (~2 KB)


def with_one_difference(doc: dict[str, object], item_index: int = 3) -> dict[str, object]:
    """The same document with `/items/N/price` changed (N = 3, or the last item when fewer),
    same encoded length."""
    out: dict[str, Any] = json.loads(json.dumps(doc))
    item = out["items"][min(item_index, len(out["items"]) - 1)]
    item["price"] = round(item["price"] + 1.0, 2)
    return out


def write_bodies(root: Path) -> dict[str, Path]:
    """Write live and diff variants of the 2 KB and 20 KB bodies; returns {name: dir}."""
    dirs = {"equal": root / "equal", "diff": root / "diff", "diff_deep": root / "diff_deep"}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    for size, nbytes in (("2k", 2048), ("20k", 20480)):
        doc = make_body(nbytes)
        for variant, body in (("equal", doc), ("diff", with_one_difference(doc)),
                              ("diff_deep", with_one_difference(doc, DEEP_ITEM))):
            path = dirs[variant] / f"items-{size}.json"
            path.write_bytes(json.dumps(body, separators=(", ", ": ")).encode())
            os.utime(path, (FIXED_MTIME, FIXED_MTIME))
    return dirs


@dataclass
class Ports:
    live: int = field(default_factory=free_port)
    shadow_equal: int = field(default_factory=free_port)
    shadow_diff: int = field(default_factory=free_port)
    shadow_slow: int = field(default_factory=free_port)
    shadow_down: int = field(default_factory=free_port)  # nobody listens here
    shadow_diff_deep: int = field(default_factory=free_port)


def _server(port: int, body_dir: Path, delay_s: float | None = None) -> str:
    locs = []
    for size, path in PATHS.items():
        f = body_dir / f"items-{size}.json"
        if delay_s is None:
            locs.append(f"location = {path} {{ alias {f}; }}")
        else:
            raw = f"/__raw/{size}"
            locs.append(f"location = {path} {{ echo_sleep {delay_s:.3f}; echo_location {raw}; }}")
            locs.append(f"location = {raw} {{ internal; alias {f}; }}")
    body = "\n    ".join(locs)
    return f"""
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    keepalive_requests 1000000;
    {body}
  }}"""


class Nginx:
    """One nginx process tree with our config, in `workdir`; `stop()` ends it."""

    def __init__(self, workdir: Path, ports: Ports, slow_delay_s: float) -> None:
        self.workdir = workdir
        self.ports = ports
        self.slow_delay_s = slow_delay_s
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.chmod(0o755)  # nginx's workers (www-data) read the bodies
        self.bodies = write_bodies(workdir / "bodies")

    def config(self) -> str:
        p, b = self.ports, self.bodies
        slow = _server(p.shadow_slow, b["equal"], self.slow_delay_s) if ECHO_MODULE.exists() else ""
        load = f"load_module {ECHO_MODULE};" if ECHO_MODULE.exists() else ""
        return f"""{load}
daemon off;
worker_processes 1;
pid {self.workdir}/nginx.pid;
error_log {self.workdir}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  default_type application/json;
  etag off;
  server_tokens off;
  client_body_temp_path {self.workdir}/tmp;
  proxy_temp_path {self.workdir}/tmp;
  fastcgi_temp_path {self.workdir}/tmp;
  uwsgi_temp_path {self.workdir}/tmp;
  scgi_temp_path {self.workdir}/tmp;
{_server(p.live, b["equal"])}
{_server(p.shadow_equal, b["equal"])}
{_server(p.shadow_diff, b["diff"])}
{_server(p.shadow_diff_deep, b["diff_deep"])}
{slow}
}}
"""

    @property
    def has_slow(self) -> bool:
        return ECHO_MODULE.exists()

    def start(self) -> Nginx:
        (self.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "nginx.conf"
        conf.write_text(self.config())
        self.proc = subprocess.Popen(["nginx", "-p", str(self.workdir), "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_listening(self.ports.live, proc=self.proc)
        return self

    def reload(self, slow_delay_s: float) -> None:
        """Change the slow shadow's delay in place (SIGHUP: nginx re-reads its config)."""
        assert self.proc is not None
        self.slow_delay_s = slow_delay_s
        (self.workdir / "nginx.conf").write_text(self.config())
        self.proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)  # old workers finish; new ones listen

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


def wait_listening(port: int, *, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20.0) -> None:
    """Block until 127.0.0.1:port accepts a connection; fail early when `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            msg = f"process exited with {proc.returncode} before listening on {port}: {err[-2000:]}"
            raise RuntimeError(msg)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    msg = f"nothing listening on 127.0.0.1:{port} after {timeout}s"
    raise RuntimeError(msg)
