"""Snapshot loading (nothing in a file runs), replay against a real GPU trace, export for memory_viz."""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import pickle
import pickletools
from bisect import bisect_left
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vggexplorer.commands.replay import replay_main
from vggexplorer.core.allocator.caching import Block, CachingAllocatorModel
from vggexplorer.core.allocator.snapshot import (
    Snapshot,
    SnapshotError,
    TraceEntry,
    load_snapshot,
    parse_snapshot,
)
from vggexplorer.core.allocator.snapshot_export import (
    build_snapshot_dict,
    export_model_snapshot,
    export_snapshot,
    trace_from_events,
)
from vggexplorer.core.allocator.snapshot_replay import replay

DATA = Path(__file__).parent / "data"
REAL = DATA / "real_snapshot_small_cnn.pickle"
MiB = 1024 * 1024

# Opcodes the JavaScript unpickler of pytorch.org/memory_viz (torch/utils/viz/MemoryViz.js) handles.
MEMORY_VIZ_OPCODES = {
    "PROTO", "FRAME", "STOP", "MARK", "MEMOIZE", "BINPUT", "LONG_BINPUT", "BINGET", "LONG_BINGET",
    "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS", "EMPTY_LIST", "LIST", "APPEND", "APPENDS",
    "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "NONE", "NEWTRUE", "NEWFALSE",
    "BININT", "BININT1", "BININT2", "LONG1", "BINFLOAT", "SHORT_BINUNICODE", "BINUNICODE",
}  # fmt: skip


@pytest.fixture(scope="module")
def real() -> Snapshot:
    return load_snapshot(REAL)


# ------------------------------------------------------------------ the real snapshot


def test_real_snapshot_loads(real: Snapshot) -> None:
    assert len(real.segments) == 10
    (trace,) = real.device_traces
    assert len(trace) == 5803
    counts: dict[str, int] = {}
    for e in trace:
        counts[e.action] = counts.get(e.action, 0) + 1
    assert counts == {
        "alloc": 1935,
        "free_requested": 1926,
        "free_completed": 1926,
        "segment_alloc": 7,
        "snapshot": 9,
    }
    assert all(e.frames for e in trace if e.action == "alloc")
    assert sum(s.total_size for s in real.segments) == 6 * 20 * MiB + 4 * 2 * MiB


def test_real_replay_matches_every_decision(real: Snapshot) -> None:
    r = replay(real)
    # The trace starts mid-run: 3 of the 10 final segments are older than it.
    assert r.initial_segments == 3
    assert r.initial_allocated_blocks > 0
    assert r.reconstruction_issues == []
    assert r.allocs == 1935
    assert r.allocs_matched == 1935, r.format_text()
    assert r.segment_allocs_real == 7
    assert r.segment_allocs_predicted == 7, r.format_text()
    assert (r.segment_allocs_missed, r.segment_allocs_wrong_size, r.segment_allocs_extra) == (0, 0, 0)
    assert r.frees == 1926 and r.frees_unknown == 0
    assert r.final_state_matches, r.final_state_difference
    assert r.matches
    assert r.mismatches_total == 0


class _FirstFitModel(CachingAllocatorModel):
    """Takes the lowest-address free block that fits instead of the best fit."""

    def _get_free_block(self, rounded: int, small: bool) -> Block | None:
        lst = self._free_small if small else self._free_large
        fits = [(addr, size) for size, addr in lst if size >= rounded]
        if not fits:
            return None
        addr, size = min(fits)
        del lst[bisect_left(lst, (size, addr))]
        return self._free_blocks.pop(addr)


class _TwoMiBSegmentsModel(CachingAllocatorModel):
    """Allocates every large segment as the request rounded up to 2 MiB (no 20 MiB buffers)."""

    def malloc(self, size: int, *, tag: object = None) -> Block:
        import vggexplorer.core.allocator.caching as alloc_mod

        def two_mib_multiple(rounded: int) -> int:
            return 2 * MiB * -(-rounded // (2 * MiB))

        saved = alloc_mod.allocation_size
        alloc_mod.allocation_size = two_mib_multiple
        try:
            return super().malloc(size, tag=tag)
        finally:
            alloc_mod.allocation_size = saved


@pytest.mark.parametrize("model_cls", [_FirstFitModel, _TwoMiBSegmentsModel])
def test_real_replay_fails_for_a_wrong_rule(real: Snapshot, model_cls: type[CachingAllocatorModel]) -> None:
    r = replay(real, model_cls=model_cls)
    assert not r.matches
    assert r.allocs_matched < r.allocs
    assert r.first_mismatches and r.mismatches_total >= len(r.first_mismatches)


def test_real_replay_reports_a_tampered_address(real: Snapshot) -> None:
    trace = list(real.device_traces[0])
    i = next(k for k, e in enumerate(trace) if e.action == "alloc" and k > 100)
    e = trace[i]
    trace[i] = TraceEntry(e.action, e.addr + 512, e.size, e.stream, e.time_us, e.frames)
    r = replay(Snapshot(real.segments, (tuple(trace),)))
    assert not r.matches
    assert r.first_mismatches[0].index <= i


def test_real_replay_without_its_first_half(real: Snapshot) -> None:
    """The reconstruction works from any starting point of the trace."""
    trace = real.device_traces[0]
    r = replay(Snapshot(real.segments, (trace[len(trace) // 2 :],)))
    assert r.matches, r.format_text()


# ------------------------------------------------------------------ refusing files


def _write_evil(path: Path, obj: object) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=4))


class _SystemCall:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


class _OpenCall:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (builtins.open, (str(self.marker), "w"))


@pytest.mark.parametrize("evil", [_SystemCall, _OpenCall])
@pytest.mark.parametrize("wrap", [False, True])
def test_refuses_pickles_that_name_a_callable(tmp_path: Path, evil: type, wrap: bool) -> None:
    marker = tmp_path / "ran"
    payload: object = evil(marker)
    if wrap:  # hidden inside an otherwise valid snapshot
        payload = {"segments": [], "device_traces": [[{"action": "alloc", "addr": payload, "size": 1}]]}
    f = tmp_path / "evil.pickle"
    _write_evil(f, payload)
    # Sanity check of the test itself: the standard unpickler would run it.
    with pytest.raises(SnapshotError, match="refused") as info:
        load_snapshot(f)
    assert not marker.exists(), "code from the file ran"
    assert "never runs code" in str(info.value)
    assert ("system" in str(info.value)) or ("open" in str(info.value))
    with pytest.raises(SnapshotError):
        load_snapshot(f.read_bytes())
    assert not marker.exists()


def test_the_evil_pickle_would_really_run(tmp_path: Path) -> None:
    """Proves the payload above is live: plain pickle.loads creates the marker."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_OpenCall(marker), protocol=4)).close()
    assert marker.exists()


def test_refuses_any_class_even_harmless(tmp_path: Path) -> None:
    from collections import OrderedDict

    with pytest.raises(SnapshotError, match=r"collections\.OrderedDict"):
        load_snapshot(pickle.dumps(OrderedDict(segments=[]), protocol=2))


def test_refuses_truncated_files() -> None:
    data = REAL.read_bytes()
    for cut in (1, 2, 100, len(data) // 3, len(data) // 2, len(data) - 1):
        with pytest.raises(SnapshotError, match=r"truncated|not a readable pickle"):
            load_snapshot(data[:cut])


def test_refuses_oversized_files(tmp_path: Path) -> None:
    big = tmp_path / "big.pickle"
    with big.open("wb") as f:
        f.truncate(257 * MiB)  # sparse: nothing is written, and nothing must be read
    with pytest.raises(SnapshotError, match="over the"):
        load_snapshot(big)
    with pytest.raises(SnapshotError, match="over the"):
        load_snapshot(REAL, max_bytes=1000)
    with pytest.raises(SnapshotError, match="over the"):
        load_snapshot(b"\x80" * 2000, max_bytes=1000)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([1, 2, 3], r"segments\[0\] should be a dict"),
        ({"foo": 1}, "no 'segments'"),
        ({"segments": "x"}, "'segments' is a str"),
        ({"segments": [], "device_traces": [{}]}, r"device_traces\[0\] is a dict"),
        ({"segments": [{"address": 0, "total_size": 10}]}, "no 'blocks'"),
        (
            {
                "segments": [
                    {"address": 0, "total_size": 1024, "blocks": [{"size": 512, "state": "inactive"}]}
                ]
            },
            "add up to 512",
        ),
        ({"segments": [], "device_traces": [[{"action": "alloc", "addr": "0x10", "size": 1}]]}, "integer"),
        ({"segments": [], "device_traces": [[{"addr": 1}]]}, "no 'action'"),
        ("a string", "got str"),
    ],
)
def test_refuses_wrong_structures(payload: object, message: str) -> None:
    with pytest.raises(SnapshotError, match=message):
        load_snapshot(pickle.dumps(payload, protocol=4))


def test_refuses_non_pickles_and_trailing_bytes(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="empty"):
        load_snapshot(b"")
    with pytest.raises(SnapshotError, match="not a pickle"):
        load_snapshot(b"PK\x03\x04 a zip file")
    with pytest.raises(SnapshotError, match="unexpected bytes"):
        load_snapshot(pickle.dumps({"segments": []}, protocol=4) + b"extra")
    with pytest.raises(SnapshotError, match="cannot read"):
        load_snapshot(tmp_path / "missing.pickle")


# ------------------------------------------------------------------ export


def _workload(model: CachingAllocatorModel) -> None:
    live: list[Block] = []
    sizes = [300, 6_400_000, 4 * MiB, 70_000, 25 * MiB, 1, 2 * MiB, 800_000, 19 * MiB + MiB // 2, 10 * MiB]
    for step in range(6):
        model.now_us = 1_000_000 + step * 1000
        for k, s in enumerate(sizes):
            live.append(model.malloc(s + step * 512, tag=f"model.py:{10 + k}:layer{k}\ntrain.py:3:step"))
        for b in live[::2]:
            model.free(b)
        live = live[1::2]
        if step == 3:
            model.empty_cache()
    for b in live[:5]:
        model.free(b)


def test_export_round_trip_replays_exactly(tmp_path: Path) -> None:
    m = CachingAllocatorModel(record_history=True)
    _workload(m)
    out = tmp_path / "predicted.pickle"
    export_model_snapshot(m, out)
    snap = load_snapshot(out)
    assert len(snap.device_traces[0]) == len(m.events)
    assert [s.address for s in snap.segments] == [s.address for s in m.segments()]
    alloc = next(e for e in snap.device_traces[0] if e.action == "alloc")
    assert alloc.frames[0].filename == "model.py" and alloc.frames[0].line == 10
    r = replay(snap)
    assert r.segment_frees_real > 0
    assert r.initial_segments == 0
    assert r.matches, r.format_text()
    # A later part of the same trace replays too (state reconstructed backwards).
    r2 = replay(Snapshot(snap.segments, (snap.device_traces[0][len(m.events) // 3 :],)))
    assert r2.matches, r2.format_text()


def test_export_uses_only_opcodes_memory_viz_reads(tmp_path: Path) -> None:
    m = CachingAllocatorModel(record_history=True)
    _workload(m)
    out = tmp_path / "viz.pickle"
    export_model_snapshot(m, out)
    data = out.read_bytes()
    ops = {op.name for op, _arg, _pos in pickletools.genops(data)}
    assert ops <= MEMORY_VIZ_OPCODES, ops - MEMORY_VIZ_OPCODES
    assert data[:2] == b"\x80\x04"  # memory_viz accepts protocols 2..4


def test_export_is_readable_by_torch_memory_viz(tmp_path: Path) -> None:
    memory_viz = pytest.importorskip("torch.cuda._memory_viz")
    m = CachingAllocatorModel(record_history=True)
    _workload(m)
    d = build_snapshot_dict(trace_from_events(m.events), m.segments())
    summary = memory_viz.segsum(d)  # checks allocated + free == reserved per segment
    assert f"segments: {len(m.segments())}" in summary
    text = memory_viz.trace(d)
    assert "cudaMalloc" in text and "TOTAL MEM" in text
    assert "<html>" in memory_viz.trace_plot(d)


def test_export_from_plain_tuples(tmp_path: Path) -> None:
    trace = [
        ("segment_alloc", 0x1000_0000, 20 * MiB, 10, ""),
        ("alloc", 0x1000_0000, 3 * MiB, 11, "vgg.py:5:conv1"),
        ("alloc", 0x1000_0000 + 3 * MiB, 5 * MiB, 12, "vgg.py:6:conv2"),
        ("free", 0x1000_0000, 3 * MiB, 13, "vgg.py:5:conv1"),
        ("alloc", 0x4000_0000, 600, 14, "elsewhere"),  # outside every traced segment
        ("oom", 123, 40 * MiB, 15, ""),
    ]
    out = tmp_path / "t.pickle"
    export_snapshot(trace, out)
    snap = load_snapshot(out)
    actions = [e.action for e in snap.device_traces[0]]
    assert actions == ["segment_alloc", "alloc", "alloc", "free_requested", "free_completed", "alloc", "oom"]
    assert snap.device_traces[0][-1].addr == 123  # device_free
    big = next(s for s in snap.segments if s.address == 0x1000_0000)
    assert [(b.size, b.allocated) for b in big.blocks] == [
        (3 * MiB, False),
        (5 * MiB, True),
        (12 * MiB, False),
    ]
    assert big.blocks[1].frames[0].name == "conv2"
    orphan = next(s for s in snap.segments if s.address == 0x4000_0000)
    assert orphan.is_small and orphan.total_size == 1024


# ------------------------------------------------------------------ CLI hook


def test_replay_main_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert replay_main(str(REAL), as_json=False) == 0
    out = capsys.readouterr().out
    assert "1,935 of 1,935" in out and "MATCH" in out

    assert replay_main(str(REAL), as_json=True) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["matches"] is True and d["allocs_matched"] == 1935 and d["segment_allocs_predicted"] == 7

    snap = load_snapshot(REAL)
    victim = next(i for i, e in enumerate(snap.device_traces[0]) if e.action == "alloc" and i > 200)
    tampered = build_snapshot_dict(
        [
            (e.action, e.addr + (512 if i == victim else 0), e.size, e.time_us or 0, "")
            for i, e in enumerate(snap.device_traces[0])
        ]
    )
    tampered["segments"] = pickle.loads(REAL.read_bytes())["segments"]  # trusted test fixture
    bad = tmp_path / "bad.pickle"
    bad.write_bytes(pickle.dumps(tampered, protocol=4))
    assert replay_main(str(bad), as_json=False) == 1
    assert "MISMATCH" in capsys.readouterr().out

    evil = tmp_path / "evil.pickle"
    _write_evil(evil, _OpenCall(tmp_path / "ran"))
    assert replay_main(str(evil), as_json=False) == 2
    assert "refused" in capsys.readouterr().err
    assert replay_main(str(evil), as_json=True) == 2
    assert json.loads(capsys.readouterr().out)["refused"] is True
    assert not (tmp_path / "ran").exists()


# ------------------------------------------------------------------ against a real GPU (skipped without)


@pytest.mark.gpu
def test_model_matches_a_fresh_gpu_snapshot(tmp_path: Path) -> None:
    import torch

    torch.cuda.memory._record_memory_history(max_entries=100_000)
    try:
        net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(64, 128, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(7),
            torch.nn.Flatten(), torch.nn.Linear(128 * 49, 1000),
        ).cuda()  # fmt: skip
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        for bs in (4, 8, 3):
            x = torch.randn(bs, 3, 96, 96, device="cuda")
            net(x).sum().backward()
            opt.step()
            opt.zero_grad()
        torch.cuda.synchronize()
        path = tmp_path / "gpu.pickle"
        with path.open("wb") as f:
            pickle.dump(torch.cuda.memory._snapshot(), f)
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    r = replay(load_snapshot(path))
    assert r.allocs > 0
    assert r.matches, r.format_text()


# ------------------------------------------------------------------ robustness: odd files never crash


_ACTIONS = [
    "alloc",
    "free_requested",
    "free_completed",
    "segment_alloc",
    "segment_free",
    "oom",
    "snapshot",
    "x",
]
_BASE = 0x7000_0000_0000


@settings(max_examples=150, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.sampled_from(_ACTIONS),
            st.integers(0, 48).map(lambda k: _BASE + k * 512 * 1024),
            st.sampled_from([0, 1, 700, 512 * 1024, 2 * MiB, 3 * MiB, 20 * MiB, 25 * MiB]),
        ),
        max_size=40,
    ),
    segs=st.lists(
        st.tuples(st.integers(0, 40), st.sampled_from([2 * MiB, 20 * MiB]), st.booleans()), max_size=3
    ),
)
def test_replay_never_crashes_on_odd_traces(
    events: list[tuple[str, int, int]], segs: list[tuple[int, int, bool]]
) -> None:
    seg_dicts = []
    for k, size, used in segs:
        addr = _BASE + k * 512 * 1024
        blocks = [{"size": size, "state": "active_allocated" if used else "inactive", "requested_size": 7}]
        seg_dicts.append({"address": addr, "total_size": size, "blocks": blocks})
    trace = [{"action": a, "addr": addr, "size": size} for a, addr, size in events]
    snap = parse_snapshot({"segments": seg_dicts, "device_traces": [trace]})
    report = replay(snap)
    assert report.events == len(events)
    report.format_text()
    json.dumps(report.to_dict())


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_load_snapshot_only_raises_snapshot_error_on_corrupt_bytes(data: st.DataObject) -> None:
    m = CachingAllocatorModel(record_history=True)
    for s in (100, 3 * MiB, 700):
        m.free(m.malloc(s, tag="f.py:1:g"))
    good = pickle.dumps(build_snapshot_dict(trace_from_events(m.events), m.segments()), protocol=4)
    raw = bytearray(good)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    with contextlib.suppress(SnapshotError):
        load_snapshot(bytes(raw))
