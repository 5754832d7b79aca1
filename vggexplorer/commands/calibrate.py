"""``vggexplorer calibrate``: measure the GPU at hand (context, cuBLAS/cuDNN workspaces), save its profile."""

from __future__ import annotations

import argparse
import json

from vggexplorer.cli import EXIT_BAD_INPUT, EXIT_OK, fail


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "calibrate",
        help="measure this machine's GPU (CUDA context, workspaces) and save a calibrated profile",
        description="One short run on the GPU at hand: CUDA context size (NVML process used - reserved), "
        "cuBLAS and cuBLASLt workspaces, cuDNN convolution workspaces, lazily loaded kernels. Saved to "
        "~/.config/vggexplorer/gpus/ and used by 'vggexplorer predict --gpu NAME' from then on.",
    )
    p.add_argument("--device", type=int, default=0, metavar="N", help="CUDA device ordinal (default 0)")
    p.add_argument("--json", action="store_true", help="print the profile as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    if not torch.cuda.is_available():
        return fail(
            "calibrate needs a CUDA GPU, and torch.cuda.is_available() is False on this machine "
            f"(torch {torch.__version__}). Predictions keep using the shipped, estimated profiles.",
            EXIT_BAD_INPUT,
        )
    if not 0 <= args.device < torch.cuda.device_count():
        return fail(f"--device {args.device}: only {torch.cuda.device_count()} CUDA device(s) present")
    from vggexplorer.core.predict.calibrate import CalibrationError, calibrate

    try:
        prof = calibrate(args.device)
    except CalibrationError as e:
        return fail(str(e))
    if args.json:
        print(json.dumps(prof.summary_dict(), indent=2))
    else:
        d = prof.summary_dict()
        for k in (
            "name",
            "total_memory_bytes",
            "compute_capability",
            "cuda_context_bytes",
            "lazy_kernels_bytes",
            "cublas_workspace_bytes",
            "cublaslt_workspace_bytes",
            "conv_workspace",
            "path",
        ):
            print(f"{k:28} {d[k]}")
    return EXIT_OK
