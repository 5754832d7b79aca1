"""The CPU allocator level and the tensor level against independent readings.

Allocator level. The engine reads ``total_allocated`` — the c10 CPU allocator's own running counter — from
the profiler's allocation events, and takes it relative to its value just before the run's first event
(the counter is process-wide and survives profiling sessions). The independent reading here runs the
same config's program (``execute``, the very step code, in this thread) under our own
``torch.profiler.profile(profile_memory=True)`` and never looks at that counter: it sorts the ``[memory]``
events of the kineto results by time and adds up their signed sizes from 0. The model is built inside
both profiled regions, so nothing that existed before profiling takes part in either sum. The two peaks
must be equal to the byte, and the engine's whole allocator series must be the independent running sum,
event for event, over the engine's (shorter) window.

Tensor level. ``torch.distributed._tools.mem_tracker.MemTracker`` (PyTorch's own, independent
implementation) counts live tensor storages during the same train step built by hand; its peak must equal
the engine's tensor-level peak. (tests/test_tracer.py checks the bare Tracer against MemTracker on a small
net; this checks the engine's whole program on VGG11.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from vggexplorer.core.model.backbone import build_model
from vggexplorer.core.model.config import RunConfig
from vggexplorer.core.model.head import preset
from vggexplorer.core.run import program
from vggexplorer.core.run.engine import run
from vggexplorer.core.run.execution import execute

CONFIGS = {
    "gap-64-train-step-adam": dict(head="gap", hw=64, mode="train-step", optimizer="adam"),
    "gap-32-eval": dict(head="gap", hw=32, mode="eval", optimizer="sgd"),
    # oneDNN's re-laid-out copy of the 7×7 head conv's weight: allocator level ≫ tensor level
    "fcn-224-train": dict(head="fcn", hw=224, mode="train", optimizer="sgd"),
}


def config(name: str, **kw: object) -> RunConfig:
    c = CONFIGS[name]
    hw = int(c["hw"])  # type: ignore[call-overload]
    return RunConfig(
        head=preset(str(c["head"])),
        device="cpu",
        batch=1,
        input_hw=(hw, hw),
        mode=str(c["mode"]),
        optimizer=str(c["optimizer"]),
        sample_hz=0,
        **kw,  # type: ignore[arg-type]
    )


def profiler_deltas(cfg: RunConfig) -> np.ndarray:
    """Signed sizes of the CPU allocator events of ``execute(cfg)``, in time order, from our own profiler."""
    cpu = torch._C._autograd.DeviceType.CPU
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        ex = execute(cfg)
        assert ex.status == "ok"
        del ex
    events = [
        (e.start_ns(), k, e.nbytes())
        for k, e in enumerate(prof.profiler.kineto_results.events())
        if e.name() == "[memory]" and e.device_type() == cpu
    ]
    events.sort()
    return np.asarray([n for _, _, n in events], np.int64)


def find_run(haystack: np.ndarray, needle: np.ndarray) -> int:
    """Index where ``needle`` occurs contiguously in ``haystack`` (-1 if it does not)."""
    n = len(needle)
    for i in np.flatnonzero(haystack == needle[0]):
        if i + n <= len(haystack) and np.array_equal(haystack[i : i + n], needle):
            return int(i)
    return -1


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_allocator_peak_equals_an_independent_profiler_sum(name: str) -> None:
    r = run(config(name))
    assert r.status == "ok" and len(r.allocator) > 0
    mine = profiler_deltas(config(name, allocator_level=False))
    level = np.cumsum(mine)
    # exact: both readings come from the same allocation reports; no tolerance is needed or given
    assert r.summary.peak_allocated_bytes == int(level.max())
    assert r.summary.peak_allocated_bytes == r.allocator.peak
    # the engine's series is our running sum, event for event, over the engine's window
    start = find_run(mine, r.allocator.delta)
    assert start >= 0, "the engine's allocator events are not a contiguous run of the profiler's"
    offset = int(level[start] - mine[start])  # what the independent sum holds before the engine's window
    assert np.array_equal(r.allocator.total + offset, level[start : start + len(r.allocator)])
    assert offset == 0  # the model is built inside the window: nothing was allocated before it
    assert r.summary.peak_allocated_bytes >= r.summary.peak_tensor_bytes
    if name.startswith("fcn"):  # why this level exists: a kernel-internal buffer only it sees
        extra = r.summary.peak_allocated_bytes - r.summary.peak_tensor_bytes
        assert extra > 0.5 * 4096 * 512 * 7 * 7 * 4, extra  # vs the 7×7 head conv's weight bytes


def memtracker_peak(cfg: RunConfig) -> int:
    """The engine's train step built by hand (same seed, model, inputs, loss, optimizer), under MemTracker."""
    from torch.distributed._tools.mem_tracker import MemTracker

    mt = MemTracker()
    with mt:  # everything the step holds is created inside: parameters and inputs too
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.head, device="cpu", init=True)
        params = list(model.parameters())
        n, (h, w) = cfg.batch, cfg.input_hw
        x = torch.randn(n, 3, h, w)
        y = torch.randint(0, program._num_classes(cfg.head), (n,))
        model.train(cfg.train)
        opt = program._make_optimizer(cfg, params) if cfg.mode == "train-step" else None
        if cfg.train:
            model.zero_grad(set_to_none=True)
            out = model(x)  # the engine keeps the output and the loss until the iteration ends
            loss = program._loss(out, y)
            loss.backward()
            if opt is not None:
                opt.step()
            del loss, out
        else:
            with torch.no_grad():
                out = model(x)
            del out
    peak = int(mt.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"])
    del model, params, x, y, opt
    return peak


@pytest.mark.parametrize("name", ["gap-64-train-step-adam", "gap-32-eval"])
def test_tensor_peak_equals_memtracker(name: str) -> None:
    cfg = config(name, allocator_level=False)
    r = run(cfg)
    assert r.status == "ok"
    assert r.summary.peak_tensor_bytes == memtracker_peak(cfg)
