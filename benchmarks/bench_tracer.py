"""Cost of measuring: traced ÷ plain time of one VGG11 training step on CPU (not a timed test).

Variants, run in alternation (so that drift and other load hit all of them alike; the order rotates every
round, so that no variant always follows the same one), median of ``--reps``:

- ``plain``      forward + loss + backward, nothing installed
- ``traced``     the same under the tensor-level Tracer (dispatch mode + module tracker + weakref frees)
- ``profiled``   the same under torch.profiler with ``profile_memory=True`` only (the CPU allocator level),
                 including reading its allocation events back
- ``both``       tracer + profiler: what ``vggexplorer run`` does on CPU

Usage: ``python benchmarks/bench_tracer.py [--head fc] [--batch 8] [--input 224] [--reps 5]``
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--head", default="fc")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--input", type=int, default=224)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()

    from torch.profiler import ProfilerActivity, profile

    from vggexplorer.core.model.backbone import build_model
    from vggexplorer.core.model.head import preset
    from vggexplorer.core.run.tracer import Tracer

    torch.manual_seed(0)
    model = build_model(preset(args.head), init=False)
    model.train()
    x = torch.randn(args.batch, 3, args.input, args.input)
    y = torch.randint(0, 1000, (args.batch,))

    def step() -> None:
        model.zero_grad(set_to_none=True)
        out = model(x)
        if out.dim() == 4:
            out = out.mean(dim=(2, 3))
        torch.nn.functional.cross_entropy(out, y).backward()

    def plain() -> None:
        step()

    def traced() -> None:
        tr = Tracer()
        tr.set_model(model)
        with tr:
            tr.set_phase("forward", 0)
            step()
        tr.close()

    def read_events(prof: profile) -> int:
        from torch._C._profiler import _EventType

        n = 0
        assert prof.profiler is not None and prof.profiler.kineto_results is not None
        stack = list(prof.profiler.kineto_results.experimental_event_tree())
        while stack:
            node = stack.pop()
            if node.tag == _EventType.Allocation:
                n += 1
            stack.extend(node.children)
        return n

    def profiled() -> None:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step()
        read_events(prof)

    def both() -> None:
        tr = Tracer()
        tr.set_model(model)
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof, tr:
            tr.set_phase("forward", 0)
            step()
        read_events(prof)
        tr.close()

    variants: dict[str, Callable[[], None]] = {
        "plain": plain,
        "traced": traced,
        "profiled": profiled,
        "both": both,
    }
    for f in variants.values():  # warm-up: oneDNN primitives, allocator, profiler initialisation
        f()
    times: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    faults: dict[str, list[int]] = {k: [] for k in variants}
    sys_s: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(args.reps):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            f = variants[name]
            ru = resource.getrusage(resource.RUSAGE_SELF)
            c, t = time.process_time(), time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
            ru1 = resource.getrusage(resource.RUSAGE_SELF)
            faults[name].append(ru1.ru_minflt - ru.ru_minflt)
            sys_s[name].append(ru1.ru_stime - ru.ru_stime)
    print(
        f"VGG11 {args.head} · train (fwd+loss+bwd) · batch {args.batch} · {args.input}×{args.input} · CPU "
        f"({torch.get_num_threads()} threads) · torch {torch.__version__} · {args.reps} alternating rounds"
    )
    print("wall = time.perf_counter; cpu = time.process_time (all threads; less sensitive to other load)")
    base_w, base_c = statistics.median(times["plain"]), statistics.median(cpu["plain"])
    min_w = min(times["plain"])
    print(
        f"{'variant':<10} {'wall med':>9} {'÷plain':>7} {'wall min':>9} {'÷plain':>7} {'cpu med':>8}"
        f" {'÷plain':>7} {'round÷':>7}   wall runs (s)"
    )
    for name in variants:
        w, cp = times[name], cpu[name]
        rr = statistics.median(a / b for a, b in zip(w, times["plain"], strict=True))
        print(
            f"{name:<10} {statistics.median(w):9.3f} {statistics.median(w) / base_w:7.3f} {min(w):9.3f} "
            f"{min(w) / min_w:7.3f} {statistics.median(cp):8.3f} "
            f"{statistics.median(cp) / base_c:7.3f} {rr:7.3f}   " + " ".join(f"{t:.2f}" for t in w)
        )
    print("round÷ = median over rounds of (variant ÷ plain in the same round)")
    print(f"{'variant':<10} {'minor faults med':>17} {'min':>9} {'max':>9} {'sys s med':>10}")
    for name in variants:
        fl = faults[name]
        print(
            f"{name:<10} {statistics.median(fl):17,.0f} {min(fl):9,d} {max(fl):9,d} "
            f"{statistics.median(sys_s[name]):10.3f}"
        )
    for name, label, target in (
        ("traced", "tracer overhead (traced ÷ plain, VGG11 train b8 224, CPU), round÷ median", 1.02),
        ("both", "tracer + CPU allocator source (what a CPU run does) ÷ plain", 1.05),
    ):
        if name in times:
            rr = statistics.median(a / b for a, b in zip(times[name], times["plain"], strict=True))
            print(f"FIGURE|{label}|{rr:.3f}|≤ {target}|{'yes' if rr <= target else 'no'}")
    _per_op_cost()


def _per_op_cost() -> None:
    """The tracer's own cost per op and per allocation, measured on tiny ops (no compute to hide behind)."""
    from vggexplorer.core.run.tracer import Tracer

    a, b = torch.ones(4), torch.ones(4)
    n = 20000

    def inplace() -> None:
        for _ in range(n):
            a.add_(b)

    def alloc() -> None:
        for _ in range(n):
            _ = a + b

    for label, f in (("op, no allocation", inplace), ("op + alloc + free", alloc)):
        plain, traced = [], []
        for _ in range(5):
            t = time.perf_counter()
            f()
            plain.append(time.perf_counter() - t)
            tr = Tracer()
            t = time.perf_counter()
            with tr:
                f()
            traced.append(time.perf_counter() - t)
            tr.close()
        extra = (statistics.median(traced) - statistics.median(plain)) / n * 1e6
        print(f"tracer cost per {label}: {extra:.2f} µs (plain {statistics.median(plain) / n * 1e6:.2f} µs)")


if __name__ == "__main__":
    main()
