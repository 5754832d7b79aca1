"""The allocator level of a run: every allocation and free the device's allocator saw, on the run clock.

- CPU (:class:`CpuProfilerSource`): ``torch.profiler`` with ``profile_memory=True`` (and nothing else). Its
  allocation events carry the c10 CPU allocator's running total (tensors *and* kernel-internal buffers such
  as oneDNN's re-laid-out weights), a pointer and a timestamp (CLOCK_REALTIME ns, mapped to the run clock).
- CUDA (:class:`CudaHistorySource`): ``torch.cuda.memory._record_memory_history``, replayed in block bytes
  from the block layout at the trace's first entry, anchored at ``memory_stats()``; without it the counters.

Each event gets module, phase and iteration from the tracer's context at its time and a category from the
tensor storage it became (matched by pointer and size), else ``untracked_workspace``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vggexplorer.core.results.analysis import step_index
from vggexplorer.core.results.result import (
    CATEGORIES,
    PHASES,
    Timeline,
)
from vggexplorer.core.run.tracer import Tracer

_CAT = {c: i for i, c in enumerate(CATEGORIES)}
_PHASE = {p: i for i, p in enumerate(PHASES)}


def ex_wall0(t0: float) -> int:
    """CLOCK_REALTIME (ns) at run-clock 0: profiler and allocator-trace timestamps are wall-clock ns."""
    return time.time_ns() - int((time.perf_counter() - t0) * 1e9)


@dataclass
class _Block:
    t: float
    delta: int
    total: int
    ptr: int
    op: str
    reserved: int = 0
    active: int = 0


class AllocatorSource:
    """Allocator-level events of one run (CPU profiler or CUDA memory history); see the module docstring."""

    def __init__(self, dev: torch.device, t0: float, wall0_ns: int) -> None:
        self.dev = dev
        self.t0 = t0
        self.wall0_ns = wall0_ns
        self.notes: list[str] = []
        self.events: list[_Block] = []
        self.trace: list[dict[str, Any]] | None = None
        self._stopped = False

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._stop()

    def _stop(self) -> None:
        raise NotImplementedError

    def timeline(self, tracer: Tracer) -> tuple[Timeline | None, list[dict[str, Any]] | None]:
        if not self.events:
            return None, self.trace
        return _allocator_timeline(self.events, tracer, cuda=self.dev.type == "cuda"), self.trace


class CpuProfilerSource(AllocatorSource):
    """The c10 CPU allocator's running total from ``torch.profiler`` memory events (profile_memory only)."""

    def __init__(self, dev: torch.device, t0: float, wall0_ns: int) -> None:
        super().__init__(dev, t0, wall0_ns)
        from torch.profiler import ProfilerActivity, profile

        self._prof: Any = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        self._prof.__enter__()

    def _stop(self) -> None:
        from torch._C._profiler import _EventType

        prof = self._prof
        try:
            prof.__exit__(None, None, None)
            tree = prof.profiler.kineto_results.experimental_event_tree()
        except Exception as e:
            self.notes.append(f"CPU allocator level not available (profiler: {e})")
            return
        raw: list[tuple[int, int, int, int, int, str]] = []
        alloc_tag = _EventType.Allocation
        stack = list(tree)
        while stack:
            node = stack.pop()
            if node.tag == alloc_tag:
                ef = node.extra_fields
                if ef.device.type == "cpu":
                    parent = node.parent
                    op = parent.name if parent is not None else ""
                    raw.append((node.start_time_ns, ef.id, ef.ptr, ef.alloc_size, ef.total_allocated, op))
            stack.extend(node.children)
        self._prof = None
        raw.sort(key=lambda r: (r[0], r[1]))
        if not raw:
            return
        # the c10 counter only counts while profiling and survives across sessions: take it relative to
        # its value just before our first event (the run builds its model inside the profiled region)
        offset = raw[0][4] - raw[0][3]
        w0 = self.wall0_ns
        self.events = [
            _Block((ns - w0) / 1e9, size, total - offset, ptr, op[6:] if op.startswith("aten::") else op)
            for ns, _, ptr, size, total, op in raw
        ]


class CudaHistorySource(AllocatorSource):
    """CUDA: ``_record_memory_history`` replayed into allocated/reserved/active totals (exact events).

    Sizes. ``alloc``, ``free_requested`` and ``free_completed`` trace entries carry the *requested* size,
    while ``allocated_bytes`` / ``active_bytes`` move by the block's size (c10/cuda/CUDACachingAllocator.cpp,
    ``DeviceCachingAllocator::malloc``: ``record_trace(TraceEntry::ALLOC, ..., orig_size, ...)`` next to
    ``allocated_bytes.increase(block->size)``; ``DeviceCachingAllocator::free``:
    ``allocated_bytes.decrease(block->size)`` and ``record_trace(TraceEntry::FREE_REQUESTED, ...,
    block->requested_size, ...)``). The block size is the request rounded to 512 B, or a whole unsplit free
    block (``should_split``). So the replay keeps the allocator's block layout: the segments and blocks at
    the first kept entry are reconstructed backwards from the snapshot's final ``segments``
    (``snapshot._reconstruct_initial_state``), then every entry is applied forwards at its real address
    (``_BlockLayout``), which gives each block's size.

    Anchoring. The totals are anchored at the *end*, at ``memory_stats()`` read right after ``_snapshot()``
    (nothing allocates between the two: the run has ended and the device is synchronised). When the history
    is complete, the replay then also starts at the counters read at the start; a difference is reported in
    the notes. When the ring buffer overflowed (``max_entries``: the oldest entries are overwritten,
    torch/cuda/memory.py ``_record_memory_history`` docstring, "Buffer behavior"), the trace starts mid-run
    and only the end anchor is right: the notes say so.

    Frames. Recorded with ``context=None``: the engine keeps no stack frames, and collecting a Python
    traceback per allocation (``context="alloc", stacks="python"``) costs time for nothing
    (torch/cuda/memory.py ``_record_memory_history``: ``context=None`` "Do not record any tracebacks").
    """

    #: ring buffer size of the memory history; a trace with this many entries has (probably) wrapped
    max_entries = 2_000_000

    def __init__(self, dev: torch.device, t0: float, wall0_ns: int) -> None:
        super().__init__(dev, t0, wall0_ns)
        torch.cuda.synchronize(dev)
        self.base = _cuda_counters(dev)
        #: counters read right after the snapshot (allocated, reserved, active, peak allocated)
        self.end: tuple[int, int, int] | None = None
        self.end_peak: int | None = None
        self.overflowed = False
        self.recording = False
        try:
            # recording is process-wide: torch 2.13's ``_record_memory_history_impl`` does not pass ``device``
            # on to ``torch._C._cuda_record_memory_history``; the replay reads this device's trace only
            torch.cuda.memory._record_memory_history(
                "all", context=None, stacks="python", max_entries=self.max_entries, device=dev,
                clear_history=True,
            )  # fmt: skip
            self.recording = True
        except Exception as e:
            self.notes.append(f"CUDA memory history not available ({e}); allocator level from counters")

    def _stop(self) -> None:
        if not self.recording:
            return
        try:
            torch.cuda.synchronize(self.dev)
            snap = torch.cuda.memory._snapshot(self.dev)
            s = torch.cuda.memory_stats(self.dev)
            self.end = _counters_of(s)
            self.end_peak = int(s.get("allocated_bytes.all.peak", 0))
        except Exception as e:
            self.notes.append(self._unreadable_note(e))
            return
        finally:
            with contextlib.suppress(Exception):
                torch.cuda.memory._record_memory_history(enabled=None, device=self.dev)
        self._replay(snap)

    def _unreadable_note(self, e: BaseException) -> str:
        """Say what the allocator level is when the history cannot be read (no counter series then)."""
        end = ""
        with contextlib.suppress(Exception):
            s = torch.cuda.memory_stats(self.dev)
            self.end = _counters_of(s)
            self.end_peak = int(s.get("allocated_bytes.all.peak", 0))
            end = (
                f"; memory_stats at the end: allocated {self.end[0]:,} B, reserved {self.end[1]:,} B, "
                f"peak allocated {self.end_peak:,} B"
            )
        return (
            f"CUDA memory history could not be read ({e}): no allocator-level series for this run "
            f"(counters were not read during the run){end}"
        )

    def _replay(self, snap: Any) -> None:
        from vggexplorer.core.allocator.snapshot import SnapshotError, parse_snapshot

        idx = self.dev.index or 0
        try:
            parsed = parse_snapshot(snap, name="memory history")
        except SnapshotError as e:
            self.notes.append(f"CUDA memory history unreadable ({e}); no allocator-level series")
            return
        entries = parsed.trace(idx) if idx < len(parsed.device_traces) else ()
        segments = [s for s in parsed.segments if s.device == idx]
        layout = _BlockLayout(segments, entries)
        if layout.issues:
            self.notes.append(
                "CUDA allocator replay: block layout inconsistent at "
                f"{len(layout.issues)} entries (first: {layout.issues[0]}); those use 512-B rounded sizes"
            )
        w0 = self.wall0_ns
        rows: list[tuple[float, int, int, int, int]] = []  # t, d_allocated, d_reserved, d_active, addr
        trace: list[dict[str, Any]] = []
        for entry, (da, dr, dact) in zip(entries, layout.deltas, strict=True):
            t = ((entry.time_us or 0) * 1000 - w0) / 1e9
            trace.append(
                {
                    "action": entry.action,
                    "addr": entry.addr,
                    "size": entry.size,
                    "stream": entry.stream,
                    "time_s": t,
                }
            )
            if entry.action in _COUNTED_ACTIONS:
                rows.append((t, da, dr, dact, entry.addr))
        self.trace = trace
        self.overflowed = len(entries) >= self.max_entries
        sums = (sum(r[1] for r in rows), sum(r[2] for r in rows), sum(r[3] for r in rows))
        if self.end is not None:
            # anchored at the end: base = end counters - what the kept entries changed
            base = tuple(e - d for e, d in zip(self.end, sums, strict=True))
        else:
            base = self.base
        if self.overflowed:
            self.notes.append(
                f"CUDA memory history overflowed its ring buffer ({len(entries):,} entries = max_entries): "
                "the trace starts mid-run, so the allocator level before its first entry is missing; "
                "totals are anchored at the memory_stats() read at the end"
            )
        elif base != self.base:
            names = ("allocated", "reserved", "active")
            diff = ", ".join(
                f"{n} {b - s:+,} B" for n, b, s in zip(names, base, self.base, strict=True) if b != s
            )
            self.notes.append(
                "CUDA allocator replay differs from memory_stats() (end-anchored start minus counters at the "
                f"start: {diff}); totals are anchored at the end"
            )
        alloc, reserved, active = base
        out: list[_Block] = []
        for t, da, dr, dact, addr in rows:
            alloc += da
            reserved += dr
            active += dact
            out.append(_Block(t, da, alloc, addr, "", reserved, active))
        self.events = out

    #: host-clock slack between the allocator's timestamp of an allocation and the tracer's row for it
    START_SLACK_S = 0.005

    def note_late_start(self, first_tensor_t: float | None) -> bool:
        """Say so when the kept history begins after the run's first tensor allocation (True then).

        The allocator stamps an allocation inside ``malloc``; the tracer's row for the same storage comes
        after the op returned, so a complete history has its first ``alloc`` no later than the tracer's first
        row. A later one means the oldest entries are gone although the count is below ``max_entries`` (the
        ring buffer was sized by someone else, or recording was restarted): totals stay anchored at the end.
        """
        if self.overflowed or first_tensor_t is None:
            return False
        first = next((float(r["time_s"]) for r in self.trace or () if r["action"] == "alloc"), None)
        if first is None or first <= first_tensor_t + self.START_SLACK_S:
            return False
        self.overflowed = True
        self.notes.append(
            f"CUDA memory history starts {first - first_tensor_t:.3f} s after the run's first tensor "
            "allocation: its oldest entries are missing (the trace starts mid-run); totals are anchored at "
            "the memory_stats() read at the end"
        )
        return True

    def timeline(self, tracer: Tracer) -> tuple[Timeline | None, list[dict[str, Any]] | None]:
        if self.events:
            self.note_late_start(tracer.t[0] if tracer.t else None)
            return super().timeline(tracer)
        return tracer.cuda_counter_timeline(), self.trace


#: trace actions that move a counter (others — oom, snapshot — are kept in the trace only)
_COUNTED_ACTIONS = frozenset(
    {
        "alloc",
        "free_requested",
        "free_completed",
        "segment_alloc",
        "segment_free",
        "segment_map",
        "segment_unmap",
    }
)


def _counters_of(s: Mapping[str, Any]) -> tuple[int, int, int]:
    return (
        int(s.get("allocated_bytes.all.current", 0)),
        int(s.get("reserved_bytes.all.current", 0)),
        int(s.get("active_bytes.all.current", 0)),
    )


def _cuda_counters(dev: torch.device) -> tuple[int, int, int]:
    return _counters_of(torch.cuda.memory_stats(dev))


class _BlockLayout:
    """The caching allocator's blocks, replayed forwards through a memory-history trace at real addresses.

    ``deltas[i]`` = (allocated, reserved, active) change of entry ``i`` in *block* bytes. Rules
    (c10/cuda/CUDACachingAllocator.cpp): ``round_size`` (512 B multiples); ``should_split`` — a small-pool
    block splits when the remainder is >= 512 B (kMinBlockSize), a large-pool block when it is > 1 MiB
    (kSmallSize), else the whole free block is allocated; ``free_block`` merges with free neighbours.
    ``allocated_bytes`` moves at ``alloc`` / ``free_requested``, ``active_bytes`` at ``alloc`` /
    ``free_completed`` (``free_block``), ``reserved_bytes`` at segment events. A 2 MiB segment is a small-pool
    segment (kSmallBuffer; large-pool segments are >= 10 MiB). Expandable segments (segment_map/unmap) move
    reserved only; their blocks are not modelled (512-B rounding is used there).
    """

    def __init__(self, segments: list[Any], entries: tuple[Any, ...]) -> None:
        from vggexplorer.core.allocator.caching import MIN_BLOCK_SIZE, SMALL_BUFFER, SMALL_SIZE, round_size
        from vggexplorer.core.allocator.snapshot_replay import (
            ReplayReport,
            _RBlock,
            _reconstruct_initial_state,
            _RSeg,
        )

        report = ReplayReport(device=0, events=len(entries), final_segments=len(segments))
        state = _reconstruct_initial_state(segments, entries, report)
        self.issues: list[str] = list(report.reconstruction_issues)
        self.deltas: list[tuple[int, int, int]] = []
        for i, e in enumerate(entries):
            a = e.action
            d = (0, 0, 0)
            if a == "alloc":
                size = round_size(e.size)
                seg = state.find(e.addr)
                j = state.block_index(seg, e.addr) if seg is not None else -1
                b = seg.blocks[j] if seg is not None and j >= 0 else None
                if seg is None or b is None or b.addr != e.addr or b.allocated or b.size < size:
                    self.issues.append(f"entry {i}: alloc at {e.addr:#x} finds no free block there")
                else:
                    rest = b.size - size
                    split = rest >= MIN_BLOCK_SIZE if seg.is_small else rest > SMALL_SIZE
                    if split:
                        seg.blocks.insert(j + 1, _RBlock(e.addr + size, rest, False, 0))
                        b.size = size
                    size = b.size
                    b.allocated = True
                    b.requested = e.size
                d = (size, 0, size)
            elif a in ("free_requested", "free_completed"):
                seg = state.find(e.addr)
                j = state.block_index(seg, e.addr) if seg is not None else -1
                b = seg.blocks[j] if seg is not None and j >= 0 else None
                known = seg is not None and b is not None and b.addr == e.addr and b.allocated
                if not known:
                    self.issues.append(f"entry {i}: {a} at {e.addr:#x} finds no allocated block there")
                size = b.size if known and b is not None else round_size(e.size)
                if a == "free_requested":
                    d = (-size, 0, 0)
                else:
                    if known and seg is not None and b is not None:
                        b.allocated = False
                        state.coalesce(seg, j)
                    d = (0, 0, -size)
            elif a == "segment_alloc":
                seg_new = _RSeg(e.addr, e.size, e.size == SMALL_BUFFER, [_RBlock(e.addr, e.size, False, 0)])
                if not state.add(seg_new):
                    self.issues.append(f"entry {i}: segment_alloc {e.addr:#x} overlaps a known segment")
                d = (0, e.size, 0)
            elif a == "segment_free":
                if e.addr in state.segs:
                    state.remove(e.addr)
                d = (0, -e.size, 0)
            elif a == "segment_map":
                d = (0, e.size, 0)
            elif a == "segment_unmap":
                d = (0, -e.size, 0)
            self.deltas.append(d)


def start_allocator_source(dev: torch.device, t0: float, wall0_ns: int) -> AllocatorSource | None:
    if dev.type == "cuda":
        return CudaHistorySource(dev, t0, wall0_ns)
    if dev.type == "cpu":
        return CpuProfilerSource(dev, t0, wall0_ns)
    return None


def _allocator_timeline(events: list[_Block], tracer: Tracer, *, cuda: bool) -> Timeline:
    """Columns from allocator events; module/phase/iteration from the tracer's context at each event's time,
    category from the tensor storage the block became (pointer, and size on CPU), else untracked workspace."""
    n = len(events)
    t = np.fromiter((e.t for e in events), np.float64, n)
    # keep time monotone (clock mapping jitter) so that plots and searches behave
    t = np.maximum.accumulate(t) if n else t
    ctx_t = np.asarray(tracer.ctx_t, np.float64)
    k = step_index(ctx_t, t) if len(ctx_t) else np.full(n, -1)
    k = np.clip(k, 0, None)
    have = len(ctx_t) > 0
    phase = np.asarray(tracer.ctx_phase, np.int8)[k] if have else np.zeros(n, np.int8)
    module = np.asarray(tracer.ctx_module, np.int32)[k] if have else np.full(n, -1, np.int32)
    iteration = np.asarray(tracer.ctx_iter, np.int32)[k] if have else np.full(n, -1, np.int32)
    op = np.asarray([tracer.intern(e.op) if e.op else -1 for e in events], np.int32)
    category = _match_categories(events, tracer, size_must_match=not cuda)
    tl = Timeline(
        t=t,
        delta=np.fromiter((e.delta for e in events), np.int64, n),
        total=np.fromiter((e.total for e in events), np.int64, n),
        phase=phase,
        category=category,
        op=op,
        module=module,
        iteration=iteration,
    )
    if cuda:
        tl.reserved = np.fromiter((e.reserved for e in events), np.int64, n)
        tl.active = np.fromiter((e.active for e in events), np.int64, n)
        # free_completed / segment rows change no allocated bytes; keep them (reserved moves there)
    return tl


def _match_categories(events: list[_Block], tracer: Tracer, *, size_must_match: bool) -> np.ndarray:
    """Category per allocator event: the tensor storage the block became, else untracked workspace.

    A tracer storage (pointer p, seen at time t after its op) is the latest allocator block at p allocated
    up to t (+ a small allowance for the clock mapping), with the same size on CPU (CUDA rounds sizes).
    """
    from bisect import bisect_right

    cats = tracer.resolved_categories()
    out = np.full(len(events), _CAT["untracked_workspace"], np.int8)
    allocs: dict[int, tuple[list[float], list[int]]] = {}
    for i, e in enumerate(events):
        if e.delta > 0:
            ts, idx = allocs.setdefault(e.ptr, ([], []))
            ts.append(e.t)
            idx.append(i)
    eps = 2e-4
    for sid, ptr in enumerate(tracer.sid_ptr):
        hit = allocs.get(ptr) if ptr else None
        if hit is None:
            continue
        ts, idx = hit
        tt = tracer.t[tracer.sid_alloc_row[sid]]
        k = bisect_right(ts, tt + eps) - 1
        while k >= 0 and size_must_match and events[idx[k]].delta != tracer.sid_nbytes[sid]:
            k -= 1
        if k >= 0:
            out[idx[k]] = cats[sid]
    # frees carry the category of their allocation
    last: dict[int, int] = {}
    for i, e in enumerate(events):
        if e.delta > 0:
            last[e.ptr] = int(out[i])
        elif e.delta < 0 and e.ptr in last:
            out[i] = last.pop(e.ptr)
    return out
