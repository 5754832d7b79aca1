"""A model of PyTorch's CUDA caching allocator (native backend, one stream, default settings).

Pure Python, no torch import. The rules follow ``c10/cuda/CUDACachingAllocator.cpp`` (read in PyTorch's
repository; the generic ``c10/core/CachingDeviceAllocator.h`` of newer releases keeps the same rules):

* ``round_size``: a request rounds up to a multiple of 512 B (at least 512 B). ``roundup_power2_divisions``
  is off by default and not modelled.
* ``get_pool``: a rounded size of at most 1 MiB (``kSmallSize``) goes to the small pool, else the large pool.
* ``get_allocation_size``: a new segment (cudaMalloc) is 2 MiB for small requests, 20 MiB
  (``kLargeBuffer``) for requests under 10 MiB (``kMinLargeAlloc``), else the request rounded up to 2 MiB.
* ``get_free_block``: best fit in the pool's free set ordered by (stream, size, address): the smallest free
  block at least as large as the request, the lowest address among equal sizes. With ``max_split_size``
  unset (the default) there is no upper bound: a 2 MiB request may be cut from a 200 MiB free block.
  With ``max_split_size`` set: a request below it never takes a block at or above it, and a request at or
  above it only takes a block smaller than request + ``max_non_split_rounding_size`` (default 20 MiB).
* ``should_split``: small pool splits when the remainder is >= 512 B; large pool when the request is below
  ``max_split_size`` and the remainder is > 1 MiB. An unsplit remainder stays inside the allocated block
  (counted in ``allocated_bytes``).
* ``free_block``: merge with free neighbours of the same segment.
* Whole free segments stay cached until ``empty_cache()`` or the out-of-memory path: when cudaMalloc fails
  (here: ``capacity`` would be exceeded) the allocator first frees oversize cached blocks (only with
  ``max_split_size`` set), then frees every cached unsplit segment (large pool, then small, each in
  (size, address) order) and retries once, counting ``num_alloc_retries``; if that fails too it counts
  ``num_ooms`` and raises.
* Statistics mirror ``torch.cuda.memory_stats()`` names, e.g. ``allocated_bytes.all.peak``.

Not modelled: several streams and ``record_stream`` (events), CUDA graph private pools, expandable
segments, the garbage-collection threshold (only active with ``set_per_process_memory_fraction`` and a
``garbage_collection_threshold`` setting; off by default), ``roundup_power2_divisions``, and allocations
that bypass the allocator (CUDA context, cuBLAS/cuDNN handles are made through it but happen in C++).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "LARGE_BUFFER",
    "MIN_BLOCK_SIZE",
    "MIN_LARGE_ALLOC",
    "ROUND_LARGE",
    "SMALL_BUFFER",
    "SMALL_SIZE",
    "AllocatorEvent",
    "AllocatorOOM",
    "Block",
    "BlockInfo",
    "CachingAllocatorModel",
    "SegmentInfo",
    "allocation_size",
    "is_small_request",
    "round_size",
]

MiB = 1024 * 1024

# Constants from CUDACachingAllocator.cpp (names there: kMinBlockSize, kSmallSize, kSmallBuffer,
# kLargeBuffer, kMinLargeAlloc, kRoundLarge).
MIN_BLOCK_SIZE = 512
SMALL_SIZE = 1 * MiB
SMALL_BUFFER = 2 * MiB
LARGE_BUFFER = 20 * MiB
MIN_LARGE_ALLOC = 10 * MiB
ROUND_LARGE = 2 * MiB

_SEGMENT_ALIGNMENT = 2 * MiB

STAT_NAMES = (
    "allocation",
    "segment",
    "active",
    "inactive_split",
    "allocated_bytes",
    "reserved_bytes",
    "active_bytes",
    "inactive_split_bytes",
    "requested_bytes",
)
_POOL_NAMES = ("all", "small_pool", "large_pool")


def round_size(size: int) -> int:
    """Requested bytes -> block bytes: a multiple of 512, at least 512."""
    if size < MIN_BLOCK_SIZE:
        return MIN_BLOCK_SIZE
    return -(-size // MIN_BLOCK_SIZE) * MIN_BLOCK_SIZE


def is_small_request(rounded: int) -> bool:
    """True when a rounded size belongs to the small pool (<= 1 MiB)."""
    return rounded <= SMALL_SIZE


def allocation_size(rounded: int) -> int:
    """Size of the segment cudaMalloc'd when no cached block fits a request of ``rounded`` bytes."""
    if rounded <= SMALL_SIZE:
        return SMALL_BUFFER
    if rounded < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return -(-rounded // ROUND_LARGE) * ROUND_LARGE


class AllocatorOOM(RuntimeError):
    """The model ran out of its ``capacity``: the analogue of ``torch.OutOfMemoryError`` (a RuntimeError)."""

    def __init__(
        self, requested: int, rounded: int, segment_size: int, capacity: int, reserved: int, allocated: int
    ) -> None:
        self.requested = requested
        self.rounded = rounded
        self.segment_size = segment_size
        self.capacity = capacity
        self.reserved = reserved
        self.allocated = allocated
        super().__init__(
            f"model out of memory: tried to allocate {_fmt(segment_size)} "
            f"for a request of {_fmt(requested)}; "
            f"capacity {_fmt(capacity)}, {_fmt(allocated)} allocated, "
            f"{_fmt(reserved - allocated)} reserved but unallocated after releasing cached segments"
        )


def _fmt(n: int) -> str:
    if n >= MiB:
        return f"{n / MiB:.2f} MiB"
    if n >= 1024:
        return f"{n / 1024:.2f} KiB"
    return f"{n} B"


class AllocatorEvent(NamedTuple):
    """One entry of the model's trace, with the same meaning as a ``device_traces`` entry.

    ``action`` is one of alloc, free_requested, free_completed, segment_alloc, segment_free, oom.
    ``size`` is the requested (unrounded) size for alloc/free events, the segment size for segment
    events, the rounded size for oom (whose ``addr`` is the free memory left under ``capacity``, like
    ``device_free`` in a real trace). ``time_us`` is the model's ``now_us`` when set, else a counter.
    """

    action: str
    addr: int
    size: int
    time_us: int
    tag: object


class Block:
    """A block of a segment. Handed out by ``malloc``; free it with ``free(block)``.

    Attributes are read-only by convention. After ``free`` the object may be merged into a neighbour
    and must not be used again.
    """

    __slots__ = ("addr", "allocated", "is_small", "next", "prev", "requested_size", "segment", "size", "tag")

    def __init__(self, addr: int, size: int, is_small: bool, segment: _Segment) -> None:
        self.addr = addr
        self.size = size
        self.is_small = is_small
        self.segment = segment
        self.allocated = False
        self.requested_size = 0
        self.tag: object = None
        self.prev: Block | None = None
        self.next: Block | None = None

    @property
    def is_split(self) -> bool:
        return self.prev is not None or self.next is not None

    def __repr__(self) -> str:
        state = "allocated" if self.allocated else "free"
        return f"Block(addr={self.addr:#x}, size={self.size}, {state}, requested={self.requested_size})"


class _Segment:
    __slots__ = ("addr", "head", "is_small", "size")

    def __init__(self, addr: int, size: int, is_small: bool) -> None:
        self.addr = addr
        self.size = size
        self.is_small = is_small
        self.head: Block | None = None


@dataclass(frozen=True, slots=True)
class BlockInfo:
    address: int
    size: int
    requested_size: int
    allocated: bool
    tag: object = None


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    address: int
    total_size: int
    is_small: bool
    allocated_size: int
    requested_size: int
    blocks: tuple[BlockInfo, ...]

    @property
    def segment_type(self) -> str:
        return "small" if self.is_small else "large"

    @property
    def active_size(self) -> int:
        # One stream, no record_stream: active == allocated.
        return self.allocated_size


class _Stat:
    __slots__ = ("allocated", "current", "freed", "peak")

    def __init__(self) -> None:
        self.current = 0
        self.peak = 0
        self.allocated = 0
        self.freed = 0

    def inc(self, n: int) -> None:
        self.current += n
        if self.current > self.peak:
            self.peak = self.current
        self.allocated += n

    def dec(self, n: int) -> None:
        self.current -= n
        self.freed += n


SegmentAddressProvider = Callable[[int, bool], int | None]


class CachingAllocatorModel:
    """Simulates one device's caching allocator.

    ``capacity``: bytes that segments may reserve in total (None: unlimited). Exceeding it takes the
    release-and-retry path, then raises ``AllocatorOOM``.
    ``segment_base``: start of the simulated address space for new segments (2 MiB aligned, first fit,
    freed ranges are reused).
    ``segment_address_provider``: optional ``(size, is_small) -> address | None`` called for each new
    segment (used by snapshot replay to take the real cudaMalloc address); None or an overlapping address
    falls back to the simulated address space.
    ``record_history``: keep an event log (``events``) for export as a memory_viz snapshot.
    """

    def __init__(
        self,
        capacity: int | None = None,
        segment_base: int = 0x7F0000000000,
        *,
        max_split_size: int | None = None,
        max_non_split_rounding_size: int = LARGE_BUFFER,
        record_history: bool = False,
        segment_address_provider: SegmentAddressProvider | None = None,
    ) -> None:
        if capacity is not None and capacity < 0:
            raise ValueError("capacity must be >= 0 or None")
        if max_split_size is not None and max_split_size <= SMALL_SIZE:
            raise ValueError("max_split_size must be above 1 MiB (PyTorch requires > 20 MiB)")
        self.capacity = capacity
        self.segment_base = segment_base
        self.max_split_size = max_split_size
        self.max_non_split_rounding_size = max_non_split_rounding_size
        self.segment_address_provider = segment_address_provider
        self.record_history = record_history
        self.events: list[AllocatorEvent] = []
        self.now_us: int | None = None
        self._seq = 0
        # Free blocks per pool, sorted by (size, addr): the order of BlockComparatorSize for one stream.
        self._free_small: list[tuple[int, int]] = []
        self._free_large: list[tuple[int, int]] = []
        self._free_blocks: dict[int, Block] = {}
        self._allocated: dict[int, Block] = {}
        self._segments: dict[int, _Segment] = {}
        self._segment_addrs: list[int] = []
        self._stats: dict[str, tuple[_Stat, _Stat, _Stat]] = {
            name: (_Stat(), _Stat(), _Stat()) for name in STAT_NAMES
        }
        self.num_alloc_retries = 0
        self.num_ooms = 0
        self.num_sync_all_streams = 0
        self.num_device_alloc = 0
        self.num_device_free = 0
        self._oversize_allocations = _Stat()
        self._oversize_segments = _Stat()

    # ------------------------------------------------------------------ public API

    def malloc(self, size: int, *, tag: object = None) -> Block:
        """Allocate ``size`` bytes (unrounded, > 0) like ``DeviceCachingAllocator::malloc``."""
        if size <= 0:
            raise ValueError("size must be > 0 (PyTorch does not call the allocator for 0-byte storages)")
        rounded = round_size(size)
        small = rounded <= SMALL_SIZE
        seg_size = allocation_size(rounded)
        block = self._get_free_block(rounded, small)
        if block is None:
            block = self._alloc_block(seg_size, small, retry=False, tag=tag)
            if (
                block is None
                and self.max_split_size is not None
                and self._release_available_cached_blocks(rounded, small)
            ):
                block = self._alloc_block(seg_size, small, retry=False, tag=tag)
            if block is None:
                self._release_cached_blocks()
                block = self._alloc_block(seg_size, small, retry=True, tag=tag)
            if block is None:
                self.num_ooms += 1
                capacity = self.capacity if self.capacity is not None else 0
                reserved = self.reserved_bytes
                self._log("oom", max(capacity - reserved, 0), rounded, tag)
                raise AllocatorOOM(size, rounded, seg_size, capacity, reserved, self.allocated_bytes)
        return self._alloc_found_block(block, rounded, size, small, tag)

    def free(self, block_or_addr: Block | int) -> None:
        """Free an allocated block (or the allocated block starting at an address)."""
        if isinstance(block_or_addr, Block):
            block = self._allocated.get(block_or_addr.addr)
            if block is not block_or_addr:
                raise ValueError(f"{block_or_addr!r} is not an allocated block of this allocator")
        else:
            found = self._allocated.get(block_or_addr)
            if found is None:
                raise KeyError(f"no allocated block at address {block_or_addr:#x}")
            block = found
        del self._allocated[block.addr]
        pool = 1 if block.is_small else 2
        self._dec("allocation", pool, 1)
        self._dec("allocated_bytes", pool, block.size)
        if self.max_split_size is not None and block.size >= self.max_split_size:
            self._oversize_allocations.dec(1)
        if self.record_history:
            self._log("free_requested", block.addr, block.requested_size, block.tag)
            self._log("free_completed", block.addr, block.requested_size, block.tag)
        self._free_block(block)

    def empty_cache(self) -> None:
        """Release every cached segment that is entirely free (``torch.cuda.empty_cache()``)."""
        self._release_cached_blocks()

    def reset_peak_stats(self) -> None:
        for triple in self._stats.values():
            for st in triple:
                st.peak = st.current
        self._oversize_allocations.peak = self._oversize_allocations.current
        self._oversize_segments.peak = self._oversize_segments.current

    def stats(self) -> dict[str, int]:
        """The ``torch.cuda.memory_stats()`` dictionary of this model (same key names)."""
        out: dict[str, int] = {}
        for name, triple in self._stats.items():
            for pool_name, st in zip(_POOL_NAMES, triple, strict=True):
                out[f"{name}.{pool_name}.current"] = st.current
                out[f"{name}.{pool_name}.peak"] = st.peak
                out[f"{name}.{pool_name}.allocated"] = st.allocated
                out[f"{name}.{pool_name}.freed"] = st.freed
        for key, st in (
            ("oversize_allocations", self._oversize_allocations),
            ("oversize_segments", self._oversize_segments),
        ):
            out[f"{key}.current"] = st.current
            out[f"{key}.peak"] = st.peak
            out[f"{key}.allocated"] = st.allocated
            out[f"{key}.freed"] = st.freed
        out["num_alloc_retries"] = self.num_alloc_retries
        out["num_ooms"] = self.num_ooms
        out["num_sync_all_streams"] = self.num_sync_all_streams
        out["num_device_alloc"] = self.num_device_alloc
        out["num_device_free"] = self.num_device_free
        # PyTorch reports SIZE_MAX cast to int64, i.e. -1, when max_split_size is unset.
        out["max_split_size"] = self.max_split_size if self.max_split_size is not None else -1
        return out

    def stat(self, name: str, pool: str = "all") -> tuple[int, int]:
        """(current, peak) of one statistic, e.g. ``stat("reserved_bytes")``."""
        st = self._stats[name][_POOL_NAMES.index(pool)]
        return st.current, st.peak

    @property
    def allocated_bytes(self) -> int:
        return self._stats["allocated_bytes"][0].current

    @property
    def reserved_bytes(self) -> int:
        return self._stats["reserved_bytes"][0].current

    @property
    def peak_allocated_bytes(self) -> int:
        return self._stats["allocated_bytes"][0].peak

    @property
    def peak_reserved_bytes(self) -> int:
        return self._stats["reserved_bytes"][0].peak

    def segments(self) -> list[SegmentInfo]:
        """The segments and their blocks, sorted by address (what ``memory._snapshot()`` lists)."""
        out = []
        for addr in self._segment_addrs:
            seg = self._segments[addr]
            blocks = []
            allocated = requested = 0
            b = seg.head
            while b is not None:
                blocks.append(BlockInfo(b.addr, b.size, b.requested_size, b.allocated, b.tag))
                if b.allocated:
                    allocated += b.size
                    requested += b.requested_size
                b = b.next
            out.append(SegmentInfo(seg.addr, seg.size, seg.is_small, allocated, requested, tuple(blocks)))
        return out

    def allocated_blocks(self) -> Iterator[Block]:
        """Every allocated block (any order)."""
        return iter(list(self._allocated.values()))

    def block_at(self, addr: int) -> Block | None:
        """The allocated block starting at ``addr``, if any."""
        return self._allocated.get(addr)

    # ------------------------------------------------------------------ state import (for replay)

    def add_segment(
        self,
        address: int,
        size: int,
        *,
        is_small: bool | None = None,
        allocations: tuple[tuple[int, int, int], ...] | list[tuple[int, int, int]] = (),
    ) -> None:
        """Insert an existing segment with ``allocations`` = (address, block size, requested size).

        Used to start a replay from a reconstructed state. Gaps between allocations become free blocks.
        No events are logged and ``num_device_alloc`` is unchanged.
        """
        if size <= 0 or size % MIN_BLOCK_SIZE:
            raise ValueError(f"segment size {size} is not a positive multiple of {MIN_BLOCK_SIZE}")
        if self._overlaps(address, size):
            raise ValueError(f"segment {address:#x}+{size} overlaps an existing segment")
        small = (size == SMALL_BUFFER) if is_small is None else is_small
        seg = _Segment(address, size, small)
        pieces: list[tuple[int, int, int | None]] = []  # addr, size, requested (None = free)
        cursor = address
        for a, s, req in sorted(allocations):
            if a < cursor or a + s > address + size or s <= 0:
                raise ValueError(f"allocation {a:#x}+{s} does not fit segment {address:#x}+{size}")
            if a > cursor:
                pieces.append((cursor, a - cursor, None))
            pieces.append((a, s, req))
            cursor = a + s
        if cursor < address + size:
            pieces.append((cursor, address + size - cursor, None))
        prev: Block | None = None
        pool = 1 if small else 2
        split = len(pieces) > 1
        for a, s, piece_req in pieces:
            b = Block(a, s, small, seg)
            b.prev = prev
            if prev is None:
                seg.head = b
            else:
                prev.next = b
            prev = b
            if piece_req is None:
                self._insert_free(b)
                if split:
                    self._inc("inactive_split", pool, 1)
                    self._inc("inactive_split_bytes", pool, s)
            else:
                b.allocated = True
                b.requested_size = piece_req
                self._allocated[a] = b
                self._inc("allocation", pool, 1)
                self._inc("allocated_bytes", pool, s)
                self._inc("active", pool, 1)
                self._inc("active_bytes", pool, s)
                self._inc("requested_bytes", pool, piece_req)
        self._register_segment(seg)
        self._inc("segment", pool, 1)
        self._inc("reserved_bytes", pool, size)

    def release_segment(self, address: int) -> bool:
        """cudaFree one entirely free segment (replaying a real ``segment_free``); False if not possible."""
        seg = self._segments.get(address)
        if seg is None or seg.head is None:
            return False
        head = seg.head
        if head.allocated or head.next is not None:
            return False
        self._release_block(head)
        return True

    # ------------------------------------------------------------------ internals

    def _log(self, action: str, addr: int, size: int, tag: object) -> None:
        if not self.record_history:
            return
        t = self.now_us if self.now_us is not None else self._seq
        self._seq += 1
        self.events.append(AllocatorEvent(action, addr, size, t, tag))

    def _inc(self, name: str, pool: int, n: int) -> None:
        triple = self._stats[name]
        triple[0].inc(n)
        triple[pool].inc(n)

    def _dec(self, name: str, pool: int, n: int) -> None:
        triple = self._stats[name]
        triple[0].dec(n)
        triple[pool].dec(n)

    def _insert_free(self, b: Block) -> None:
        insort(self._free_small if b.is_small else self._free_large, (b.size, b.addr))
        self._free_blocks[b.addr] = b

    def _remove_free(self, b: Block) -> None:
        lst = self._free_small if b.is_small else self._free_large
        key = (b.size, b.addr)
        i = bisect_left(lst, key)
        if i == len(lst) or lst[i] != key:  # pragma: no cover - internal invariant
            raise AssertionError(f"free block {b!r} missing from its pool")
        del lst[i]
        del self._free_blocks[b.addr]

    def _get_free_block(self, rounded: int, small: bool) -> Block | None:
        lst = self._free_small if small else self._free_large
        i = bisect_left(lst, (rounded, -1))
        if i == len(lst):
            return None
        bsize, baddr = lst[i]
        mss = self.max_split_size
        if mss is not None:
            # Do not return an oversized block for a request below max_split_size; allow an oversized
            # request to be rounded up only within max_non_split_rounding_size.
            if rounded < mss and bsize >= mss:
                return None
            if rounded >= mss and bsize >= rounded + self.max_non_split_rounding_size:
                return None
        del lst[i]
        return self._free_blocks.pop(baddr)

    def _overlaps(self, addr: int, size: int) -> bool:
        i = bisect_right(self._segment_addrs, addr)
        if i > 0:
            prev = self._segments[self._segment_addrs[i - 1]]
            if prev.addr + prev.size > addr:
                return True
        return i < len(self._segment_addrs) and self._segment_addrs[i] < addr + size

    def _new_segment_address(self, size: int, small: bool) -> int:
        if self.segment_address_provider is not None:
            wanted = self.segment_address_provider(size, small)
            if wanted is not None and wanted > 0 and not self._overlaps(wanted, size):
                return wanted
        cursor = self.segment_base
        for a in self._segment_addrs:
            seg = self._segments[a]
            end = seg.addr + seg.size
            if end <= cursor:
                continue
            if a >= cursor + size:
                break
            cursor = -(-end // _SEGMENT_ALIGNMENT) * _SEGMENT_ALIGNMENT
        return cursor

    def _register_segment(self, seg: _Segment) -> None:
        self._segments[seg.addr] = seg
        insort(self._segment_addrs, seg.addr)

    def _alloc_block(self, seg_size: int, small: bool, *, retry: bool, tag: object) -> Block | None:
        if retry:
            self.num_alloc_retries += 1
        if self.capacity is not None and self.reserved_bytes + seg_size > self.capacity:
            return None
        addr = self._new_segment_address(seg_size, small)
        seg = _Segment(addr, seg_size, small)
        block = Block(addr, seg_size, small, seg)
        seg.head = block
        self._register_segment(seg)
        pool = 1 if small else 2
        self._inc("segment", pool, 1)
        self._inc("reserved_bytes", pool, seg_size)
        if self.max_split_size is not None and seg_size >= self.max_split_size:
            self._oversize_segments.inc(1)
        self.num_device_alloc += 1
        self._log("segment_alloc", addr, seg_size, tag)
        return block

    def _alloc_found_block(self, block: Block, rounded: int, orig: int, small: bool, tag: object) -> Block:
        remaining = block.size - rounded
        if small:
            split = remaining >= MIN_BLOCK_SIZE
        else:
            split = (self.max_split_size is None or rounded < self.max_split_size) and remaining > SMALL_SIZE
        pool = 1 if small else 2
        already_split = block.prev is not None or block.next is not None
        if split:
            rest = Block(block.addr + rounded, remaining, small, block.segment)
            rest.prev = block
            rest.next = block.next
            if block.next is not None:
                block.next.prev = rest
            block.next = rest
            block.size = rounded
            self._insert_free(rest)
            if already_split:
                # An already split inactive block shrinks by the allocated part.
                self._dec("inactive_split_bytes", pool, rounded)
            else:
                self._inc("inactive_split_bytes", pool, remaining)
                self._inc("inactive_split", pool, 1)
        elif already_split:
            self._dec("inactive_split_bytes", pool, block.size)
            self._dec("inactive_split", pool, 1)
        block.allocated = True
        block.requested_size = orig
        block.tag = tag
        self._allocated[block.addr] = block
        self._log("alloc", block.addr, orig, tag)
        self._inc("allocation", pool, 1)
        self._inc("allocated_bytes", pool, block.size)
        self._inc("active", pool, 1)
        self._inc("active_bytes", pool, block.size)
        self._inc("requested_bytes", pool, orig)
        if self.max_split_size is not None and block.size >= self.max_split_size:
            self._oversize_allocations.inc(1)
        return block

    def _free_block(self, block: Block) -> None:
        block.allocated = False
        orig_size = block.size
        requested = block.requested_size
        pool = 1 if block.is_small else 2
        net_blocks = 0
        net_bytes = 0
        prev = block.prev
        if prev is not None and not prev.allocated:
            self._remove_free(prev)
            block.addr = prev.addr
            block.size += prev.size
            block.prev = prev.prev
            if block.prev is not None:
                block.prev.next = block
            else:
                block.segment.head = block
            net_blocks -= 1
            net_bytes -= prev.size
        nxt = block.next
        if nxt is not None and not nxt.allocated:
            self._remove_free(nxt)
            block.size += nxt.size
            block.next = nxt.next
            if block.next is not None:
                block.next.prev = block
            net_blocks -= 1
            net_bytes -= nxt.size
        self._insert_free(block)
        if block.prev is not None or block.next is not None:
            net_blocks += 1
            net_bytes += block.size
        if net_blocks > 0:
            self._inc("inactive_split", pool, net_blocks)
        elif net_blocks < 0:
            self._dec("inactive_split", pool, -net_blocks)
        if net_bytes > 0:
            self._inc("inactive_split_bytes", pool, net_bytes)
        elif net_bytes < 0:
            self._dec("inactive_split_bytes", pool, -net_bytes)
        self._dec("active", pool, 1)
        self._dec("active_bytes", pool, orig_size)
        self._dec("requested_bytes", pool, requested)

    def _release_block(self, block: Block) -> None:
        """cudaFree an unsplit free block, i.e. a whole free segment."""
        seg = block.segment
        self._log("segment_free", block.addr, block.size, None)
        self._remove_free(block)
        del self._segments[seg.addr]
        i = bisect_left(self._segment_addrs, seg.addr)
        del self._segment_addrs[i]
        pool = 1 if seg.is_small else 2
        self._dec("segment", pool, 1)
        self._dec("reserved_bytes", pool, seg.size)
        if self.max_split_size is not None and seg.size >= self.max_split_size:
            self._oversize_segments.dec(1)
        self.num_device_free += 1

    def _release_cached_blocks(self) -> None:
        # synchronize_and_free_events() counts even with nothing pending.
        self.num_sync_all_streams += 1
        for lst in (self._free_large, self._free_small):
            for _size, addr in list(lst):
                b = self._free_blocks[addr]
                if b.prev is None and b.next is None:
                    self._release_block(b)

    def _release_available_cached_blocks(self, rounded: int, small: bool) -> bool:
        """Free oversize cached blocks until a request could fit (only with max_split_size set)."""
        mss = self.max_split_size
        assert mss is not None
        lst = self._free_small if small else self._free_large
        key = max(rounded, mss)
        i = bisect_left(lst, (key, -1))
        if i < len(lst):
            b = self._free_blocks[lst[i][1]]
            if b.is_split:  # PyTorch would cudaFree part of a segment here; the model refuses.
                return False
            self._release_block(b)
            return True
        # No single block is large enough: free oversize blocks, largest first.
        victims = []
        total = 0
        j = len(lst) - 1
        while j >= 0 and total < key and lst[j][0] >= mss:
            b = self._free_blocks[lst[j][1]]
            if b.is_split:
                break
            victims.append(b)
            total += b.size
            j -= 1
        for b in victims:
            self._release_block(b)
        return total >= key
