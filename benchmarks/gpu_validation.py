"""Validate the engine on a real GPU: fc vs fcn heads, train mode, several inputs and batches.

    python benchmarks/gpu_validation.py                       # writes docs/gpu-validation.md
    python benchmarks/gpu_validation.py --sizes 224 --batches 1 8 --out /tmp/check.md

Each configuration runs in a fresh Python subprocess (``--one``), so the caching allocator, cuDNN's
workspace choices and the CUDA context of one run cannot leak into the peaks of the next. The child drives
the engine's own run generator (``vggexplorer.core.run.engine.run``) and reports the run's summary (allocator
peak allocated/reserved, peak NVML process memory from the device sampler) next to
``torch.cuda.max_memory_allocated/reserved`` as an independent cross-check. Qt is never imported.

Without a CUDA GPU it exits with status 2 and a message, and leaves the markdown file alone.
(``--device cpu --out /tmp/x.md`` smoke-tests the script itself on a CPU; its numbers are not GPU numbers.)
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "gpu-validation.md"
MARK = "RESULT "


def _gib(n: Any) -> str:
    if n is None:
        return "N/A"
    return f"{int(n) / 1024**3:.2f} GiB"


# --- child: one configuration -----------------------------------------------------------------------------


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one config in this (fresh) process and return plain numbers."""
    import torch

    from vggexplorer.core.base.errors import VGGExplorerError
    from vggexplorer.core.devices import nvml
    from vggexplorer.core.model.config import RunConfig
    from vggexplorer.core.model.head import preset
    from vggexplorer.core.run.engine import run

    t = time.perf_counter()
    try:
        cfg = RunConfig(
            head=preset(spec["preset"]),
            device=spec["device"],
            batch=spec["batch"],
            input_hw=(spec["size"], spec["size"]),
            mode=spec["mode"],
            optimizer=spec["optimizer"],
            iterations=spec["iterations"],
        )
        result = run(cfg)
    except VGGExplorerError as exc:  # the config is invalid for this head/input: a row that says why
        return {**spec, "status": "invalid", "fault": str(exc)}
    wall = time.perf_counter() - t
    dev = torch.device(spec["device"])
    s = result.summary
    out: dict[str, Any] = {
        **spec,
        "status": result.status,
        "fault": None
        if result.fault is None
        else f"{result.fault.kind} at {result.fault.layer or '-'} "
        f"({result.fault.phase}): {result.fault.message[:200]}",
        "output_shape": list(s.output_shape) if s.output_shape is not None else None,
        "peak_allocated": s.peak_allocated_bytes,
        "peak_reserved": s.peak_reserved_bytes,
        "peak_tensor": s.peak_tensor_bytes,
        "peak_nvml_process": s.peak_device_bytes,
        "torch_max_allocated": int(torch.cuda.max_memory_allocated(dev)) if dev.type == "cuda" else None,
        "torch_max_reserved": int(torch.cuda.max_memory_reserved(dev)) if dev.type == "cuda" else None,
        "samples": len(result.device),
        "sample_hz": round(result.device.achieved_hz, 1),
        "sample_source": result.device.source,
        "wall_s": round(wall, 2),
        "notes": list(result.notes),
        "environment": result.environment.to_dict(),
    }
    found, why = nvml.device_for_torch(dev)
    if found is not None:  # after the run, before exit: what nvidia-smi would show for us now
        pm = nvml.process_memory(found.handle)
        out["nvml_process_after"] = None if pm.used is nvml.NA else int(pm.used)
        out["nvml_process_reason"] = pm.reason
    else:
        out["nvml_process_after"], out["nvml_process_reason"] = None, why
    return out


# --- parent -----------------------------------------------------------------------------------------------


def run_child(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", json.dumps(spec)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {**spec, "status": "error", "fault": f"timed out after {timeout:g} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARK):
            data: dict[str, Any] = json.loads(line[len(MARK) :])
            return data
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {**spec, "status": "error", "fault": f"exit {proc.returncode}: " + " | ".join(tail)[:300]}


def render(rows: list[dict[str, Any]], command: str) -> str:
    env: dict[str, Any] = next((r["environment"] for r in rows if r.get("environment")), {})
    lines = [
        "# GPU validation: fc vs fcn heads",
        "",
        f"Generated by `{command}` on {_dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}.",
        "",
        f"- Card: {env.get('device_name', 'N/A')} ({_gib(env.get('device_total_bytes'))}, "
        f"compute capability {env.get('compute_capability', 'N/A')}, {env.get('device_uuid', 'N/A')})",
        f"- Driver: {env.get('driver', 'N/A')} · CUDA (torch build): {env.get('cuda', 'N/A')} · "
        f"cuDNN: {env.get('cudnn', 'N/A')}",
        f"- torch {env.get('torch', 'N/A')} · Python {env.get('python', 'N/A')} · "
        f"nvidia-ml-py {env.get('nvidia_ml_py', 'N/A')} · {env.get('platform', '')}",
        f"- NVML: {(env.get('nvml') or {}).get('reason', 'N/A')}",
        "",
        "Each row is one fresh process running the engine's run generator (train mode: forward, loss, "
        "backward; gradients kept). *Peak allocated / reserved* are the engine's allocator-level peaks; "
        "*torch max* is `torch.cuda.max_memory_allocated/reserved` read after the run (should agree); "
        "*NVML process* is the peak of the device sampler's NVML per-process series (CUDA context, "
        "kernels and libraries included; N/A where NVML cannot match this PID, e.g. in a container).",
        "",
        "| head | input | batch | status | output | peak allocated | peak reserved | torch max alloc / "
        "reserved | NVML process (peak) | samples (Hz) | wall s |",
        "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        shape = "×".join(map(str, r["output_shape"])) if r.get("output_shape") else "—"
        status = r["status"] if not r.get("fault") else f"{r['status']}: {r['fault']}"
        status = status.replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| {r['preset']} | {r['size']}×{r['size']} | {r['batch']} | {status} | {shape} | "
            f"{_gib(r.get('peak_allocated'))} | {_gib(r.get('peak_reserved'))} | "
            f"{_gib(r.get('torch_max_allocated'))} / {_gib(r.get('torch_max_reserved'))} | "
            f"{_gib(r.get('peak_nvml_process'))} | {r.get('samples', '—')} ({r.get('sample_hz', '—')}) | "
            f"{r.get('wall_s', '—')} |"
        )
    notes = sorted({n for r in rows for n in r.get("notes", [])} | {r.get("sample_source", "") for r in rows})
    notes = [n for n in notes if n]
    if notes:
        lines += ["", "Notes and measurement sources reported by the runs:", ""]
        lines += [f"- {n}" for n in notes]
    lines += ["", "Raw numbers (bytes) are in the JSON block below.", "", "```json"]
    lines.append(json.dumps([{k: v for k, v in r.items() if k != "environment"} for r in rows], indent=1))
    lines += ["```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--presets", nargs="+", default=["fc", "fcn"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[224, 384])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    ap.add_argument("--mode", default="train", choices=["train", "train-step", "eval"])
    ap.add_argument("--optimizer", default="sgd")
    ap.add_argument("--iterations", type=int, default=1)
    ap.add_argument("--device", default="cuda:0", help="cuda:N; 'cpu' only smoke-tests this script")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per configuration")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)

    if args.one is not None:
        print(MARK + json.dumps(run_one(json.loads(args.one))), flush=True)
        return 0

    import torch

    if args.device != "cpu" and not torch.cuda.is_available():
        built = torch.version.cuda
        why = (
            "torch is a CPU-only build" if built is None else f"torch {torch.__version__} sees no usable GPU"
        )
        print(
            f"No CUDA GPU available ({why}): nothing to validate, {args.out} left unchanged.\n"
            "Run this script on a machine with an NVIDIA GPU and a CUDA build of torch.",
            file=sys.stderr,
        )
        return 2

    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python benchmarks/gpu_validation.py", *given])
    rows: list[dict[str, Any]] = []
    for size in args.sizes:
        for batch in args.batches:
            for name in args.presets:
                spec = {
                    "preset": name,
                    "size": size,
                    "batch": batch,
                    "mode": args.mode,
                    "optimizer": args.optimizer,
                    "iterations": args.iterations,
                    "device": args.device,
                }
                print(f"{name:4s} {size}×{size} batch {batch:3d} …", end=" ", flush=True)
                row = run_child(spec, args.timeout)
                rows.append(row)
                print(
                    f"{row['status']}: allocated {_gib(row.get('peak_allocated'))}, "
                    f"reserved {_gib(row.get('peak_reserved'))}, NVML {_gib(row.get('peak_nvml_process'))}"
                    + (f" — {row['fault']}" if row.get("fault") else ""),
                    flush=True,
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(rows, command), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0 if all(r["status"] in ("ok", "oom", "invalid") for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
