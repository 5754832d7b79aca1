"""Run the benchmarks of two git revisions alternately and compare their figures.

Each revision is checked out in a temporary worktree and runs its own ``benchmarks/bench_*.py`` (so a
revision that moved modules is measured with its own imports); the rounds alternate A, B, A, B, ... so that
drift of the machine (other load, thermal state) falls on both. Every ``FIGURE|name|value|...`` line is
collected; the table gives, per figure, the median of each side and the ratio B ÷ A of the medians, oriented
so that > 1 is worse (for rates, A ÷ B). Usage::

    .venv/bin/python benchmarks/compare_revisions.py BEFORE AFTER [--rounds 2] [--only tracer predict]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")


def _value(text: str) -> tuple[float, str] | None:
    """The first number of a figure's value and its unit (``0.31 s`` → (0.31, "s"))."""
    m = _NUMBER.search(text)
    if not m:
        return None
    unit = text[m.end() :].strip().split(" ")[0] if text[m.end() :].strip() else ""
    return float(m.group().replace(",", "")), unit


def _run_round(tree: Path, scripts: list[str], timeout: float) -> dict[str, tuple[float, str]]:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(tree))
    figures: dict[str, tuple[float, str]] = {}
    for name in scripts:
        script = tree / "benchmarks" / name
        if not script.exists():
            continue
        try:
            r = subprocess.run(
                [sys.executable, str(script)],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                cwd=tree,
            )
        except subprocess.TimeoutExpired:
            print(f"  {name}: timed out", file=sys.stderr)
            continue
        if r.returncode:
            print(f"  {name}: exit {r.returncode}: {r.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        for line in r.stdout.splitlines():
            if line.startswith("FIGURE|"):
                parts = line.split("|")
                v = _value(parts[2]) if len(parts) > 2 else None
                if v is not None:
                    figures[parts[1]] = v
    return figures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--rounds", type=int, default=2, help="rounds per revision (alternating)")
    ap.add_argument("--only", nargs="*", default=None, help="benchmark names (e.g. tracer plot)")
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()
    scripts = sorted(p.name for p in (ROOT / "benchmarks").glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.removeprefix("bench_").removesuffix(".py") in args.only]
    with tempfile.TemporaryDirectory(prefix="vggx-bench-") as tmp:
        trees = {}
        for label, rev in (("A", args.before), ("B", args.after)):
            tree = Path(tmp) / label
            subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), rev], cwd=ROOT, check=True)
            trees[label] = tree
        samples: dict[str, dict[str, list[float]]] = {"A": {}, "B": {}}
        units: dict[str, str] = {}
        try:
            for i in range(args.rounds):
                for label in ("A", "B") if i % 2 == 0 else ("B", "A"):
                    print(f"== round {i + 1}, {label}", file=sys.stderr, flush=True)
                    for name, (v, unit) in _run_round(trees[label], scripts, args.timeout).items():
                        samples[label].setdefault(name, []).append(v)
                        units[name] = unit
        finally:
            for tree in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    print(f"before (A) = {args.before}, after (B) = {args.after}, {args.rounds} alternating rounds each")
    print(f"{'figure':<58} {'A median':>12} {'B median':>12} {'B÷A (>1 worse)':>16}")
    worst = 0.0
    for name in sorted(set(samples["A"]) | set(samples["B"])):
        a, b = samples["A"].get(name), samples["B"].get(name)
        if not a or not b:
            ma_s = "-" if not a else f"{statistics.median(a):.4g}"
            mb_s = "-" if not b else f"{statistics.median(b):.4g}"
            print(f"{name[:58]:<58} {ma_s:>12} {mb_s:>12}")
            continue
        ma, mb = statistics.median(a), statistics.median(b)
        higher_is_better = units.get(name, "").lower().startswith("hz")
        ratio = (ma / mb if higher_is_better else mb / ma) if min(ma, mb) > 0 else float("nan")
        worst = max(worst, ratio)
        print(f"{name[:58]:<58} {ma:>12.4g} {mb:>12.4g} {ratio:>16.3f}")
    print(f"worst ratio: {worst:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
