"""How fast does the device sampler sample, and how much does it slow the run down?

Workload: VGG11 with the ``gap`` head (global average pool + one Linear), forward + backward, batch 2 at
128×128 on the CPU (``--workload matmul`` for a plain matmul loop). Runs alternate without/with the sampler
(ABAB…) so drift in machine load hits both equally; the table reports medians.

    python benchmarks/bench_sampler.py            # 11 pairs, 1 kHz
    python benchmarks/bench_sampler.py --pairs 9 --rate 2000 --workload matmul
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch

from vggexplorer.core.run.sampler import DeviceSampler


def vgg_step(batch: int, size: int) -> Callable[[], None]:
    from vggexplorer.core.model.backbone import build_model
    from vggexplorer.core.model.head import preset

    model = build_model(preset("gap"))
    x = torch.randn(batch, 3, size, size)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()

    return step


def matmul_step(n: int = 1024, reps: int = 40) -> Callable[[], None]:
    a = torch.randn(n, n)

    def step() -> None:
        b = a
        for _ in range(reps):
            b = torch.tanh(b @ a)

    return step


def timed(
    step: Callable[[], None], iters: int, sample: bool, rate: float
) -> tuple[float, float, int, float, float]:
    """Seconds for ``iters`` steps, achieved Hz (0 without sampler), samples, sampler thread CPU seconds,
    largest interval between two samples (s)."""
    t0 = time.perf_counter()
    if not sample:
        for _ in range(iters):
            step()
        return time.perf_counter() - t0, 0.0, 0, 0.0, 0.0
    with DeviceSampler("cpu", t0, rate_hz=rate) as s:
        for _ in range(iters):
            step()
    dt = time.perf_counter() - t0
    t = s.samples.t
    gap = float((t[1:] - t[:-1]).max()) if len(t) > 1 else 0.0
    return dt, s.samples.achieved_hz, len(s.samples), s.cpu_seconds, gap


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=11, help="alternating pairs without/with sampler (≥ 5)")
    ap.add_argument("--iters", type=int, default=3, help="steps per timed run")
    ap.add_argument("--rate", type=float, default=1000.0, help="sampler rate in Hz")
    ap.add_argument("--workload", choices=("vgg", "matmul"), default="vgg")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args(argv)
    if args.pairs < 5:
        ap.error("--pairs must be at least 5")

    step = vgg_step(args.batch, args.size) if args.workload == "vgg" else matmul_step()
    step()  # warm-up: allocator, oneDNN primitives
    step()
    base: list[float] = []
    samp: list[float] = []
    hz: list[float] = []
    counts: list[int] = []
    cpu: list[float] = []
    gaps: list[float] = []
    load0 = os.getloadavg()[0]
    for i in range(args.pairs):
        order = (False, True) if i % 2 == 0 else (True, False)
        for sample in order:
            dt, h, n, c, g = timed(step, args.iters, sample, args.rate)
            if sample:
                samp.append(dt)
                hz.append(h)
                counts.append(n)
                cpu.append(c)
                gaps.append(g)
            else:
                base.append(dt)

    what = (
        f"VGG11 + gap head, fwd+bwd, batch {args.batch} at {args.size}×{args.size}"
        if args.workload == "vgg"
        else "matmul+tanh loop 1024×1024 ×40"
    )
    mb, ms = statistics.median(base), statistics.median(samp)
    print(f"# Sampler benchmark: {what}, {args.iters} steps per run, {args.pairs} alternating pairs")
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, Python {sys.version.split()[0]}")
    print(f"# target rate {args.rate:g} Hz, source: RSS from /proc/self/statm (CPU)")
    print()
    print("| run             | median s | min s  | max s  | achieved Hz (median, min–max) |")
    print("|-----------------|---------:|-------:|-------:|-------------------------------|")
    blank = " " * 29
    print(f"| without sampler | {mb:8.3f} | {min(base):6.3f} | {max(base):6.3f} | {blank} |")
    hz_s = f"{statistics.median(hz):7.1f} ({min(hz):.0f}–{max(hz):.0f})"
    print(f"| with sampler    | {ms:8.3f} | {min(samp):6.3f} | {max(samp):6.3f} | {hz_s:29s} |")
    print()
    ratios = [s / b for s, b in zip(samp, base, strict=True)]
    print(f"slowdown (median with / median without): {ms / mb:.4f}  ({(ms / mb - 1) * 100:+.1f} %)")
    print(f"fastest runs (min with / min without; robust to other load): {min(samp) / min(base):.4f}")
    joined = ", ".join(f"{r:.3f}" for r in ratios)
    print(f"per-pair ratios: {joined} (median {statistics.median(ratios):.4f})")
    print(f"samples per run: {min(counts)}–{max(counts)}")
    print(
        f"largest interval between samples: {statistics.median(gaps) * 1e3:.2f} ms (median over runs), "
        f"{max(gaps) * 1e3:.2f} ms (worst)"
    )
    hz_med = statistics.median(hz) if hz else 0.0
    slow = statistics.median(ratios)
    ok = hz_med >= 1000 and slow <= 1.03
    print(
        f"FIGURE|device sampler rate / slowdown of the run ({args.workload})|{hz_med:.0f} Hz / "
        f"{(slow - 1) * 100:+.1f} % (per-pair median)|≥ 1 kHz / ≤ 3%|{'yes' if ok else 'no'}"
    )
    frac = statistics.median(c / dt for c, dt in zip(cpu, samp, strict=True))
    per_sample = statistics.median(c / n for c, n in zip(cpu, counts, strict=True))
    us = per_sample * 1e6
    print(f"sampler thread CPU: {frac * 100:.2f} % of one core, {us:.1f} µs per sample (with wake-up)")
    load1 = os.getloadavg()[0]
    print(f"load average (1 min) before/after: {load0:.2f} / {load1:.2f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
