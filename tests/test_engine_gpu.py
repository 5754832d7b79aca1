"""GPU checks of the engine (marker ``gpu``: skipped with a reason where CUDA is not available)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vggexplorer.core.model.config import RunConfig
from vggexplorer.core.model.head import preset
from vggexplorer.core.run.engine import run
from vggexplorer.core.run.tracer import FailAt

pytestmark = pytest.mark.gpu


def cfg(**kw: object) -> RunConfig:
    base: dict[str, object] = dict(
        head=preset("fcn"), device="cuda", batch=2, input_hw=(384, 384), mode="train"
    )
    base.update(kw)
    return RunConfig(**base)  # type: ignore[arg-type]


def test_allocator_timeline_agrees_with_memory_allocated() -> None:
    """Every allocated-bytes value read directly (memory_stats at each tensor event) is a level of the
    timeline replayed from the memory history, and after the run torch is back where it started."""
    from vggexplorer.core.run.allocator_level import AllocatorSource, ex_wall0, start_allocator_source
    from vggexplorer.core.run.execution import execute

    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    dev = torch.device("cuda", torch.cuda.current_device())
    box: dict[str, AllocatorSource | None] = {}

    def started(tr: object) -> None:
        t0 = tr.t0  # type: ignore[attr-defined]
        box["s"] = start_allocator_source(dev, t0, ex_wall0(t0))

    def stop(tr: object) -> None:
        src = box["s"]
        assert src is not None
        src.stop()

    ex = execute(cfg(mode="train-step", optimizer="sgd"), on_started=started, on_before_release=stop)
    src = box["s"]
    assert src is not None
    timeline, trace = src.timeline(ex.tracer)
    counters = ex.tracer.cuda_counter_timeline()
    assert timeline is not None and counters is not None and trace
    direct = set(counters.total.tolist())
    replayed = set(timeline.total.tolist())
    assert direct <= replayed
    assert timeline.reserved is not None and np.all(timeline.reserved >= timeline.total)
    assert torch.cuda.memory_allocated() == before


def test_counter_fallback_matches_trace_peak() -> None:
    """The memory-history trace and the counters read at tensor events agree on the peak (± workspaces)."""
    traced = run(cfg())
    counters = run(cfg(allocator_level=False))
    assert traced.allocator_trace is not None and len(traced.allocator_trace) > 0
    # counters only see the level between ops, the trace sees inside ops (workspaces): never lower
    assert traced.summary.peak_allocated_bytes >= counters.summary.peak_tensor_bytes
    assert traced.summary.peak_tensor_bytes == counters.summary.peak_tensor_bytes


def test_history_trace_and_timeline_agree_on_peak() -> None:
    """Trace entries carry requested sizes, allocated_bytes moves by block sizes (CUDACachingAllocator.cpp
    ``malloc``: ALLOC with ``orig_size``, ``allocated_bytes`` += ``block->size``): the timeline (block bytes)
    is never below the requested-bytes replay, its steps are whole blocks (multiples of 512 B), and it ends
    where ``memory_allocated()`` is after the run's last event."""
    r = run(cfg())
    assert r.allocator_trace is not None
    level, peak = 0, 0
    base = int(r.allocator.total[0] - r.allocator.delta[0])
    for e in r.allocator_trace:
        if e["action"] == "alloc":
            level += e["size"]
        elif e["action"] == "free_requested":
            level -= e["size"]
        peak = max(peak, level)
    assert base + peak <= r.summary.peak_allocated_bytes
    assert np.all(r.allocator.delta % 512 == 0)
    assert not any("differs from memory_stats" in n or "inconsistent" in n for n in r.notes), r.notes


def test_nvml_process_at_least_reserved() -> None:
    r = run(cfg())
    if r.summary.peak_device_bytes is None:
        pytest.skip("NVML per-process memory not available here: " + "; ".join(r.notes))
    assert r.summary.peak_reserved_bytes is not None
    assert r.summary.peak_device_bytes >= r.summary.peak_reserved_bytes


def test_oom_on_cuda_is_caught_and_memory_released() -> None:
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    r = run(cfg(), fail_at=FailAt("classifier.0", "forward"))
    assert r.status == "oom" and r.fault is not None and r.fault.layer == "classifier.0"
    assert torch.cuda.memory_allocated() == before
    assert run(cfg(batch=1)).status == "ok"
