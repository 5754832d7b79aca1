"""The engine's CUDA code paths without a GPU: a fake ``torch.cuda`` (memory history, snapshot, counters).

Each test states the rule from PyTorch's source it checks. Trace dicts are shaped like
``torch.cuda.memory._snapshot()`` output (``segments`` + ``device_traces``), either built by hand or the
real snapshot in tests/data (taken on a GPU with ``_record_memory_history``).
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from vggexplorer.core.allocator.snapshot import ALLOCATED_STATES, _RefuseAllClasses
from vggexplorer.core.model.config import RunConfig
from vggexplorer.core.model.head import preset
from vggexplorer.core.run import execution
from vggexplorer.core.run.allocator_level import CudaHistorySource, ex_wall0
from vggexplorer.core.run.tracer import Tracer, is_oom_error

MiB = 1024 * 1024
REAL = Path(__file__).parent / "data" / "real_snapshot_small_cnn.pickle"
S, L = 0x7F0000000000, 0x7F0040000000  # a small (2 MiB) and a large (20 MiB) segment


def stats(allocated: int, reserved: int, active: int, peak: int = 0) -> dict[str, int]:
    return {
        "allocated_bytes.all.current": allocated,
        "reserved_bytes.all.current": reserved,
        "active_bytes.all.current": active,
        "allocated_bytes.all.peak": peak,
    }


class FakeCuda:
    """``torch.cuda`` as CudaHistorySource uses it: counters now, memory history, snapshot."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, start: dict[str, int]) -> None:
        self.counters = start
        self.snapshot: dict[str, Any] | Exception = {"segments": [], "device_traces": [[]]}
        self.history_calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
        monkeypatch.setattr(torch.cuda, "memory_stats", lambda device=None: dict(self.counters))
        monkeypatch.setattr(torch.cuda.memory, "_record_memory_history", self._record)
        monkeypatch.setattr(torch.cuda.memory, "_snapshot", self._snapshot)

    def _record(self, *args: Any, **kwargs: Any) -> None:
        self.history_calls.append((args, kwargs))

    def _snapshot(self, device: object = None) -> dict[str, Any]:
        if isinstance(self.snapshot, Exception):
            raise self.snapshot
        return self.snapshot


def entry(action: str, addr: int, size: int, t_us: int) -> dict[str, Any]:
    return {"action": action, "addr": addr, "size": size, "stream": 0, "time_us": t_us, "frames": []}


def source_with(fake: FakeCuda) -> CudaHistorySource:
    t0 = time.perf_counter()
    return CudaHistorySource(torch.device("cuda", 0), t0, ex_wall0(t0))


def hand_trace() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Requests whose block sizes differ from the requested sizes in each of the allocator's ways."""
    t = time.time_ns() // 1000
    trace = [
        entry("segment_alloc", S, 2 * MiB, t),
        entry("alloc", S, 1000, t + 1),  # small pool: rounded to 1024 B, remainder split off (>= 512 B)
        entry("segment_alloc", L, 20 * MiB, t + 2),
        entry("alloc", L, 3 * MiB + 1, t + 3),  # rounded to 3 MiB + 512; remainder > 1 MiB: split
        # 16.5 MiB from the 17 MiB - 512 B left: remainder <= 1 MiB, the whole free block is allocated
        entry("alloc", L + 3 * MiB + 512, 33 * MiB // 2, t + 4),
        entry("free_requested", S, 1000, t + 5),
        entry("free_completed", S, 1000, t + 6),
    ]
    segments = [
        {
            "device": 0, "address": S, "total_size": 2 * MiB, "stream": 0, "segment_type": "small",
            "blocks": [{"address": S, "size": 2 * MiB, "requested_size": 0, "state": "inactive"}],
        },
        {
            "device": 0, "address": L, "total_size": 20 * MiB, "stream": 0, "segment_type": "large",
            "blocks": [
                {"address": L, "size": 3 * MiB + 512, "requested_size": 3 * MiB + 1,
                 "state": "active_allocated"},
                {"address": L + 3 * MiB + 512, "size": 17 * MiB - 512, "requested_size": 33 * MiB // 2,
                 "state": "active_allocated"},
            ],
        },
    ]  # fmt: skip
    return trace, segments


def replayed_hand_trace(monkeypatch: pytest.MonkeyPatch, end: dict[str, int]) -> CudaHistorySource:
    """A source that recorded ``hand_trace`` from zero counters and stopped with ``end`` as the counters."""
    fake = FakeCuda(monkeypatch, stats(0, 0, 0))
    src = source_with(fake)
    trace, segments = hand_trace()
    fake.snapshot = {"segments": segments, "device_traces": [trace]}
    fake.counters = end
    src.stop()
    return src


def test_allocated_and_active_move_by_block_size_not_requested_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """c10/cuda/CUDACachingAllocator.cpp: ``DeviceCachingAllocator::malloc`` records the ALLOC trace entry
    with ``orig_size`` (the request) but increases ``allocated_bytes``/``active_bytes`` by ``block->size``
    (``round_size`` to 512 B; a large-pool block is not split when the remainder is <= 1 MiB,
    ``should_split``); ``free`` decreases ``allocated_bytes`` by ``block->size`` and records FREE_REQUESTED
    with ``block->requested_size``; ``free_block`` (FREE_COMPLETED) decreases ``active_bytes``. The replayed
    curve must end at the counters ``memory_stats()`` reads after ``_snapshot()``."""
    src = replayed_hand_trace(monkeypatch, stats(20 * MiB, 22 * MiB, 20 * MiB, peak=20 * MiB + 1024))
    totals = [e.total for e in src.events]
    active = [e.active for e in src.events]
    reserved = [e.reserved for e in src.events]
    assert totals == [0, 1024, 1024, 1024 + 3 * MiB + 512, 1024 + 20 * MiB, 20 * MiB, 20 * MiB]
    assert active == [0, 1024, 1024, 1024 + 3 * MiB + 512, 1024 + 20 * MiB, 1024 + 20 * MiB, 20 * MiB]
    assert reserved[-1] == 22 * MiB
    assert max(totals) == 20 * MiB + 1024  # == max_memory_allocated
    assert not any("differs" in n or "overflow" in n for n in src.notes), src.notes


def test_history_is_recorded_without_tracebacks(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch/cuda/memory.py ``_record_memory_history``: ``context=None`` records no tracebacks; the engine
    keeps no frames, so it asks for none (``context="alloc"`` collected one per allocation for nothing)."""
    fake = FakeCuda(monkeypatch, stats(0, 0, 0))
    src = source_with(fake)
    src.stop()
    (args, kwargs), _off = fake.history_calls
    assert args == ("all",) and kwargs["context"] is None
    assert kwargs["max_entries"] == CudaHistorySource.max_entries


def _real_snapshot_dict() -> dict[str, Any]:
    obj = _RefuseAllClasses(io.BytesIO(REAL.read_bytes())).load()
    assert isinstance(obj, dict)
    return obj


def _final_counters(snap: dict[str, Any]) -> tuple[int, int]:
    allocated = sum(
        b["size"] for s in snap["segments"] for b in s["blocks"] if b["state"] in ALLOCATED_STATES
    )
    return allocated, sum(s["total_size"] for s in snap["segments"])


def test_ring_buffer_overflow_is_detected_and_anchored_at_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch/cuda/memory.py ``_record_memory_history`` ("Buffer behavior"): with ``max_entries`` reached,
    new entries overwrite the oldest, so the trace starts mid-run. The real snapshot's trace does (3 of its
    10 segments are older than its first entry): with max_entries = its length, the engine must say so and
    anchor the totals at the counters read at the end — the counters at the start (here 0, the run started
    before the kept entries) would offset the whole replay (old code: a curve that goes negative)."""
    snap = _real_snapshot_dict()
    n = len(snap["device_traces"][0])
    monkeypatch.setattr(CudaHistorySource, "max_entries", n)
    fake = FakeCuda(monkeypatch, stats(0, 0, 0))
    src = source_with(fake)
    allocated, reserved = _final_counters(snap)
    fake.snapshot = snap
    fake.counters = stats(allocated, reserved, allocated)
    src.stop()
    assert any("overflowed its ring buffer" in note for note in src.notes), src.notes
    totals = np.array([e.total for e in src.events])
    assert totals[-1] == allocated and src.events[-1].reserved == reserved
    assert totals.min() >= 0
    # each block was allocated and freed with the same size: every block-size free matches its alloc
    assert all(e.total % 512 == 0 for e in src.events)


def test_history_that_begins_after_the_first_tensor_is_said_to_start_mid_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The allocator stamps an ``alloc`` trace entry inside ``DeviceCachingAllocator::malloc``
    (c10/cuda/CUDACachingAllocator.cpp, ``record_trace`` with ``getApproximateTime``), before the op that
    asked returns and the tracer records the storage. So in a complete history the first ``alloc`` is no
    later than the tracer's first row; a later one means the oldest entries are gone even below
    ``max_entries`` (a ring buffer sized elsewhere, a restarted recording), and the run must say so."""
    src = replayed_hand_trace(monkeypatch, stats(20 * MiB + 4096, 22 * MiB, 20 * MiB + 4096))
    first_alloc = next(r["time_s"] for r in src.trace or () if r["action"] == "alloc")
    assert not src.note_late_start(first_alloc + 0.001)  # the tracer saw it after the allocator: complete
    assert not any("starts" in n and "after the run's first tensor" in n for n in src.notes)
    assert src.note_late_start(first_alloc - 1.0)  # the run's first tensor came a second before the trace
    assert src.overflowed
    assert any("oldest entries are missing" in n for n in src.notes), src.notes


def test_counters_disagreeing_with_the_replay_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without overflow, the end-anchored replay starts at the counters read at the start; if it does not
    (a missed event), the notes say by how much rather than showing a silently shifted curve."""
    src = replayed_hand_trace(monkeypatch, stats(20 * MiB + 4096, 22 * MiB, 20 * MiB + 4096))
    assert any("differs from memory_stats()" in n and "allocated +4,096 B" in n for n in src.notes), src.notes
    assert src.events[-1].total == 20 * MiB + 4096


def test_unreadable_history_says_what_the_allocator_level_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """When ``_snapshot()`` fails, no counter series was read during the run (the tracer reads
    ``memory_stats`` at tensor events only when the history did not start): the note must not claim
    "from counters"; it gives the counters read at the end instead."""
    fake = FakeCuda(monkeypatch, stats(0, 0, 0))
    src = source_with(fake)
    fake.snapshot = RuntimeError("snapshot failed")
    fake.counters = stats(5 * MiB, 20 * MiB, 5 * MiB, peak=7 * MiB)
    src.stop()
    (note,) = src.notes
    assert "from counters" not in note and "no allocator-level series" in note
    assert "allocated 5,242,880 B" in note and "peak allocated 7,340,032 B" in note
    assert src.events == [] and src.end == (5 * MiB, 20 * MiB, 5 * MiB)


@pytest.mark.parametrize(
    "message",
    [
        "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
        "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
    ],
)
def test_cublas_and_cudnn_allocation_failures_are_oom(message: str) -> None:
    """aten/src/ATen/cuda/CUDABlas.h ``TORCH_CUDABLAS_CHECK`` raises "CUDA error: <status> when calling
    `<expr>`" with the status name from ``_cublasGetErrorEnum`` (CUDABlas.cpp); aten/src/ATen/cudnn/
    Exceptions.h ``AT_CUDNN_CHECK`` raises "cuDNN error: <cudnnGetErrorString>". Both are RuntimeErrors,
    not ``torch.OutOfMemoryError``; ``*_ALLOC_FAILED`` means the library could not get device memory."""
    assert is_oom_error(RuntimeError(message))
    assert not is_oom_error(RuntimeError("CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `x`"))


def test_cuda_tracer_counts_device_storages_only() -> None:
    """A CUDA run's tensor level is device memory: a CPU storage (Adam's ``step`` counters are CPU scalars,
    torch/optim/adam.py ``_init_group``, unless capturable/fused) must not be counted. A CPU tracer counts
    it."""
    for cuda_device, expected in ((0, 0), (None, 4 * 1000)):
        tr = Tracer(cuda_device=cuda_device, record_ptr=False)
        tr.read_counters = False
        with tr:
            x = torch.ones(1000)  # a CPU storage
        tr.close()
        assert sum(tr.delta) == expected
        del x


def test_execute_on_cuda_without_an_index_uses_the_current_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """``torch.device("cuda")`` has index None; torch/cuda/__init__.py ``current_device`` gives the device
    PyTorch would use. A tracer made with ``cuda_device=None`` behaves as on CPU (reads no CUDA counters,
    keeps CPU storages), so ``execute(device="cuda")`` must resolve the index first."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    seen: dict[str, Any] = {}

    class Stop(Exception):
        pass

    def fake_tracer(*args: Any, **kwargs: Any) -> Tracer:
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(execution, "Tracer", fake_tracer)
    cfg = RunConfig(head=preset("fc"), device="cpu", batch=1, input_hw=(224, 224), mode="eval")
    with pytest.raises(Stop):
        execution.execute(cfg, device="cuda")
    assert seen["cuda_device"] == 1


def test_cuda_runs_say_that_layer_spans_are_host_enqueue_times() -> None:
    """CUDA kernels run asynchronously to the host (CUDA C Programming Guide, "Asynchronous Concurrent
    Execution"); module hooks run on the host, so a span ends when its kernels were queued."""
    assert "host enqueue times" in execution.CUDA_SPAN_NOTE
