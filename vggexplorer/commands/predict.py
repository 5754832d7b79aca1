"""``vggexplorer predict``: what a GPU would show for a config, and whether it fits — without the GPU."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from vggexplorer.cli import EXIT_OK, fail
from vggexplorer.commands.common import add_model_args, run_config_from_args
from vggexplorer.core.base.errors import VGGExplorerError
from vggexplorer.core.base.units import fmt_bytes
from vggexplorer.core.model.config import DTYPES, MODES, OPTIMIZERS


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "predict",
        help="predict allocated/reserved/nvidia-smi memory on a named GPU, fit/OOM and the max batch",
        description="Predict, without a GPU, what memory_allocated, memory_reserved and nvidia-smi show "
        "for this config on a GPU you name, whether it fits, and the largest batch that does. "
        "Predictions are labelled as such; GPU profiles are estimates until calibrated.",
    )
    add_model_args(p)
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="float16/bfloat16: autocast")
    p.add_argument(
        "--mode", choices=MODES, default="train", help="eval, train (fwd+bwd), train-step (+optimizer)"
    )
    p.add_argument(
        "--optimizer", choices=OPTIMIZERS, default="sgd", help="for train-step (sgd: momentum 0.9)"
    )
    p.add_argument("--iterations", type=int, default=1, metavar="N", help="iterations to predict (default 1)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--gpu", metavar="NAME", help="a GPU profile, fuzzy: 'RTX 3060', 3060, h100, 'a100 80gb'")
    g.add_argument("--capacity", metavar="SIZE", help="an ad-hoc GPU with this much memory, e.g. 24GiB")
    p.add_argument("--no-max-batch", action="store_true", help="skip the largest-batch search")
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="neither read nor write the on-disk cache of traced batch models "
        "(~/.cache/vggexplorer/predict, or $VGGEXPLORER_CACHE_DIR; 'off' turns it off)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument(
        "--out", type=Path, metavar="DIR", help="write run.json (predicted run) and snapshot.pickle"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    try:
        from vggexplorer.core.model.config import ConfigError
        from vggexplorer.core.model.head import load_head
        from vggexplorer.core.predict.gpus import GpuError, resolve_gpu
        from vggexplorer.core.predict.predictor import Predictor

        gpu = resolve_gpu(args.gpu, args.capacity)
        spec = load_head(args.head, args.backbone)
        if not 1 <= args.iterations <= 100:
            return fail("--iterations must be 1..100 for a prediction")
        config = run_config_from_args(args, spec).trace_key()
        predictor = Predictor(disk_cache=not args.no_cache)
        # a batch already traced (this process or, from the disk cache, an earlier one) needs no new trace
        pred = predictor.predict(
            config, gpu, history=args.out is not None, derived_ok=predictor.is_confirmed(config)
        )
        if not args.no_max_batch:
            t = time.perf_counter()
            pred.max_batch = predictor.max_batch(config, gpu)
            pred.timings_ms["max_batch"] = (time.perf_counter() - t) * 1000.0
    except (VGGExplorerError, ConfigError, GpuError) as e:
        return fail(str(e))
    pred.timings_ms["command"] = (time.perf_counter() - t_start) * 1000.0
    if args.out is not None:
        try:
            _write_out(pred, args.out)
        except OSError as e:
            return fail(f"cannot write to {args.out}: {e.strerror or e}")
    if args.json:
        print(json.dumps(pred.to_dict(), indent=2))
    else:
        print(format_text(pred))
    return EXIT_OK


def _write_out(pred: Any, out: Path) -> None:
    from vggexplorer.core.allocator.snapshot_export import export_model_snapshot

    out.mkdir(parents=True, exist_ok=True)
    try:
        from vggexplorer.core.results.runfile import save_run
    except ImportError:  # pragma: no cover - the engine's run file module is part of the app
        (out / "run.json").write_text(json.dumps(pred.to_dict(), indent=2) + "\n")
    else:
        save_run(pred.result, out / "run.json")
    if pred.allocator is not None and pred.allocator.record_history:
        r = pred.result
        tl = r.tensor
        from vggexplorer.core.results.result import PHASES as phases

        def frames_of(tag: object) -> str:
            # model tags: the tensor row index (int) or a workspace label (str)
            if isinstance(tag, int) and 0 <= tag < len(tl):
                mod = r.string(int(tl.module[tag])) or "-"
                return f"{mod} {phases[int(tl.phase[tag])]} {r.string(int(tl.op[tag]))} (PREDICTED)"
            return f"{tag} (PREDICTED)" if tag is not None else ""

        export_model_snapshot(pred.allocator, out / "snapshot.pickle", frames_of=frames_of)
    print(f"wrote {out / 'run.json'} and {out / 'snapshot.pickle'} (PREDICTED)", file=sys.stderr)


def format_text(pred: Any) -> str:
    gpu = pred.gpu
    cfg = pred.config
    state = "estimated profile — calibrate on the card" if gpu.estimated else "calibrated profile"
    lines = [
        f"PREDICTED for {gpu.name} ({fmt_bytes(gpu.total_memory_bytes, 2)}, compute "
        f"{gpu.compute_capability[0]}.{gpu.compute_capability[1]}, {state})",
        f"config: {cfg.label()}" + (f" · {cfg.optimizer}" if cfg.mode == "train-step" else ""),
        "",
        f"  peak allocated (memory_allocated)   {fmt_bytes(pred.peak_allocated_bytes, 2):>12}  "
        f"({pred.peak_allocated_bytes:,} B)",
        f"  peak reserved  (memory_reserved)    {fmt_bytes(pred.peak_reserved_bytes, 2):>12}  "
        f"({pred.peak_reserved_bytes:,} B)",
        f"  peak nvidia-smi (this process)      {fmt_bytes(pred.peak_process_bytes, 2):>12}  "
        f"(context {fmt_bytes(gpu.cuda_context_bytes)} + kernels {fmt_bytes(gpu.lazy_kernels_bytes)} "
        "+ reserved)",
        f"  peak live tensors                   {fmt_bytes(pred.peak_tensor_bytes, 2):>12}",
        f"  workspaces (profile): cuBLAS {fmt_bytes(pred.workspace_bytes.get('cublas', 0))}, cuBLASLt "
        f"{fmt_bytes(pred.workspace_bytes.get('cublaslt', 0))}, largest cuDNN "
        f"{fmt_bytes(pred.workspace_bytes.get('conv_peak', 0))} (estimate)",
        "",
    ]
    if pred.fits:
        lines.append(
            f"verdict: FITS on {gpu.name} (allocator capacity {fmt_bytes(gpu.allocator_capacity_bytes, 2)} "
            "after context and kernels)"
        )
    elif pred.oom_at is not None:
        o = pred.oom_at
        lines.append(
            f"verdict: OUT OF MEMORY at layer {o.layer or '(no module: loss/optimizer)'} in phase "
            f"{o.phase} (iteration {o.iteration}): {o.message}"
        )
    else:
        lines.append(f"verdict: the trace failed: {pred.result.fault.message if pred.result.fault else '?'}")
    if pred.max_batch is not None:
        lines.append(f"largest batch that fits: {pred.max_batch}")
    if pred.rules:
        applied = ", ".join(f"{k} ×{v}" for k, v in pred.rules.items() if v)
        lines.append(f"CUDA mapping rules applied: {applied or 'none'}")
    t = pred.timings_ms
    lines.append(
        f"time: predict {t.get('total', 0):.0f} ms (trace {t.get('trace_or_cache', 0):.0f}, replay "
        f"{t.get('replay', 0):.0f}), max batch {t.get('max_batch', 0):.0f} ms"
    )
    return "\n".join(lines)
