"""Read ``torch.cuda.memory._snapshot()`` pickles without trusting them.

``load_snapshot`` unpickles with an unpickler whose ``find_class`` refuses every class and callable, so a file
can only produce dicts, lists, tuples, strings, numbers, booleans and None: nothing in it runs. Files over
``MAX_SNAPSHOT_BYTES``, truncated files and unexpected structures are refused with a ``SnapshotError`` that
says what is wrong. ``parse_snapshot`` turns the plain objects into frozen :class:`Snapshot` records.
Replaying a snapshot is :mod:`.snapshot_replay`; writing one is :mod:`.snapshot_export`.
"""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from vggexplorer.core.allocator.caching import (
    SMALL_BUFFER,
)
from vggexplorer.core.base.errors import VGGExplorerError
from vggexplorer.core.base.fileio import read_bounded

__all__ = [
    "MAX_SNAPSHOT_BYTES",
    "Frame",
    "Snapshot",
    "SnapshotBlock",
    "SnapshotError",
    "SnapshotSegment",
    "TraceEntry",
    "load_snapshot",
    "parse_snapshot",
]

MAX_SNAPSHOT_BYTES = 256 * 1024 * 1024
MAX_REPORTED_MISMATCHES = 20

ALLOCATED_STATES = frozenset({"active_allocated", "active_pending_free"})


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
