"""Write a measured or predicted run as a snapshot that pytorch.org/memory_viz opens.

Pickle protocol 4 with the opcodes its JavaScript unpickler knows; plain builtins only.
"""

from __future__ import annotations

import os
import pickle
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from vggexplorer.core.allocator.caching import (
    SMALL_BUFFER,
    SMALL_SIZE,
    AllocatorEvent,
    CachingAllocatorModel,
    SegmentInfo,
    round_size,
)
from vggexplorer.core.base.fileio import atomic_write_bytes

__all__ = [
    "TraceTuple",
    "build_snapshot_dict",
    "export_model_snapshot",
    "export_snapshot",
    "trace_from_events",
]


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
