"""``vggexplorer run``: one measured run, written as DIR/run.json, DIR/memory.csv and (with Qt) plots.

Works on machines without Qt or GL (GPU servers): the plots are then skipped with a one-line note and
``vggexplorer export`` renders them later. Progress goes to stderr. Exit codes: 0 ok, 2 bad input,
3 out of memory (files still written).
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from vggexplorer.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_OOM, fail
from vggexplorer.commands.common import add_model_args, run_config_from_args
from vggexplorer.core.base.errors import VGGExplorerError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from vggexplorer.core.model.config import DTYPES, MODES, OPTIMIZERS, ZERO_GRAD

    p = sub.add_parser("run", help="measure one run (allocator, tensor and device level) and write the files")
    add_model_args(p)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="float16/bfloat16 run under autocast")
    p.add_argument(
        "--mode", choices=MODES, default="train", help="eval, train (fwd+bwd), train-step (+optimizer)"
    )
    p.add_argument(
        "--optimizer", choices=OPTIMIZERS, default="sgd", help="for train-step (sgd: momentum 0.9)"
    )
    p.add_argument(
        "--iterations", type=_count(1), default=1, metavar="N", help="measured iterations (default 1)"
    )
    p.add_argument("--warmup", type=_count(0), default=0, metavar="N", help="warm-up iterations (default 0)")
    p.add_argument("--zero-grad", choices=ZERO_GRAD, default="before-forward")
    p.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (created)")
    p.add_argument("--no-plots", action="store_true", help="write run.json and memory.csv only")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    # test hook (hardening work): raise the allocator's own OOM error at the first op of MODULE in PHASE
    p.add_argument("--inject-oom", default=None, metavar="MODULE:PHASE", help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if not minimum <= n <= 1000:
            raise argparse.ArgumentTypeError(f"must be between {minimum} and 1000, got {n}")
        return n

    return parse


def run(args: argparse.Namespace) -> int:
    from vggexplorer.core.model.head import load_head
    from vggexplorer.core.results.runfile import save_run, write_csv
    from vggexplorer.core.results.wording import run_summary
    from vggexplorer.core.run.engine import run_iter
    from vggexplorer.core.run.tracer import FailAt

    try:
        spec = load_head(args.head, args.backbone)
        config = run_config_from_args(args, spec)
        out: Path = args.out
        out.mkdir(parents=True, exist_ok=True)
        fail_at = None
        if args.inject_oom:
            module, _, phase = args.inject_oom.partition(":")
            fail_at = FailAt(module, phase or "forward")
        gen = run_iter(config, threading.Event(), fail_at=fail_at)
        last = -1
        result = None
        while True:
            try:
                p = next(gen)
            except StopIteration as stop:
                result = stop.value
                break
            pct = int(p.fraction * 100)
            if not args.quiet and (pct != last or p.result is not None):
                last = pct
                print(f"\r[{pct:3d}%] {p.message[:100]:<100}", end="", file=sys.stderr, flush=True)
        if not args.quiet:
            print(file=sys.stderr)
    except VGGExplorerError as e:
        return fail(str(e))
    except OSError as e:
        return fail(f"cannot write to {args.out}: {e.strerror or e}")
    try:
        save_run(result, out / "run.json")
        write_csv(result, out / "memory.csv")
    except OSError as e:
        return fail(f"cannot write to {out}: {e.strerror or e}")
    if not args.no_plots:
        try:
            from vggexplorer.qt.plots.export import export_run_plots
        except ImportError as e:
            print(
                f"vggexplorer: note: plots skipped (Qt/pyqtgraph not available: {e}); "
                f"render them later with 'vggexplorer export {out / 'run.json'} --png --svg'",
                file=sys.stderr,
            )
        else:
            try:
                export_run_plots(result, out / "memory.png", out / "memory.svg")
            except Exception as e:
                print(f"vggexplorer: note: plots could not be written: {e}", file=sys.stderr)
    print(f"{run_summary(result, outcome=True, params=True, sep=', ')} → {out}", file=sys.stderr)
    if result.status == "oom":
        f = result.fault
        where = f" in {f.layer or '-'} during {f.phase}" if f is not None else ""
        return fail(f"out of memory{where}; files written to {out}", EXIT_OOM)
    if result.status != "ok":
        return fail(f"run {result.status}", EXIT_BAD_INPUT)
    return EXIT_OK
