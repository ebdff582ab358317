"""One side of the demo as a standalone server: `python -m shadowproxy.demo_backend --side live`.

The live (v1) or shadow (v2) application of `shadowproxy demo`, served on its own, so the demo
runs as separate containers (docker/compose.yaml). SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import sys

from aiohttp import web

from shadowproxy.demo import make_app

SIDES = {"live": 1, "shadow": 2}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m shadowproxy.demo_backend", description=__doc__)
    p.add_argument("--side", choices=sorted(SIDES), required=True, help="live (v1) or shadow (v2)")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, required=True, help="port to listen on")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    web.run_app(make_app(SIDES[args.side]), host=args.host, port=args.port, access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
