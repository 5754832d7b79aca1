"""1,000-iteration run: ``load_run(run.json)`` + the first draw of a MemoryPlot. Target ≤ 1 s.

    python benchmarks/bench_load.py [--iterations 1000] [--repeats 5] [--run-file PATH] [--profile]

The run is real: VGG11 with the ``gap`` head, CPU, batch 1, 32×32, eval mode, ``iterations`` iterations
(all levels recorded: tensor, CPU allocator, RSS at 1 kHz), saved with ``save_run``. Measuring it takes
about 1.5 minutes here (2 cores). ``--run-file`` reuses a saved run instead (its iteration count is
printed).

Each repeat runs in a fresh Python process, so no cache of a previous repeat helps: the process imports
the app and starts a QApplication (timed apart, not part of the figure), then the timed part is
``load_run`` + ``MemoryPlot()`` + ``set_results`` + an offscreen render of the whole widget (``grab``,
1600×1000). The figure is the median over the repeats. ``--profile`` runs one more process under cProfile
and prints where the time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

TARGET_S = 1.0

CHILD = r"""
import json, os, sys, time
t_start = time.perf_counter()
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from vggexplorer.core.results.runfile import load_run
from vggexplorer.qt.plots.export import ensure_qapp
from vggexplorer.qt.plots.memory_plot import MemoryPlot
from PySide6 import QtCore
app = ensure_qapp()
t_ready = time.perf_counter()

def timed():
    t0 = time.perf_counter()
    r = load_run(sys.argv[1])
    t1 = time.perf_counter()
    w = MemoryPlot()
    w.setAttribute(QtCore.Qt.WidgetAttribute.WA_DontShowOnScreen, True)
    w.resize(1600, 1000)
    w.show()
    w.set_results([r])
    img = w.grab()
    t2 = time.perf_counter()
    assert not img.isNull() and img.width() > 0
    return r, w, t0, t1, t2

if len(sys.argv) > 2:
    import cProfile, pstats
    prof = cProfile.Profile()
    prof.enable()
    r, w, t0, t1, t2 = timed()
    prof.disable()
    pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(25)
else:
    r, w, t0, t1, t2 = timed()
print(json.dumps({
    "startup_s": t_ready - t_start, "load_s": t1 - t0, "draw_s": t2 - t1, "total_s": t2 - t0,
    "tensor_rows": len(r.tensor), "allocator_rows": len(r.allocator), "device_samples": len(r.device),
    "iterations": r.config.run.iterations, "status": r.status,
}))
"""


def make_run(iterations: int, path: Path) -> float:
    from vggexplorer.core.model.config import RunConfig
    from vggexplorer.core.model.head import preset
    from vggexplorer.core.results.runfile import save_run
    from vggexplorer.core.run.engine import run

    cfg = RunConfig(
        head=preset("gap"), device="cpu", batch=1, input_hw=(32, 32), mode="eval", iterations=iterations
    )
    t = time.perf_counter()
    r = run(cfg)
    took = time.perf_counter() - t
    assert r.status == "ok", r.status
    save_run(r, path)
    return took


def child(run_file: Path, profile: bool = False) -> dict[str, float]:
    argv = [sys.executable, "-c", CHILD, str(run_file)] + (["--profile"] if profile else [])
    p = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
    if p.returncode != 0:
        raise SystemExit(f"child failed ({p.returncode}):\n{p.stderr[-3000:]}")
    if profile:
        print(p.stderr)
    out: dict[str, float] = json.loads(p.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--run-file", type=Path, default=None)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="vggx-bench-load-") as d:
        run_file = args.run_file
        made = ""
        if run_file is None:
            run_file = Path(d) / "run.json"
            took = make_run(args.iterations, run_file)
            made = f"measured here in {took:.0f} s"
        rows = [child(run_file) for _ in range(max(args.repeats, 1))]
        first = rows[0]
        size = run_file.stat().st_size
        print(
            f"run.json: VGG11 gap head, CPU, b1, 32×32, eval, {first['iterations']} iterations "
            f"({made or 'given'}); "
            f"{size / 1e6:.1f} MB; {int(first['tensor_rows']):,} tensor rows, "
            f"{int(first['allocator_rows']):,} allocator rows, {int(first['device_samples']):,} RSS samples"
        )
        print(f"{args.repeats} repeats, each in a fresh process (imports + QApplication not timed)")
        print(f"{'step':44s} {'median':>9s} {'min':>9s} {'max':>9s}")
        for key, label in (
            ("startup_s", "(not timed) imports + QApplication"),
            ("load_s", "load_run(run.json)"),
            ("draw_s", "MemoryPlot + set_results + grab 1600×1000"),
            ("total_s", "load + first draw"),
        ):
            xs = [r[key] for r in rows]
            print(f"{label:44s} {statistics.median(xs):8.3f}s {min(xs):8.3f}s {max(xs):8.3f}s")
        value = statistics.median(r["total_s"] for r in rows)
        ok = value <= TARGET_S
        print(
            f"FIGURE|{int(first['iterations']):,}-iteration run: load run.json + first draw|{value:.2f} s|"
            f"≤ {TARGET_S:g} s|{'yes' if ok else 'no'}"
        )
        if args.profile or not ok:
            child(run_file, profile=True)


if __name__ == "__main__":
    main()
