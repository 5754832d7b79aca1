"""Replay a snapshot's allocator trace through :class:`CachingAllocatorModel` and check it event by event.

``replay`` reports whether the model put each allocation at the real address and predicted each real
cudaMalloc (``segment_alloc``) with its size. A trace usually starts mid-run (the history is a ring buffer,
or recording began late), so the allocator's state at the first event is reconstructed by walking the trace
backwards from the final ``segments`` state.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from operator import attrgetter
from typing import Any

from vggexplorer.core.allocator.caching import (
    SMALL_BUFFER,
    SMALL_SIZE,
    CachingAllocatorModel,
    SegmentInfo,
    round_size,
)
from vggexplorer.core.allocator.snapshot import (
    MAX_REPORTED_MISMATCHES,
    Snapshot,
    SnapshotSegment,
    TraceEntry,
)

__all__ = ["Mismatch", "ReplayReport", "replay"]


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One disagreement between the model and the real trace. ``index`` is the trace event's index."""

    index: int
    kind: str
    message: str


@dataclass
class ReplayReport:
    device: int
    events: int
    allocs: int = 0
    allocs_matched: int = 0
    frees: int = 0
    frees_unknown: int = 0
    segment_allocs_real: int = 0
    segment_allocs_predicted: int = 0
    segment_allocs_wrong_size: int = 0
    segment_allocs_missed: int = 0
    segment_allocs_extra: int = 0
    segment_frees_real: int = 0
    segment_frees_applied: int = 0
    ooms_real: int = 0
    initial_segments: int = 0
    initial_allocated_blocks: int = 0
    final_segments: int = 0
    final_state_matches: bool = False
    final_state_difference: str = ""
    mismatches_total: int = 0
    first_mismatches: list[Mismatch] = field(default_factory=list)
    reconstruction_issues: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def allocs_mismatched(self) -> int:
        return self.allocs - self.allocs_matched

    @property
    def matches(self) -> bool:
        """All allocs at the real address, all real segment_allocs predicted with their size, none extra."""
        return (
            self.mismatches_total == 0
            and self.allocs_matched == self.allocs
            and self.segment_allocs_predicted == self.segment_allocs_real
            and self.segment_allocs_extra == 0
            and not self.reconstruction_issues
            and self.final_state_matches
        )

    def add_mismatch(self, index: int, kind: str, message: str) -> None:
        self.mismatches_total += 1
        if len(self.first_mismatches) < MAX_REPORTED_MISMATCHES:
            self.first_mismatches.append(Mismatch(index, kind, message))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["allocs_mismatched"] = self.allocs_mismatched
        d["matches"] = self.matches
        return d

    def format_text(self, title: str = "") -> str:
        lines = [f"Replay of {title or 'snapshot'} (device {self.device}): {self.events:,} trace events"]
        lines.append(
            f"  state at trace start: {self.initial_segments} segments, {self.initial_allocated_blocks} "
            f"allocated blocks (reconstructed backwards from {self.final_segments} final segments)"
        )
        lines.append(f"  allocs:        {self.allocs_matched:,} of {self.allocs:,} at the real address")
        lines.append(
            f"  segment_alloc: {self.segment_allocs_predicted} of {self.segment_allocs_real} real "
            f"cudaMallocs predicted with their size ({self.segment_allocs_missed} missed, "
            f"{self.segment_allocs_wrong_size} wrong size, "
            f"{self.segment_allocs_extra} predicted but not real)"
        )
        lines.append(
            f"  segment_free:  {self.segment_frees_real} real, "
            f"{self.segment_frees_applied} applied to the model"
        )
        lines.append(
            f"  frees:         {self.frees:,} ({self.frees_unknown} of blocks the model did not know)"
        )
        if self.ooms_real:
            lines.append(
                f"  ooms:          {self.ooms_real} in the real trace (the model has no capacity set)"
            )
        fs = (
            "matches the snapshot's segments and blocks"
            if self.final_state_matches
            else (f"DIFFERS: {self.final_state_difference}")
        )
        lines.append(f"  final state:   {fs}")
        for issue in self.reconstruction_issues[:MAX_REPORTED_MISMATCHES]:
            lines.append(f"  reconstruction: {issue}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        if self.first_mismatches:
            lines.append(f"  first mismatches ({self.mismatches_total} in all):")
            for m in self.first_mismatches:
                lines.append(f"    event {m.index}: {m.kind}: {m.message}")
        lines.append(f"  result: {'MATCH' if self.matches else 'MISMATCH'} ({self.elapsed_s * 1000:.0f} ms)")
        return "\n".join(lines)


class _RBlock:
    __slots__ = ("addr", "allocated", "requested", "size")

    def __init__(self, addr: int, size: int, allocated: bool, requested: int) -> None:
        self.addr = addr
        self.size = size
        self.allocated = allocated
        self.requested = requested


class _RSeg:
    __slots__ = ("addr", "blocks", "is_small", "size")

    def __init__(self, addr: int, size: int, is_small: bool, blocks: list[_RBlock]) -> None:
        self.addr = addr
        self.size = size
        self.is_small = is_small
        self.blocks = blocks


_block_addr = attrgetter("addr")


class _ReverseState:
    """The allocator's segments/blocks, edited backwards one trace event at a time."""

    def __init__(self) -> None:
        self.segs: dict[int, _RSeg] = {}
        self.starts: list[int] = []

    def add(self, seg: _RSeg) -> bool:
        i = bisect_right(self.starts, seg.addr)
        if i > 0 and self.segs[self.starts[i - 1]].addr + self.segs[self.starts[i - 1]].size > seg.addr:
            return False
        if i < len(self.starts) and self.starts[i] < seg.addr + seg.size:
            return False
        self.segs[seg.addr] = seg
        self.starts.insert(i, seg.addr)
        return True

    def remove(self, addr: int) -> None:
        del self.segs[addr]
        self.starts.remove(addr)

    def find(self, addr: int) -> _RSeg | None:
        i = bisect_right(self.starts, addr) - 1
        if i < 0:
            return None
        seg = self.segs[self.starts[i]]
        return seg if addr < seg.addr + seg.size else None

    @staticmethod
    def block_index(seg: _RSeg, addr: int) -> int:
        return bisect_right(seg.blocks, addr, key=_block_addr) - 1

    @staticmethod
    def coalesce(seg: _RSeg, i: int) -> None:
        blocks = seg.blocks
        b = blocks[i]
        if i + 1 < len(blocks) and not blocks[i + 1].allocated:
            b.size += blocks[i + 1].size
            del blocks[i + 1]
        if i > 0 and not blocks[i - 1].allocated:
            blocks[i - 1].size += b.size
            del blocks[i]


def _reconstruct_initial_state(
    segments: Sequence[SnapshotSegment], trace: Sequence[TraceEntry], report: ReplayReport
) -> _ReverseState:
    state = _ReverseState()
    for s in segments:
        blocks = [_RBlock(b.address, b.size, b.allocated, b.requested_size) for b in s.blocks]
        if not state.add(_RSeg(s.address, s.total_size, s.is_small, blocks)):
            report.reconstruction_issues.append(f"final segment {s.address:#x} overlaps another")

    issues = report.reconstruction_issues
    dropped = 0

    def issue(i: int, msg: str) -> None:
        nonlocal dropped
        if len(issues) < MAX_REPORTED_MISMATCHES:
            issues.append(f"event {i}: {msg}")
        else:
            dropped += 1

    for i in range(len(trace) - 1, -1, -1):
        e = trace[i]
        a = e.action
        if a == "alloc":
            seg = state.find(e.addr)
            if seg is None:
                issue(i, f"alloc at {e.addr:#x} lies in no segment")
                continue
            j = state.block_index(seg, e.addr)
            b = seg.blocks[j]
            if b.addr != e.addr or not b.allocated:
                issue(i, f"alloc at {e.addr:#x}: no allocated block starts there at that point")
                continue
            b.allocated = False
            state.coalesce(seg, j)
        elif a == "free_completed":
            seg = state.find(e.addr)
            if seg is None:
                issue(i, f"free at {e.addr:#x} lies in no segment")
                continue
            j = state.block_index(seg, e.addr)
            f = seg.blocks[j]
            rounded = round_size(e.size)
            end = f.addr + f.size
            if f.allocated or e.addr + rounded > end:
                issue(i, f"free at {e.addr:#x}: no free room of {rounded:,} bytes there at that point")
                continue
            size = rounded
            rest = end - (e.addr + rounded)
            # A large-pool block never leaves a free piece of 1 MiB or less (should_split needs > 1 MiB and
            # merges only grow pieces), so such a remainder was part of the freed block.
            if not seg.is_small and 0 < rest <= SMALL_SIZE:
                size += rest
            pieces = []
            if e.addr > f.addr:
                pieces.append(_RBlock(f.addr, e.addr - f.addr, False, 0))
            pieces.append(_RBlock(e.addr, size, True, e.size))
            if end > e.addr + size:
                pieces.append(_RBlock(e.addr + size, end - e.addr - size, False, 0))
            seg.blocks[j : j + 1] = pieces
        elif a == "segment_alloc":
            seg = state.segs.get(e.addr)
            if seg is None or seg.size != e.size:
                issue(i, f"segment_alloc {e.addr:#x} ({e.size:,} bytes) is not a known segment at that point")
                continue
            if len(seg.blocks) != 1 or seg.blocks[0].allocated:
                issue(i, f"segment {e.addr:#x} still holds allocations before its segment_alloc")
            state.remove(e.addr)
        elif a == "segment_free":
            if not state.add(
                _RSeg(e.addr, e.size, e.size == SMALL_BUFFER, [_RBlock(e.addr, e.size, False, 0)])
            ):
                issue(i, f"segment_free {e.addr:#x} overlaps a segment that exists at that point")
        elif a in ("segment_map", "segment_unmap"):
            issue(i, f"{a}: expandable segments are not modelled")
    if dropped:
        issues.append(f"... and {dropped} more")
    return state


def _pick_device(snapshot: Snapshot) -> int:
    best, best_n = 0, -1
    for d, tr in enumerate(snapshot.device_traces):
        if len(tr) > best_n:
            best, best_n = d, len(tr)
    return best


def replay(
    snapshot: Snapshot,
    device: int | None = None,
    *,
    model_cls: type[CachingAllocatorModel] = CachingAllocatorModel,
) -> ReplayReport:
    """Replay one device's trace through the allocator model and compare every decision.

    ``device``: None picks the device with the most trace events. ``model_cls``: the model to test (a
    subclass with a changed rule must fail on real data; the tests use that).
    """
    t0 = time.perf_counter()
    dev = _pick_device(snapshot) if device is None else device
    trace = snapshot.trace(dev)
    segments = [s for s in snapshot.segments if s.device == dev]
    report = ReplayReport(device=dev, events=len(trace), final_segments=len(segments))
    if not trace:
        report.notes.append("the snapshot has no trace events (was _record_memory_history enabled?)")
    streams = {e.stream for e in trace} | {s.stream for s in segments}
    if len(streams) > 1:
        report.notes.append(f"{len(streams)} streams in the trace; the model simulates a single stream")
    if any(s.is_expandable for s in segments):
        report.notes.append("expandable segments are not modelled")

    state = _reconstruct_initial_state(segments, trace, report)
    report.initial_segments = len(state.segs)

    pending: list[tuple[int, int, int]] = []  # (event index, addr, size) of real segment_allocs
    current = [0]

    def provide(size: int, is_small: bool) -> int | None:
        if pending:
            idx, addr, real_size = pending.pop(0)
            if real_size == size:
                report.segment_allocs_predicted += 1
            else:
                report.segment_allocs_wrong_size += 1
                report.add_mismatch(
                    idx, "segment_alloc_size", f"real cudaMalloc of {real_size:,} bytes, model {size:,}"
                )
            return addr
        report.segment_allocs_extra += 1
        report.add_mismatch(
            current[0], "segment_alloc_extra", f"model cudaMallocs {size:,} bytes, reality none"
        )
        return None

    model = model_cls(segment_address_provider=provide)
    for addr in state.starts:
        seg = state.segs[addr]
        allocs = [(b.addr, b.size, b.requested) for b in seg.blocks if b.allocated]
        try:
            model.add_segment(seg.addr, seg.size, is_small=seg.is_small, allocations=allocs)
        except ValueError as exc:
            report.reconstruction_issues.append(f"segment {seg.addr:#x} cannot start the replay: {exc}")
            continue
        report.initial_allocated_blocks += len(allocs)
    live = {b.addr: b for b in model.allocated_blocks()}

    ignored: dict[str, int] = {}
    for i, e in enumerate(trace):
        a = e.action
        if a == "alloc":
            current[0] = i
            report.allocs += 1
            if e.size <= 0:
                report.add_mismatch(i, "alloc_size", f"alloc of {e.size} bytes at {e.addr:#x}")
                continue
            blk = model.malloc(e.size)
            if blk.addr == e.addr:
                report.allocs_matched += 1
            else:
                report.add_mismatch(
                    i, "alloc_address", f"{e.size:,} bytes: real {e.addr:#x}, model {blk.addr:#x}"
                )
            if e.addr in live:
                report.add_mismatch(i, "alloc_twice", f"{e.addr:#x} allocated again without a free")
            live[e.addr] = blk
            while pending:
                idx, addr, size = pending.pop(0)
                report.segment_allocs_missed += 1
                report.add_mismatch(
                    idx, "segment_alloc_missed", f"real cudaMalloc {addr:#x} ({size:,} bytes)"
                )
        elif a == "free_completed":
            report.frees += 1
            freed = live.pop(e.addr, None)
            if freed is None:
                report.frees_unknown += 1
                report.add_mismatch(
                    i, "free_unknown", f"free of {e.addr:#x}, which the model never allocated"
                )
            else:
                try:
                    model.free(freed)
                except (KeyError, ValueError) as exc:
                    report.add_mismatch(i, "free_unknown", str(exc))
        elif a == "segment_alloc":
            report.segment_allocs_real += 1
            pending.append((i, e.addr, e.size))
        elif a == "segment_free":
            report.segment_frees_real += 1
            if model.release_segment(e.addr):
                report.segment_frees_applied += 1
            else:
                report.add_mismatch(i, "segment_free", f"model segment {e.addr:#x} is not entirely free")
        elif a == "oom":
            report.ooms_real += 1
        elif a not in ("free_requested", "snapshot"):
            ignored[a] = ignored.get(a, 0) + 1
    for idx, addr, size in pending:
        report.segment_allocs_missed += 1
        report.add_mismatch(idx, "segment_alloc_missed", f"real cudaMalloc {addr:#x} ({size:,} bytes)")
    for a, n in sorted(ignored.items()):
        report.notes.append(f"ignored {n} '{a}' events")

    report.final_state_difference = _compare_final_state(model.segments(), segments)
    report.final_state_matches = not report.final_state_difference
    report.elapsed_s = time.perf_counter() - t0
    return report


def _compare_final_state(model_segs: Sequence[SegmentInfo], real: Sequence[SnapshotSegment]) -> str:
    real_sorted = sorted(real, key=attrgetter("address"))
    if len(model_segs) != len(real_sorted):
        return f"model has {len(model_segs)} segments, the snapshot {len(real_sorted)}"
    for ms, rs in zip(model_segs, real_sorted, strict=True):
        if (ms.address, ms.total_size) != (rs.address, rs.total_size):
            return (
                f"segment {rs.address:#x} ({rs.total_size:,} B) "
                f"vs model {ms.address:#x} ({ms.total_size:,} B)"
            )
        mb = [(b.address, b.size, b.allocated) for b in ms.blocks]
        rb = [(b.address, b.size, b.allocated) for b in rs.blocks]
        if mb != rb:
            for x, y in zip(mb, rb, strict=False):
                if x != y:
                    return f"segment {rs.address:#x}: block {y} vs model {x} (address, size, allocated)"
            return f"segment {rs.address:#x}: {len(rb)} blocks vs model {len(mb)}"
    return ""
