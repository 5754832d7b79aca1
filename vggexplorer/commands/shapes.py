"""``vggexplorer shapes``: per-layer shapes, parameters and output bytes for a head (meta tensors only)."""

from __future__ import annotations

import argparse
import json

from vggexplorer.cli import EXIT_BAD_INPUT, EXIT_OK, fail
from vggexplorer.commands.common import add_model_args
from vggexplorer.core.base.errors import VGGExplorerError
from vggexplorer.core.base.units import fmt_bytes
from vggexplorer.core.model.head import load_head
from vggexplorer.core.model.shapes import ShapeReport, fmt_shape, infer_shapes


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("shapes", help="per-layer shapes and parameters of a head, computed on meta tensors")
    add_model_args(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        spec = load_head(args.head, args.backbone)
        report = infer_shapes(spec, args.batch, args.input, check_meta=True)
    except VGGExplorerError as e:
        return fail(str(e))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_table(report))
    if not report.ok:
        assert report.issue is not None
        return fail(str(report.issue))
    return EXIT_OK if report.ok else EXIT_BAD_INPUT


def format_table(r: ShapeReport) -> str:
    rows = [("#", "name", "layer", "output shape", "params", "output")]
    if r.backbone:
        b = r.backbone
        rows.append(
            ("", b.name, b.description, fmt_shape(b.output_shape), f"{b.params:,}", fmt_bytes(b.output_bytes))
        )
    for lay in r.layers:
        rows.append(
            (
                str(lay.index),
                lay.name,
                lay.description,
                fmt_shape(lay.output_shape),
                f"{lay.params:,}",
                fmt_bytes(lay.output_bytes),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = {0, 4, 5}
    lines = []
    for k, row in enumerate(rows):
        cells = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("-" * len(lines[0]))
    lines.append("-" * len(lines[0]))
    n, c, h, w = r.input_shape
    lines.append(
        f"input {n}×{c}×{h}×{w} · {r.spec.backbone} · total params {r.total_params:,} "
        f"({fmt_bytes(r.total_params * 4)} in float32)"
    )
    if r.output_shape:
        lines.append(f"output {fmt_shape(r.output_shape)}")
    for wmsg in r.warnings:
        lines.append(f"warning: {wmsg}")
    return "\n".join(lines)
