"""``vggexplorer compare A.json B.json [more.json] --out DIR``: why does B use more memory than A?

Writes DIR/compare.png and DIR/compare.svg (the runs overlaid on one time axis), DIR/compare.md and
DIR/compare.csv (differences by layer and by category; every further run is compared with the first) and
prints the explanation.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

from vggexplorer.cli import EXIT_OK, fail
from vggexplorer.core.base.errors import VGGExplorerError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="compare saved runs: difference tables, overlaid plots, explanation")
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN.json", help="two or more runs; the first is A")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--no-plots", action="store_true", help="write compare.md and compare.csv only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vggexplorer.core.base.fileio import atomic_write_text
    from vggexplorer.core.results.compare import (
        ROW_FIELDS,
        compare,
        comparison_to_markdown,
        comparison_to_rows,
        explain,
    )
    from vggexplorer.core.results.runfile import load_run

    if len(args.runs) < 2:
        return fail("compare needs at least two run files (A.json B.json)")
    try:
        results = [load_run(p) for p in args.runs]
    except VGGExplorerError as e:
        return fail(str(e))
    for r, p in zip(results, args.runs, strict=True):
        if not r.name:
            r.name = p.parent.name if p.name == "run.json" else p.stem
    if len({r.name for r in results}) < len(results):  # equal names would make the legend ambiguous
        for k, r in enumerate(results):
            r.name = f"{chr(ord('A') + k) if k < 26 else k}: {r.name}"
    comparisons = [compare(results[0], b) for b in results[1:]]
    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
        md = "\n".join(comparison_to_markdown(c) for c in comparisons)
        atomic_write_text(out / "compare.md", md)
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, fieldnames=["a_run", "b_run", *ROW_FIELDS], lineterminator="\n")
        w.writeheader()
        for c in comparisons:
            for row in comparison_to_rows(c):
                w.writerow({"a_run": c.label_a, "b_run": c.label_b, **row})
        atomic_write_text(out / "compare.csv", buf.getvalue())
        if not args.no_plots:
            try:
                from vggexplorer.qt.plots.export import export_run_plots
            except ImportError as e:
                return fail(f"plots need PySide6 and pyqtgraph ({e}); use --no-plots")
            export_run_plots(results, out / "compare.png", out / "compare.svg")
    except OSError as e:
        return fail(f"cannot write to {out}: {e.strerror or e}")
    for c in comparisons:
        print(f"{c.label_b} vs {c.label_a}:")
        for sentence in explain(c):
            print(f"  - {sentence}")
    print(
        f"wrote {out / 'compare.md'}, {out / 'compare.csv'}"
        + ("" if args.no_plots else ", compare.png, compare.svg")
    )
    return EXIT_OK
