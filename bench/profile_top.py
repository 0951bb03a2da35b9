"""Summarise a py-spy ``--format raw`` (collapsed stacks) profile: top functions.

    .venv/bin/python bench/profile_top.py /tmp/prof/run1-serve.collapsed [--top 30]
        [--grep postroute]   # only frames whose file matches (e.g. the project's own code)

Prints the share of samples where a function is on the stack (inclusive) and where it is
the innermost frame (self). Frames are named ``function (file)``, line numbers dropped.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def frame_name(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("site-packages/", "lib/python3.11/", "/src/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m.group('func')} ({path})"


def load(path: Path) -> tuple[Counter[str], Counter[str], int]:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [frame_name(f) for f in stack.split(";")]
        own[frames[-1]] += n
        for name in set(frames):
            inclusive[name] += n
    return inclusive, own, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profile", type=Path)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--grep", default="", help="only functions whose name/file contains this")
    args = ap.parse_args()
    inclusive, own, total = load(args.profile)
    print(f"{args.profile}: {total} samples")
    for title, table in (("inclusive", inclusive), ("self", own)):
        print(f"-- {title}")
        rows = [(k, v) for k, v in table.most_common() if args.grep in k][: args.top]
        for name, n in rows:
            print(f"{100 * n / max(total, 1):6.1f}%  {name}")


if __name__ == "__main__":
    main()
