"""Run every benchmark and rewrite docs/benchmarks.md with the machine, the date and the results.

Each ``benchmarks/bench_*.py`` prints its own table (medians, ratios against a baseline measured in the same
run) and, for the summary, lines of the form ``FIGURE|name|value|target|ok``. Usage::

    .venv/bin/python benchmarks/run_all.py [--only NAME ...] [--timeout SECONDS]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    except (ValueError, OSError):
        mem = float("nan")
    try:
        import torch

        tv = torch.__version__
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except ImportError:
        tv, gpu = "not installed", "none"
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem:.1f} GiB RAM, GPU: {gpu}; "
        f"{platform.system()} {platform.release()}; Python {platform.python_version()}; torch {tv}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", nargs="*", default=None, help="benchmark names (e.g. tracer plot)")
    ap.add_argument("--timeout", type=float, default=1200)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = ap.parse_args()
    scripts = sorted((ROOT / "benchmarks").glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in args.only]
    figures: list[list[str]] = []
    sections: list[str] = []
    env = dict(os.environ, QT_QPA_PLATFORM=os.environ.get("QT_QPA_PLATFORM", "offscreen"))
    for script in scripts:
        print(f"== {script.name}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            r = subprocess.run(
                [sys.executable, str(script)],
                capture_output=True,
                text=True,
                timeout=args.timeout,
                env=env,
                cwd=ROOT,
            )
            out, code = r.stdout, r.returncode
            err = r.stderr.strip().splitlines()[-5:] if r.returncode else []
        except subprocess.TimeoutExpired:
            out, code, err = "", -1, [f"timed out after {args.timeout:.0f} s"]
        took = time.perf_counter() - t0
        table = [ln for ln in out.splitlines() if not ln.startswith("FIGURE|")]
        figures += [ln.split("|")[1:] for ln in out.splitlines() if ln.startswith("FIGURE|")]
        body = "\n".join(table).strip() or "(no output)"
        status = "" if code == 0 else f"\n\n**Failed** (exit {code}): " + " / ".join(err)
        sections.append(f"### {script.stem}\n\n{body}{status}\n\n_{took:.0f} s wall time_\n")
        print(body, file=sys.stderr)
    lines = [
        "# Benchmarks",
        "",
        f"Run by `benchmarks/run_all.py` on {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}.",
        "",
        f"Machine: {machine()}.",
        "",
        "Every figure is a median of several runs; ratios compare against a baseline measured in the same",
        "run.",
        "",
        "| figure | measured | target | met |",
        "|---|---|---|---|",
    ]
    for f in figures:
        f = ([*f, "", "", "", ""])[:4]
        lines.append(f"| {f[0]} | {f[1]} | {f[2]} | {f[3]} |")
    lines += ["", "## Details", "", *sections]
    history = ROOT / "benchmarks" / "history.md"
    if history.is_file():  # hand-kept before/after records of targets that were missed and worked on
        lines += ["", history.read_text().strip()]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
