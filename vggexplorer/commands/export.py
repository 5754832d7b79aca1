"""``vggexplorer export RUN.json``: re-render a saved run as PNG/SVG plots and a CSV of its events."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vggexplorer.cli import EXIT_BAD_INPUT, EXIT_OK, fail
from vggexplorer.core.base.errors import VGGExplorerError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="re-render a saved run.json as memory.png/.svg and memory.csv")
    p.add_argument("run_file", type=Path, metavar="RUN.json", help="a run written by 'vggexplorer run'")
    p.add_argument("--png", action="store_true", help="write memory.png")
    p.add_argument("--svg", action="store_true", help="write memory.svg")
    p.add_argument("--csv", action="store_true", help="write memory.csv (one row per event)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="output folder (default: the run's)")
    p.add_argument(
        "--size", default="1600x1000", metavar="WxH", help="image size in pixels (default 1600x1000)"
    )
    p.set_defaults(func=run)


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().replace("×", "x").split("x"))
    except ValueError:
        raise ValueError(f"size must look like 1600x1000, got {text!r}") from None
    if not (200 <= w <= 8000 and 200 <= h <= 8000):
        raise ValueError(f"size must be between 200 and 8000 pixels each way, got {text!r}")
    return w, h


def run(args: argparse.Namespace) -> int:
    from vggexplorer.core.results.runfile import load_run, write_csv

    want_png, want_svg, want_csv = args.png, args.svg, args.csv
    if not (want_png or want_svg or want_csv):
        want_png = want_svg = True
    try:
        width, height = parse_size(args.size)
    except ValueError as e:
        return fail(str(e))
    try:
        result = load_run(args.run_file)
    except VGGExplorerError as e:
        return fail(str(e))
    out: Path = args.out if args.out is not None else args.run_file.resolve().parent
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return fail(f"cannot create {out}: {e.strerror or e}")
    written: list[Path] = []
    try:
        if want_csv:
            write_csv(result, out / "memory.csv")
            written.append(out / "memory.csv")
        if want_png or want_svg:
            try:
                from vggexplorer.qt.plots.export import export_run_plots
            except ImportError as e:
                return fail(f"plots need PySide6 and pyqtgraph ({e}); install vggexplorer[gui]")
            png = out / "memory.png" if want_png else None
            svg = out / "memory.svg" if want_svg else None
            export_run_plots(result, png, svg, width=width, height=height)
            written.extend(p for p in (png, svg) if p is not None)
    except OSError as e:
        return fail(f"cannot write to {out}: {e.strerror or e}")
    for p in written:
        print(p, file=sys.stdout)
    return EXIT_OK if written else EXIT_BAD_INPUT
