"""The top frames of py-spy's collapsed stacks (`cpu.py --profile DIR`): self and inclusive shares.

    python bench/profile_top.py DIR/mirror_equal-worker-*.txt [--top 25] [--keep-idle] [--under FUNC]

A frame is a function and its file (the line left out, so a function is one row). Self: the
samples whose innermost frame it is; inclusive: the samples with it anywhere on the stack
(once per sample, recursion too). Samples whose innermost frame is the selector's `select`
(the loop waiting in epoll: py-spy counts a thread in a system call as running) are left out
unless `--keep-idle`; `--under FUNC` keeps only the samples with FUNC (a substring of a frame)
on their stack, shares then of those. Shares are of the samples kept; the total is printed.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"^(.*) (\d+)$")
_FRAME = re.compile(r"^(.*) \((.*?)(?::\d+)?\)$")
IDLE = ("select (selectors.py)",)


def frame_name(raw: str) -> str:
    m = _FRAME.match(raw)
    if not m:
        return raw
    func, path = m.groups()
    # the package-relative path for our own files, the file's name for the rest
    short = path if path.startswith("shadowproxy/") else path.rsplit("/", 1)[-1]
    return f"{func} ({short})"


def read(paths: list[Path]) -> list[tuple[list[str], int]]:
    out = []
    for p in paths:
        for line in p.read_text(errors="replace").splitlines():
            m = _LINE.match(line.strip())
            if m:
                out.append(([frame_name(f) for f in m.group(1).split(";")], int(m.group(2))))
    return out


def summarize(stacks: list[tuple[list[str], int]], top: int, keep_idle: bool = False,
              under: str | None = None) -> str:
    kept = [(s, n) for s, n in stacks
            if (keep_idle or not s[-1].endswith(IDLE)) and (under is None or any(under in f for f in s))]
    total = sum(n for _, n in kept) or 1
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    for s, n in kept:
        self_c[s[-1]] += n
        for f in set(s):
            incl[f] += n
    lines = [f"{sum(n for _, n in stacks)} samples, {total} kept"
             + ("" if keep_idle else " (idle in select left out)") + (f", under {under!r}" if under else "")]
    lines.append("self:")
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in self_c.most_common(top)]
    lines.append("inclusive:")
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in incl.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--keep-idle", action="store_true")
    p.add_argument("--under", default=None, metavar="FUNC")
    args = p.parse_args(argv)
    print(summarize(read(args.files), args.top, args.keep_idle, args.under))
    return 0


if __name__ == "__main__":
    sys.exit(main())
