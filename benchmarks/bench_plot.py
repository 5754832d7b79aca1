"""Redraw cost of MemoryPlot with a million-event run: one live-update frame = ``set_results`` with new data
of the same run (setData on the existing curves) + an offscreen render of the whole widget (``grab``).

    python benchmarks/bench_plot.py [--events 1000000] [--frames 15] [--size 1600x1000]

Target: ≤ 33 ms per frame (30 fps). Prints a table: wall and CPU time (CPU time is less disturbed by other
processes on a shared machine), median and p90 over the frames.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np

from vggexplorer.core.results.analysis import step_envelope
from vggexplorer.core.results.synthetic import synthetic_run
from vggexplorer.qt.plots.export import ensure_qapp
from vggexplorer.qt.plots.memory_plot import MemoryPlot


def _stats(xs: list[float]) -> tuple[float, float]:
    return 1000 * statistics.median(xs), 1000 * float(np.percentile(xs, 90))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--frames", type=int, default=15)
    ap.add_argument("--size", default="1600x1000")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    app = ensure_qapp()
    run = synthetic_run(head="fcn", input_hw=384, batch=8, cuda=True, extra_events=args.events)
    n = len(run.allocator) + len(run.tensor)
    plot = MemoryPlot()
    plot.resize(width, height)
    plot.show()
    app.processEvents()
    t0 = time.perf_counter()
    plot.set_results([run])
    plot.grab()
    first = time.perf_counter() - t0

    rows: list[tuple[str, list[float], list[float]]] = []

    def measure(name: str, fn: object) -> None:
        wall, cpu = [], []
        for _ in range(args.frames):
            w0, c0 = time.perf_counter(), time.process_time()
            fn()  # type: ignore[operator]
            wall.append(time.perf_counter() - w0)
            cpu.append(time.process_time() - c0)
        rows.append((name, wall, cpu))

    t, y = run.allocator.t, run.allocator.total
    measure("step_envelope (1 curve, whole run)", lambda: step_envelope(t, y, 0.0, float(t[-1]), width))
    measure("set_results (same run, new data)", lambda: plot.set_results([run]))
    measure("grab (render the widget)", plot.grab)
    measure("frame: set_results + grab", lambda: (plot.set_results([run]), plot.grab()))
    x1 = float(t[-1])
    zooms = iter(np.linspace(0.2, 1.0, args.frames * 2))
    measure(
        "frame: zoom (new x range) + grab", lambda: (plot.top.setXRange(0, x1 * next(zooms)), plot.grab())
    )

    print(
        f"MemoryPlot redraw, {n:,} timeline rows "
        f"({len(run.allocator):,} allocator + {len(run.tensor):,} tensor; "
        f"CUDA-like: allocated, reserved, tensors, NVML device, process), {width}×{height}, offscreen"
    )
    print(f"first set_results + grab (builds the items): {1000 * first:.1f} ms")
    print(f"{'step':40s} {'wall median':>12s} {'wall p90':>9s} {'cpu median':>11s}")
    for name, wall, cpu in rows:
        wm, wp = _stats(wall)
        cm, _ = _stats(cpu)
        print(f"{name:40s} {wm:9.1f} ms {wp:6.1f} ms {cm:8.1f} ms")
    frame = statistics.median(rows[3][1]) * 1000
    print(f"target ≤ 33 ms per frame: {'met' if frame <= 33 else 'NOT met'} ({frame:.1f} ms wall median)")
    print(
        f"FIGURE|redraw with {args.events:,} points on screen (offscreen render per frame)|{frame:.1f} ms|"
        f"≤ 33 ms|{'yes' if frame <= 33 else 'no'}"
    )
    plot.close()


if __name__ == "__main__":
    main()
