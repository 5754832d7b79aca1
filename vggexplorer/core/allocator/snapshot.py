"""Read, replay and write ``torch.cuda.memory._snapshot()`` pickles without trusting them.

* ``load_snapshot`` unpickles with an unpickler whose ``find_class`` refuses every class and callable, so
  a file can only produce dicts, lists, tuples, strings, numbers, booleans and None: nothing in it runs.
  Files over ``MAX_SNAPSHOT_BYTES``, truncated files and unexpected structures are refused with a
  ``SnapshotError`` that says what is wrong.
* ``replay`` runs a snapshot's allocator trace through ``CachingAllocatorModel`` and reports, event by
  event, whether the model put each allocation at the real address and predicted each real cudaMalloc
  (``segment_alloc``) with its size. A trace usually starts mid-run (the history is a ring buffer, or
  recording began late), so the allocator's state at the first event is reconstructed by walking the
  trace backwards from the final ``segments`` state.
* ``export_snapshot`` writes a measured or predicted run as a snapshot that pytorch.org/memory_viz opens
  (pickle protocol 4 with the opcodes its JavaScript unpickler knows; plain builtins only).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import sys
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any, NamedTuple

from vggexplorer.core.allocator.caching import (
    SMALL_BUFFER,
    SMALL_SIZE,
    AllocatorEvent,
    CachingAllocatorModel,
    SegmentInfo,
    round_size,
)
from vggexplorer.core.base.errors import VGGExplorerError
from vggexplorer.core.base.fileio import atomic_write_bytes, read_bounded

__all__ = [
    "MAX_SNAPSHOT_BYTES",
    "Frame",
    "Mismatch",
    "ReplayReport",
    "Snapshot",
    "SnapshotBlock",
    "SnapshotError",
    "SnapshotSegment",
    "TraceEntry",
    "TraceTuple",
    "build_snapshot_dict",
    "export_model_snapshot",
    "export_snapshot",
    "load_snapshot",
    "parse_snapshot",
    "replay",
    "replay_main",
    "trace_from_events",
]

MAX_SNAPSHOT_BYTES = 256 * 1024 * 1024
MAX_REPORTED_MISMATCHES = 20

ALLOCATED_STATES = frozenset({"active_allocated", "active_pending_free"})
KNOWN_BLOCK_STATES = frozenset({"active_allocated", "active_pending_free", "inactive"})


class SnapshotError(VGGExplorerError):
    """A snapshot file was refused: too big, truncated, not a snapshot, or it names a class/callable."""


# ---------------------------------------------------------------------------------------------- types


class Frame(NamedTuple):
    name: str
    filename: str
    line: int


@dataclass(frozen=True, slots=True)
class SnapshotBlock:
    address: int
    size: int
    requested_size: int
    state: str
    frames: tuple[Frame, ...] = ()

    @property
    def allocated(self) -> bool:
        return self.state in ALLOCATED_STATES


@dataclass(frozen=True, slots=True)
class SnapshotSegment:
    device: int
    address: int
    total_size: int
    stream: int
    segment_type: str
    blocks: tuple[SnapshotBlock, ...]
    is_expandable: bool = False

    @property
    def is_small(self) -> bool:
        return self.segment_type == "small"


@dataclass(frozen=True, slots=True)
class TraceEntry:
    action: str
    addr: int
    size: int
    stream: int = 0
    time_us: int | None = None
    frames: tuple[Frame, ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    segments: tuple[SnapshotSegment, ...]
    device_traces: tuple[tuple[TraceEntry, ...], ...]

    def trace(self, device: int = 0) -> tuple[TraceEntry, ...]:
        return self.device_traces[device] if device < len(self.device_traces) else ()


# ---------------------------------------------------------------------------------------------- loading


class _RefuseAllClasses(pickle.Unpickler):
    """Builds builtins only: any GLOBAL/STACK_GLOBAL/INST/OBJ (hence REDUCE, NEWOBJ, BUILD) is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise SnapshotError(
            f"refused: the file asks to load the Python object {module}.{name}; a memory snapshot holds "
            "plain data only, and this program never runs code from a file"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise SnapshotError("refused: the file uses pickle persistent ids; a memory snapshot does not")


def load_snapshot(source: str | os.PathLike[str] | bytes, *, max_bytes: int = MAX_SNAPSHOT_BYTES) -> Snapshot:
    """Read a snapshot pickle from a path or from bytes. Raises ``SnapshotError`` for anything unexpected."""
    name = "snapshot"
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        if len(data) > max_bytes:
            raise SnapshotError(f"refused: {len(data):,} bytes is over the {max_bytes:,}-byte limit")
    else:
        path = Path(source)
        name = path.name
        data = read_bounded(source, max_bytes, "snapshot", SnapshotError, refused="refused ")
    if not data:
        raise SnapshotError(f"refused {name}: the file is empty")
    if data[0] != 0x80:
        raise SnapshotError(
            f"refused {name}: not a pickle from torch.cuda.memory._snapshot() (it should start with the "
            "pickle protocol marker 0x80)"
        )
    _check_extension_registry()
    buf = io.BytesIO(data)
    try:
        obj = _RefuseAllClasses(buf).load()
    except SnapshotError:
        raise
    except EOFError as exc:
        raise SnapshotError(f"refused {name}: the file is truncated (the pickle ends early)") from exc
    except RecursionError as exc:
        raise SnapshotError(f"refused {name}: nested too deeply") from exc
    except MemoryError as exc:
        raise SnapshotError(f"refused {name}: it would need too much memory to read") from exc
    except Exception as exc:  # UnpicklingError, ValueError, KeyError, IndexError, TypeError ...
        msg = str(exc) or type(exc).__name__
        if "ran out of input" in msg.lower() or "truncated" in msg.lower():
            raise SnapshotError(f"refused {name}: the file is truncated ({msg})") from exc
        raise SnapshotError(f"refused {name}: not a readable pickle ({msg})") from exc
    trailing = len(data) - buf.tell()
    if trailing:
        raise SnapshotError(f"refused {name}: {trailing:,} unexpected bytes after the end of the pickle")
    return parse_snapshot(obj, name=name)


def _check_extension_registry() -> None:
    # EXT1/EXT2/EXT4 opcodes look objects up in copyreg's extension cache before calling find_class; the
    # cache can only hold entries when something registered extensions in this process. Refuse then.
    import copyreg

    if getattr(copyreg, "_extension_registry", None):
        raise SnapshotError("refused: copyreg extensions are registered in this process; cannot read safely")


def parse_snapshot(obj: object, *, name: str = "snapshot") -> Snapshot:
    """Check and convert an unpickled object (plain builtins) into a ``Snapshot``."""
    if isinstance(obj, list):  # the oldest format: segments only
        raw_segments: object = obj
        raw_traces: object = []
    elif isinstance(obj, dict):
        if "segments" not in obj:
            keys = ", ".join(sorted(str(k) for k in obj)[:8])
            raise SnapshotError(
                f"refused {name}: no 'segments' entry (keys: {keys or 'none'}); not a snapshot"
            )
        raw_segments = obj["segments"]
        raw_traces = obj.get("device_traces", [])
    else:
        raise SnapshotError(
            f"refused {name}: expected a dict with 'segments' and 'device_traces', got {type(obj).__name__}"
        )
    if not isinstance(raw_segments, list):
        raise SnapshotError(f"refused {name}: 'segments' is a {type(raw_segments).__name__}, not a list")
    if not isinstance(raw_traces, list):
        raise SnapshotError(f"refused {name}: 'device_traces' is a {type(raw_traces).__name__}, not a list")
    segments = tuple(_parse_segment(s, f"segments[{i}]", name) for i, s in enumerate(raw_segments))
    traces = []
    for d, raw in enumerate(raw_traces):
        if not isinstance(raw, list):
            raise SnapshotError(f"refused {name}: device_traces[{d}] is a {type(raw).__name__}, not a list")
        traces.append(tuple(_parse_entry(e, f"device_traces[{d}][{i}]", name) for i, e in enumerate(raw)))
    return Snapshot(segments, tuple(traces))


def _bad(name: str, where: str, what: str) -> SnapshotError:
    return SnapshotError(f"refused {name}: {where} {what}")


def _get_int(d: dict[Any, Any], key: str, where: str, name: str, default: int | None = None) -> int:
    v = d.get(key, default)
    if v is None:
        raise _bad(name, where, f"has no '{key}'")
    if not isinstance(v, int) or isinstance(v, bool):
        raise _bad(name, f"{where}.{key}", f"should be an integer, got {type(v).__name__}")
    return v


def _parse_frames(raw: object, where: str, name: str) -> tuple[Frame, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _bad(name, f"{where}.frames", f"should be a list, got {type(raw).__name__}")
    out = []
    for f in raw:
        if not isinstance(f, dict):
            raise _bad(name, f"{where}.frames", "should hold dicts")
        n, fn, ln = f.get("name", ""), f.get("filename", ""), f.get("line", 0)
        if not isinstance(n, str) or not isinstance(fn, str) or not isinstance(ln, int):
            raise _bad(name, f"{where}.frames", "should hold name/filename strings and line integers")
        out.append(Frame(n, fn, ln))
    return tuple(out)


def _parse_segment(raw: object, where: str, name: str) -> SnapshotSegment:
    if not isinstance(raw, dict):
        raise _bad(name, where, f"should be a dict, got {type(raw).__name__}")
    address = _get_int(raw, "address", where, name)
    total = _get_int(raw, "total_size", where, name)
    if address < 0 or total <= 0:
        raise _bad(name, where, f"has address {address} and total_size {total}; expected >= 0 and > 0")
    stream = _get_int(raw, "stream", where, name, 0)
    device = _get_int(raw, "device", where, name, 0)
    seg_type = raw.get("segment_type")
    if seg_type not in ("small", "large"):
        seg_type = "small" if total == SMALL_BUFFER else "large"
    blocks_raw = raw.get("blocks")
    if not isinstance(blocks_raw, list):
        raise _bad(name, where, "has no 'blocks' list")
    blocks = []
    cursor = address
    for j, b in enumerate(blocks_raw):
        bw = f"{where}.blocks[{j}]"
        if not isinstance(b, dict):
            raise _bad(name, bw, f"should be a dict, got {type(b).__name__}")
        size = _get_int(b, "size", bw, name)
        if size <= 0:
            raise _bad(name, f"{bw}.size", "should be positive")
        baddr = _get_int(b, "address", bw, name, cursor)
        if baddr != cursor:
            raise _bad(name, f"{bw}.address", f"is {baddr:#x}, but the blocks before it end at {cursor:#x}")
        state = b.get("state")
        if not isinstance(state, str):
            raise _bad(name, bw, "has no 'state' string")
        requested = _get_int(b, "requested_size", bw, name, size)
        blocks.append(SnapshotBlock(baddr, size, requested, state, _parse_frames(b.get("frames"), bw, name)))
        cursor += size
    if cursor - address != total:
        raise _bad(name, where, f"blocks add up to {cursor - address:,} bytes, not total_size {total:,}")
    return SnapshotSegment(
        device, address, total, stream, seg_type, tuple(blocks), bool(raw.get("is_expandable", False))
    )


def _parse_entry(raw: object, where: str, name: str) -> TraceEntry:
    if not isinstance(raw, dict):
        raise _bad(name, where, f"should be a dict, got {type(raw).__name__}")
    action = raw.get("action")
    if not isinstance(action, str):
        raise _bad(name, where, "has no 'action' string")
    if action == "oom":
        addr = _get_int(raw, "device_free", where, name, raw.get("addr", 0))
    else:
        addr = _get_int(raw, "addr", where, name, 0)
    size = _get_int(raw, "size", where, name, 0)
    if size < 0 or addr < 0:
        raise _bad(name, where, "has a negative address or size")
    if size >= 2**64 or addr >= 2**64:
        raise _bad(name, where, "has an address or size beyond 64 bits")
    stream = _get_int(raw, "stream", where, name, 0)
    t = raw.get("time_us")
    if t is not None and (not isinstance(t, int) or isinstance(t, bool)):
        raise _bad(name, f"{where}.time_us", "should be an integer")
    return TraceEntry(action, addr, size, stream, t, _parse_frames(raw.get("frames"), where, name))


# ---------------------------------------------------------------------------------------------- replay


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


# ---------------------------------------------------------------------------------------------- export

# (action, addr, size, time_us, frames_text). action: alloc, free_requested, free_completed, free (both),
# segment_alloc, segment_free, oom (addr = free device bytes), snapshot. frames_text: one frame per line,
# "file:line:function" or any text.
TraceTuple = tuple[str, int, int, int, str]

_FRAME_RE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<name>.*)$")


def _frames_from_text(text: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        m = _FRAME_RE.match(line)
        if m:
            out.append({"name": m["name"], "filename": m["file"], "line": int(m["line"])})
        else:
            out.append({"name": line, "filename": "??", "line": 0})
    return out


def trace_from_events(
    events: Iterable[AllocatorEvent], frames_of: Callable[[object], str] | None = None
) -> list[TraceTuple]:
    """Model events -> export tuples; ``frames_of(tag)`` gives the frames text (default: ``str(tag)``)."""
    fo = frames_of or (lambda tag: "" if tag is None else str(tag))
    return [(e.action, e.addr, e.size, e.time_us, fo(e.tag)) for e in events]


def _segment_dict(
    device: int, address: int, total: int, is_small: bool, blocks: list[dict[str, Any]]
) -> dict[str, Any]:
    allocated = sum(b["size"] for b in blocks if b["state"] == "active_allocated")
    requested = sum(b["requested_size"] for b in blocks if b["state"] == "active_allocated")
    return {
        "device": device,
        "address": address,
        "total_size": total,
        "allocated_size": allocated,
        "active_size": allocated,
        "requested_size": requested,
        "stream": 0,
        "segment_type": "small" if is_small else "large",
        "segment_pool_id": (0, 0),
        "is_expandable": False,
        "frames": [],
        "blocks": blocks,
    }


def _block_dict(address: int, size: int, requested: int, allocated: bool, frames: str) -> dict[str, Any]:
    return {
        "address": address,
        "size": size,
        "requested_size": requested if allocated else 0,
        "state": "active_allocated" if allocated else "inactive",
        "frames": _frames_from_text(frames) if allocated else [],
    }


def _segments_from_trace(trace: Sequence[TraceTuple], device: int) -> list[dict[str, Any]]:
    """Final segments implied by a trace alone (block sizes: requests rounded to 512 B)."""
    segs: dict[int, int] = {}
    live: dict[int, tuple[int, str]] = {}
    for action, addr, size, _t, frames in trace:
        if action == "segment_alloc":
            segs[addr] = size
        elif action == "segment_free":
            segs.pop(addr, None)
        elif action == "alloc":
            live[addr] = (size, frames)
        elif action in ("free_completed", "free"):
            live.pop(addr, None)
    starts = sorted(segs)
    per_seg: dict[int, list[int]] = {a: [] for a in starts}
    orphans = []
    for addr in sorted(live):
        i = bisect_right(starts, addr) - 1
        if i >= 0 and addr < starts[i] + segs[starts[i]]:
            per_seg[starts[i]].append(addr)
        else:
            orphans.append(addr)
    out = []
    for s in starts:
        end = s + segs[s]
        blocks: list[dict[str, Any]] = []
        cursor = s
        addrs = per_seg[s]
        for k, a in enumerate(addrs):
            req, frames = live[a]
            limit = addrs[k + 1] if k + 1 < len(addrs) else end
            bsize = min(round_size(req), limit - a)
            if a > cursor:
                blocks.append(_block_dict(cursor, a - cursor, 0, False, ""))
            blocks.append(_block_dict(a, bsize, req, True, frames))
            cursor = a + bsize
        if cursor < end:
            blocks.append(_block_dict(cursor, end - cursor, 0, False, ""))
        # Large-pool segments are 20 MiB or at least 10 MiB: exactly 2 MiB means the small pool.
        out.append(_segment_dict(device, s, segs[s], segs[s] == SMALL_BUFFER, blocks))
    for a in orphans:  # allocations made before the trace's segments: one pseudo-segment each
        req, frames = live[a]
        bsize = round_size(req)
        out.append(
            _segment_dict(device, a, bsize, bsize <= SMALL_SIZE, [_block_dict(a, bsize, req, True, frames)])
        )
    out.sort(key=lambda d: d["address"])
    return out


def build_snapshot_dict(
    trace: Iterable[TraceTuple],
    segments: Sequence[SegmentInfo] | None = None,
    *,
    device: int = 0,
    frames_of: Callable[[object], str] | None = None,
) -> dict[str, Any]:
    """The snapshot dictionary (plain builtins) for a trace and, optionally, the final model segments."""
    trace_list = list(trace)
    entries: list[dict[str, Any]] = []
    frames_cache: dict[str, list[dict[str, Any]]] = {}
    for action, addr, size, t, frames in trace_list:
        fl = frames_cache.get(frames)
        if fl is None:
            fl = frames_cache[frames] = _frames_from_text(frames)
        acts = ("free_requested", "free_completed") if action == "free" else (action,)
        for act in acts:
            e: dict[str, Any] = {"action": act}
            e["device_free" if act == "oom" else "addr"] = int(addr)
            e.update({"size": int(size), "stream": 0, "time_us": int(t), "frames": fl})
            entries.append(e)
    if segments is None:
        seg_dicts = _segments_from_trace(trace_list, device)
    else:
        fo = frames_of or (lambda tag: "" if tag is None else str(tag))
        seg_dicts = [
            _segment_dict(
                device,
                s.address,
                s.total_size,
                s.is_small,
                [_block_dict(b.address, b.size, b.requested_size, b.allocated, fo(b.tag)) for b in s.blocks],
            )
            for s in segments
        ]
    traces: list[list[dict[str, Any]]] = [[] for _ in range(device + 1)]
    traces[device] = entries
    return {"segments": seg_dicts, "device_traces": traces}


def export_snapshot(
    trace: Iterable[TraceTuple],
    path: str | os.PathLike[str],
    *,
    segments: Sequence[SegmentInfo] | None = None,
    device: int = 0,
    frames_of: Callable[[object], str] | None = None,
) -> None:
    """Write a snapshot pickle that pytorch.org/memory_viz opens.

    ``trace``: (action, addr, size, time_us, frames_text) tuples in order. ``segments``: the allocator's
    final state (``CachingAllocatorModel.segments()``); without it the final state is derived from the trace
    (block sizes rounded to 512 B, allocations outside any traced segment get a segment of their own).
    Protocol 4: memory_viz's JavaScript unpickler accepts protocols 2 to 4 only.
    """
    data = build_snapshot_dict(trace, segments, device=device, frames_of=frames_of)
    atomic_write_bytes(Path(path), pickle.dumps(data, protocol=4))


def export_model_snapshot(
    model: CachingAllocatorModel,
    path: str | os.PathLike[str],
    *,
    frames_of: Callable[[object], str] | None = None,
) -> None:
    """Export a model run (created with ``record_history=True``) with its exact final state."""
    if not model.record_history:
        raise ValueError("the model was created without record_history=True; it has no trace to export")
    export_snapshot(
        trace_from_events(model.events, frames_of), path, segments=model.segments(), frames_of=frames_of
    )


# ---------------------------------------------------------------------------------------------- CLI hook


def replay_main(path: str, as_json: bool = False) -> int:
    """``vggexplorer replay SNAPSHOT.pickle [--json]``: 0 = replay matches, 1 = it does not, 2 = refused."""
    try:
        snap = load_snapshot(path)
    except SnapshotError as exc:
        if as_json:
            print(json.dumps({"ok": False, "refused": True, "error": str(exc)}))
        else:
            print(f"error: {exc}", file=sys.stderr)
        return 2
    report = replay(snap)
    if as_json:
        d = report.to_dict()
        d["file"] = str(path)
        print(json.dumps(d, indent=2))
    else:
        print(report.format_text(Path(path).name))
    return 0 if report.matches else 1
