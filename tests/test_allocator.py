"""The caching-allocator model against the rules of c10/cuda/CUDACachingAllocator.cpp."""

from __future__ import annotations

import contextlib
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vggexplorer.core.allocator.caching import (
    LARGE_BUFFER,
    MIN_BLOCK_SIZE,
    SMALL_BUFFER,
    SMALL_SIZE,
    AllocatorOOM,
    Block,
    CachingAllocatorModel,
    allocation_size,
    round_size,
)

KiB = 1024
MiB = 1024 * 1024


def test_round_size() -> None:
    assert round_size(1) == 512
    assert round_size(511) == 512
    assert round_size(512) == 512
    assert round_size(513) == 1024
    assert round_size(6_400_000) == 6_400_000  # 12,500 x 512
    assert round_size(6_400_001) == 6_400_512
    assert round_size(MiB) == MiB


def test_allocation_size() -> None:
    assert allocation_size(512) == SMALL_BUFFER
    assert allocation_size(MiB) == SMALL_BUFFER  # 1 MiB exactly is still small
    assert allocation_size(MiB + 512) == LARGE_BUFFER
    assert allocation_size(10 * MiB - 512) == LARGE_BUFFER
    assert allocation_size(10 * MiB) == 10 * MiB  # >= 10 MiB: rounded up to 2 MiB
    assert allocation_size(10 * MiB + 512) == 12 * MiB
    assert allocation_size(19 * MiB + 512 * KiB) == 20 * MiB


def test_zero_size_is_refused() -> None:
    with pytest.raises(ValueError, match="0-byte"):
        CachingAllocatorModel().malloc(0)


def test_19_5_mib_takes_a_whole_20_mib_block() -> None:
    m = CachingAllocatorModel()
    b = m.malloc(19 * MiB + 512 * KiB)
    assert b.size == 20 * MiB  # remainder 0.5 MiB <= 1 MiB: not split, counted as allocated
    s = m.stats()
    assert s["allocated_bytes.all.current"] == 20 * MiB
    assert s["requested_bytes.all.current"] == 19 * MiB + 512 * KiB
    assert s["reserved_bytes.all.current"] == 20 * MiB
    assert s["inactive_split.all.current"] == 0
    assert [len(seg.blocks) for seg in m.segments()] == [1]


def test_10_5_mib_in_a_12_mib_segment_splits() -> None:
    m = CachingAllocatorModel()
    b = m.malloc(10 * MiB + 512 * KiB)
    (seg,) = m.segments()
    assert seg.total_size == 12 * MiB
    assert b.size == 10 * MiB + 512 * KiB  # remainder 1.5 MiB > 1 MiB: split
    assert [(x.size, x.allocated) for x in seg.blocks] == [(b.size, True), (1536 * KiB, False)]
    s = m.stats()
    assert s["allocated_bytes.all.current"] == b.size
    assert s["inactive_split.all.current"] == 1
    assert s["inactive_split_bytes.all.current"] == 1536 * KiB
    assert s["inactive_split_bytes.large_pool.current"] == 1536 * KiB
    assert s["inactive_split_bytes.small_pool.current"] == 0


def test_large_remainder_of_exactly_1_mib_is_not_split() -> None:
    m = CachingAllocatorModel()
    b = m.malloc(19 * MiB)  # 20 MiB segment, remainder exactly 1 MiB: needs > 1 MiB to split
    assert b.size == 20 * MiB


def test_6_4_mb_tensor_creates_a_20_mib_segment() -> None:
    m = CachingAllocatorModel()
    b = m.malloc(6_400_000)
    (seg,) = m.segments()
    assert seg.total_size == 20 * MiB
    assert not seg.is_small
    assert b.size == round_size(6_400_000)
    assert m.reserved_bytes == 20 * MiB
    # A second one is cut from the same segment, right after the first.
    b2 = m.malloc(6_400_000)
    assert b2.addr == b.addr + b.size
    assert len(m.segments()) == 1


def test_small_requests_share_a_2_mib_segment() -> None:
    m = CachingAllocatorModel()
    a = m.malloc(1000)
    b = m.malloc(2000)
    c = m.malloc(100 * KiB)
    d = m.malloc(MiB)  # 1 MiB exactly is small and still fits the same 2 MiB segment
    assert (b.addr - a.addr, c.addr - b.addr, d.addr - c.addr) == (1024, 2048, 100 * KiB)
    (seg,) = m.segments()
    assert seg.is_small and seg.total_size == SMALL_BUFFER
    s = m.stats()
    assert s["segment.small_pool.current"] == 1
    assert s["segment.large_pool.current"] == 0
    # 945 KiB are left: another 1 MiB needs a second small segment; 1 MiB + 1 B goes to the large pool.
    m.malloc(MiB)
    assert m.stats()["segment.small_pool.current"] == 2
    m.malloc(MiB + 1)
    assert m.stats()["segment.large_pool.current"] == 1
    assert m.reserved_bytes == 2 * SMALL_BUFFER + LARGE_BUFFER


def test_small_pool_splits_any_remainder_of_512() -> None:
    m = CachingAllocatorModel()
    b = m.malloc(SMALL_BUFFER - 512)  # rounded 2 MiB - 512 > 1 MiB: large pool, so use a small one
    assert not b.is_small
    m2 = CachingAllocatorModel()
    x = m2.malloc(MiB)
    y = m2.malloc(MiB - 512)
    z = m2.malloc(1)  # the last 512 B of the 2 MiB segment
    assert y.addr == x.addr + MiB and z.addr == y.addr + MiB - 512
    assert len(m2.segments()) == 1


def test_best_fit_smallest_then_lowest_address() -> None:
    m = CachingAllocatorModel()
    sizes = [2, 3, 2, 3, 2]
    blocks = [m.malloc(s * MiB) for s in sizes]  # 12 MiB used in one 20 MiB segment; 8 MiB tail free
    assert len(m.segments()) == 1
    m.free(blocks[3])  # free 3 MiB at the higher address first
    m.free(blocks[1])  # then 3 MiB at the lower address
    assert m.malloc(3 * MiB).addr == blocks[1].addr  # equal sizes: lowest address
    assert m.malloc(3 * MiB).addr == blocks[3].addr
    # Smallest fitting block wins even against a lower-address larger one.
    m2 = CachingAllocatorModel()
    big = m2.malloc(4 * MiB)
    m2.malloc(2 * MiB)
    small = m2.malloc(2 * MiB + 512 * KiB)
    m2.malloc(2 * MiB)
    m2.free(big)  # 4 MiB free at the lowest address
    m2.free(small)  # 2.5 MiB free higher up
    got = m2.malloc(2 * MiB)
    assert got.addr == small.addr
    assert got.size == 2 * MiB + 512 * KiB  # 0.5 MiB remainder not split off in the large pool


def test_best_fit_across_segments() -> None:
    m = CachingAllocatorModel()
    a = m.malloc(30 * MiB)  # own 30 MiB segment
    b = m.malloc(12 * MiB)  # own 12 MiB segment
    m.free(a)
    m.free(b)
    assert m.malloc(11 * MiB).addr == b.addr  # smaller cached segment, though at a higher address
    # No upper bound by default: a small large-pool request is cut from the 30 MiB block.
    c = m.malloc(2 * MiB)
    assert c.addr == a.addr
    assert m.reserved_bytes == 42 * MiB


def test_free_merges_with_free_neighbours() -> None:
    m = CachingAllocatorModel()
    a, b, c = (m.malloc(2 * MiB) for _ in range(3))
    m.free(b)
    m.free(a)  # merges with b
    (seg,) = m.segments()
    assert [(x.address, x.size, x.allocated) for x in seg.blocks] == [
        (a.addr, 4 * MiB, False),
        (c.addr, 2 * MiB, True),
        (c.addr + 2 * MiB, 14 * MiB, False),
    ]
    assert m.stats()["inactive_split.all.current"] == 2
    m.free(c)  # merges both sides: the whole segment is one free block again
    (seg,) = m.segments()
    assert [(x.size, x.allocated) for x in seg.blocks] == [(20 * MiB, False)]
    s = m.stats()
    assert s["inactive_split.all.current"] == 0
    assert s["inactive_split_bytes.all.current"] == 0
    assert s["allocated_bytes.all.current"] == 0
    assert s["reserved_bytes.all.current"] == 20 * MiB  # cached


def test_whole_segments_cached_until_empty_cache() -> None:
    m = CachingAllocatorModel(record_history=True)
    a = m.malloc(30 * MiB)
    b = m.malloc(5 * MiB)
    c = m.malloc(5 * MiB)  # shares b's 20 MiB segment
    m.free(a)
    m.free(b)
    assert m.reserved_bytes == 50 * MiB  # freed memory stays reserved
    m.empty_cache()
    # The 30 MiB segment is entirely free and goes; the 20 MiB one is partly used and stays.
    assert m.reserved_bytes == 20 * MiB
    s = m.stats()
    assert s["segment.all.current"] == 1
    assert s["num_device_free"] == 1
    assert s["inactive_split.all.current"] == 2  # b's freed piece and the tail of the kept segment
    assert [e.action for e in m.events if e.action.startswith("segment")] == [
        "segment_alloc",
        "segment_alloc",
        "segment_free",
    ]
    m.free(c)
    m.empty_cache()
    assert m.reserved_bytes == 0
    assert m.segments() == []


def test_capacity_release_and_retry_then_oom() -> None:
    m = CachingAllocatorModel(capacity=40 * MiB, record_history=True)
    a = m.malloc(15 * MiB)  # 16 MiB segment
    m.free(a)  # cached
    b = m.malloc(30 * MiB)  # 16 + 30 > 40: release the cached segment, retry
    s = m.stats()
    assert (s["num_alloc_retries"], s["num_ooms"]) == (1, 0)
    assert m.reserved_bytes == 30 * MiB
    with pytest.raises(AllocatorOOM) as info:
        m.malloc(20 * MiB)  # 30 + 20 > 40 and nothing cached to release
    s = m.stats()
    assert (s["num_alloc_retries"], s["num_ooms"]) == (2, 1)
    assert info.value.capacity == 40 * MiB
    assert info.value.segment_size == 20 * MiB
    assert "out of memory" in str(info.value)
    assert m.allocated_bytes == b.size  # the failed request changed nothing
    actions = [e.action for e in m.events]
    assert actions[-1] == "oom"
    assert m.events[-1].addr == 10 * MiB  # like device_free: capacity - reserved
    assert actions.count("segment_free") == 1


def test_oom_path_releases_large_then_small_in_size_order() -> None:
    m = CachingAllocatorModel(capacity=100 * MiB, record_history=True)
    blocks = [m.malloc(12 * MiB), m.malloc(10 * MiB), m.malloc(100), m.malloc(20 * MiB)]
    for b in blocks:
        m.free(b)
    m.malloc(80 * MiB)
    freed = [(e.size, e.addr) for e in m.events if e.action == "segment_free"]
    assert [f[0] for f in freed] == [10 * MiB, 12 * MiB, 20 * MiB, SMALL_BUFFER]


def test_peak_stats_and_reset() -> None:
    m = CachingAllocatorModel()
    a = m.malloc(3 * MiB)
    b = m.malloc(5 * MiB)
    m.free(a)
    s = m.stats()
    assert s["allocated_bytes.all.peak"] == 8 * MiB
    assert s["allocated_bytes.all.current"] == 5 * MiB
    assert s["allocated_bytes.large_pool.peak"] == 8 * MiB
    assert s["active_bytes.all.peak"] == 8 * MiB
    assert s["requested_bytes.all.peak"] == 8 * MiB
    assert s["reserved_bytes.all.peak"] == 20 * MiB
    assert s["allocation.all.peak"] == 2
    assert s["allocated_bytes.all.allocated"] == 8 * MiB
    assert s["allocated_bytes.all.freed"] == 3 * MiB
    assert m.peak_allocated_bytes == 8 * MiB
    m.reset_peak_stats()
    assert m.stats()["allocated_bytes.all.peak"] == 5 * MiB
    m.free(b)
    m.empty_cache()
    assert m.stat("reserved_bytes") == (0, 20 * MiB)
    assert m.stats()["max_split_size"] == -1  # like PyTorch with max_split_size unset


def test_free_by_address_and_bad_frees() -> None:
    m = CachingAllocatorModel()
    b = m.malloc(100)
    m.free(b.addr)
    with pytest.raises(KeyError):
        m.free(b.addr)
    c = m.malloc(100)
    other = CachingAllocatorModel().malloc(100)
    with pytest.raises(ValueError):
        m.free(other)
    m.free(c)


def test_event_log() -> None:
    m = CachingAllocatorModel(record_history=True)
    m.now_us = 1000
    b = m.malloc(300, tag="conv1")
    m.free(b)
    m.empty_cache()
    assert [(e.action, e.size, e.tag) for e in m.events] == [
        ("segment_alloc", SMALL_BUFFER, "conv1"),
        ("alloc", 300, "conv1"),
        ("free_requested", 300, "conv1"),
        ("free_completed", 300, "conv1"),
        ("segment_free", SMALL_BUFFER, None),
    ]
    assert {e.time_us for e in m.events} == {1000}
    assert CachingAllocatorModel().events == []  # no history unless asked


def test_segment_addresses_are_reused_and_aligned() -> None:
    m = CachingAllocatorModel(segment_base=0x10000000)
    a = m.malloc(30 * MiB)
    b = m.malloc(100)
    assert a.addr == 0x10000000
    assert b.addr == a.addr + 30 * MiB
    m.free(a)
    m.empty_cache()
    c = m.malloc(12 * MiB)
    assert c.addr == 0x10000000  # first fit reuses the released range


def test_address_provider_and_add_segment() -> None:
    wanted = [0x7000_0000_0000]
    m = CachingAllocatorModel(segment_address_provider=lambda size, small: wanted.pop() if wanted else None)
    m.add_segment(0x6000_0000_0000, 20 * MiB, allocations=[(0x6000_0000_0000 + 2 * MiB, 4 * MiB, 4_000_000)])
    s = m.stats()
    assert s["inactive_split.all.current"] == 2
    assert s["allocated_bytes.all.current"] == 4 * MiB
    assert s["requested_bytes.all.current"] == 4_000_000
    # 2 MiB fits the first free piece of the imported segment.
    assert m.malloc(2 * MiB).addr == 0x6000_0000_0000
    assert m.malloc(30 * MiB).addr == 0x7000_0000_0000  # new segment where the provider said
    with pytest.raises(ValueError, match="overlaps"):
        m.add_segment(0x6000_0000_0000 + MiB, 2 * MiB)
    assert m.release_segment(0x6000_0000_0000) is False  # not entirely free


def test_max_split_size_option() -> None:
    m = CachingAllocatorModel(max_split_size=40 * MiB)
    a = m.malloc(60 * MiB)
    m.free(a)
    # A request below max_split_size never takes an oversize cached block.
    b = m.malloc(5 * MiB)
    assert b.addr != a.addr
    # An oversize request takes an oversize block only within max_non_split_rounding_size (20 MiB).
    c = m.malloc(45 * MiB)
    assert c.addr == a.addr and c.size == 60 * MiB  # not split
    assert m.stats()["oversize_allocations.current"] == 1
    assert m.stats()["max_split_size"] == 40 * MiB


# ------------------------------------------------------------------ invariants under random workloads


def _check_invariants(m: CachingAllocatorModel) -> None:
    segs = m.segments()
    allocated = requested = reserved = inactive = inactive_bytes = 0
    for seg in segs:
        reserved += seg.total_size
        cursor = seg.address
        prev_free = False
        for b in seg.blocks:
            assert b.address == cursor, "blocks must tile the segment"
            cursor += b.size
            assert b.size >= MIN_BLOCK_SIZE and b.size % MIN_BLOCK_SIZE == 0
            if not seg.is_small:
                assert b.size > SMALL_SIZE, "large-pool blocks are always > 1 MiB"
            if b.allocated:
                allocated += b.size
                requested += b.requested_size
                assert round_size(b.requested_size) <= b.size
            else:
                assert not prev_free, "adjacent free blocks must have been merged"
                if len(seg.blocks) > 1:
                    inactive += 1
                    inactive_bytes += b.size
            prev_free = not b.allocated
        assert cursor == seg.address + seg.total_size
    s = m.stats()
    assert s["allocated_bytes.all.current"] == allocated
    assert s["active_bytes.all.current"] == allocated
    assert s["requested_bytes.all.current"] == requested
    assert s["reserved_bytes.all.current"] == reserved
    assert s["segment.all.current"] == len(segs)
    assert s["inactive_split.all.current"] == inactive
    assert s["inactive_split_bytes.all.current"] == inactive_bytes
    for name in ("allocated_bytes", "reserved_bytes", "segment", "inactive_split_bytes"):
        assert s[f"{name}.all.current"] == s[f"{name}.small_pool.current"] + s[f"{name}.large_pool.current"]
        assert s[f"{name}.all.peak"] >= s[f"{name}.all.current"]


_sizes = st.one_of(
    st.integers(1, 4096),
    st.integers(4096, SMALL_SIZE + 4096),
    st.integers(SMALL_SIZE, 12 * MiB),
    st.integers(12 * MiB, 48 * MiB),
)


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["alloc", "alloc", "free", "empty"]), _sizes, st.integers(0, 10**6))
    ),
    capacity=st.one_of(st.none(), st.integers(40 * MiB, 200 * MiB)),
)
def test_invariants_hold_for_random_workloads(ops: list[tuple[str, int, int]], capacity: int | None) -> None:
    m = CachingAllocatorModel(capacity=capacity)
    live: list[Block] = []
    for op, size, pick in ops:
        if op == "alloc":
            with contextlib.suppress(AllocatorOOM):
                live.append(m.malloc(size))
        elif op == "free" and live:
            m.free(live.pop(pick % len(live)))
        elif op == "empty":
            m.empty_cache()
        _check_invariants(m)
    if capacity is not None:
        assert m.stats()["reserved_bytes.all.peak"] <= capacity


def test_speed_10k_events() -> None:
    """~10k events (5k malloc + 5k free) of a training-like mix must take well under a second."""
    rng = random.Random(0)
    sizes = [rng.choice([256, 4096, 64 * KiB, 800 * KiB, 3 * MiB, 6_422_528, 25 * MiB]) for _ in range(5000)]
    m = CachingAllocatorModel(record_history=True)
    t0 = time.perf_counter()
    live: list[Block] = []
    for s in sizes:
        live.append(m.malloc(s))
        if len(live) > 200:
            m.free(live.pop(rng.randrange(len(live))))
    while live:
        m.free(live.pop())
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, f"10k events took {elapsed:.2f} s"
