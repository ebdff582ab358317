"""Debian's chromium driven by Playwright, for the browser tests (never `playwright install`)."""

from __future__ import annotations

import base64
import shutil
from typing import Any

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LAUNCH_TIMEOUT_MS = 30_000


def chromium_path() -> str:
    """The chromium binary; a missing one is a failure to fix (`make chromium`), never a skip."""
    path = CHROMIUM if shutil.which(CHROMIUM) else shutil.which("chromium")
    assert path, "chromium is missing: run `make chromium` (apt-get install chromium)"
    return path


def launch_kwargs() -> dict[str, Any]:
    return {"executable_path": chromium_path(), "args": ARGS, "timeout": LAUNCH_TIMEOUT_MS}


# Counts the pixels of a PNG that are not (near) white, drawing it on a canvas in the page.
COUNT_INK_JS = """
async (b64) => {
  const img = new Image();
  img.src = "data:image/png;base64," + b64;
  await img.decode();
  const c = document.createElement("canvas");
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext("2d");
  ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i + 3] > 0 && (d[i] < 235 || d[i + 1] < 235 || d[i + 2] < 235)) n++;
  }
  return n;
}
"""

# How many bars of an SVG chart were laid out with a real size.
DRAWN_BARS_JS = """
(id) => Array.from(document.querySelectorAll("#" + id + " rect.bar"))
  .filter((r) => { const b = r.getBBox(); return b.width > 0 && b.height > 0; }).length
"""


def b64(png: bytes) -> str:
    return base64.b64encode(png).decode()
