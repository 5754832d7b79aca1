"""The tensor-level tracer: exact live-storage bytes, modules, phases, and nothing left installed."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from leaks import installed
from torch.distributed._tools.mem_tracker import MemTracker

from vggexplorer.core.results.result import CATEGORIES, PHASES
from vggexplorer.core.run.tracer import Cancelled, FailAt, Tracer, is_oom_error


def small_net() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1),
        torch.nn.ReLU(inplace=True),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(16 * 16 * 16, 10),
    )


def test_peak_equals_memtracker_independent_count() -> None:
    """PyTorch's own MemTracker (an independent implementation) sees the same live-storage peak."""
    m = small_net()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))

    def step() -> None:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        opt.step()

    step()  # momentum buffers exist before both measurements; grads are dropped before each
    opt.zero_grad()
    mt = MemTracker()
    mt.track_external(m, opt, x, y)
    with mt:
        step()
    expected = mt.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]
    opt.zero_grad()

    tr = Tracer()
    held = [*m.parameters(), x, y]
    held += [s["momentum_buffer"] for s in opt.state.values()]
    for t in held:
        assert t is not None
        tr.register(t, "parameters")
    tr.set_model(m)
    with tr:
        step()
    tr.close()
    assert tr.peak == expected
    # and the live total at the end equals the storages we hold: params, grads (new), momentum, inputs
    live = {t.untyped_storage()._cdata: t.untyped_storage().nbytes() for t in held}
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    live.update({g.untyped_storage()._cdata: g.untyped_storage().nbytes() for g in grads})
    assert tr.total == sum(live.values())


def test_rows_carry_module_phase_and_frees_balance() -> None:
    m = small_net()
    x = torch.randn(2, 3, 32, 32)
    tr = Tracer()
    tr.set_model(m)
    with tr:
        tr.set_phase("forward", 0)
        out = m(x)
        tr.set_phase("backward", 0)
        out.sum().backward()
        tr.set_phase("idle", 0)
        del out
    tl = tr.tensor_timeline()
    tr.close()
    mods = {tr.strings[i] for i in tl.module if i >= 0}
    assert {"0", "2", "4"} <= mods  # Sequential children: conv, pool, linear
    fwd = tl.phase == PHASES.index("forward")
    conv_out = 2 * 16 * 32 * 32 * 4
    assert conv_out in tl.delta[fwd]
    # every storage that was freed has exactly one alloc and one free row of opposite size
    assert tl.storage is not None
    for sid in np.unique(tl.storage):
        rows = tl.delta[tl.storage == sid]
        assert rows[0] > 0 and (len(rows) == 1 or rows.sum() == 0)
    assert np.array_equal(tl.total, np.cumsum(tl.delta))
    spans = {(s.module, s.phase) for s in tr.spans}
    assert ("0", "forward") in spans and ("4", "backward") in spans


def test_categories_assigned_after_the_fact() -> None:
    m = small_net()
    x = torch.randn(2, 3, 32, 32)
    tr = Tracer()
    tr.set_model(m)
    with tr:
        tr.set_phase("forward", 0)
        out = m(x)
        tr.mark([out], "outputs")
        tr.classify_live("forward", 0, "activations")
        tr.set_phase("backward", 0)
        out.sum().backward()
        tr.mark((p.grad for p in m.parameters()), "gradients")
    tl = tr.tensor_timeline()
    tr.close()
    cats = {CATEGORIES[c] for c in tl.category}
    assert {"activations", "gradients", "outputs", "temporaries"} <= cats
    grad_bytes = sum(p.numel() * 4 for p in m.parameters())
    g = tl.category == CATEGORIES.index("gradients")
    assert tl.delta[g & (tl.delta > 0)].sum() == grad_bytes


def test_cancel_and_fail_at_raise_and_leave_nothing_installed() -> None:
    before = installed()
    m = small_net()
    x = torch.randn(1, 3, 32, 32)
    ev = threading.Event()
    ev.set()
    tr = Tracer(cancel=ev)
    tr.set_model(m)
    with pytest.raises(Cancelled), tr:
        m(x)
    assert installed() == before
    tr = Tracer(fail_at=FailAt("2", "forward"))
    tr.set_model(m)
    with pytest.raises(RuntimeError) as ei, tr:
        tr.set_phase("forward", 0)
        m(x)
    assert is_oom_error(ei.value)
    assert tr._current_module() == "2"
    assert installed() == before


def test_under_fake_tensor_mode_matches_real() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    def trace(fake: bool) -> list[tuple[int, str, str]]:
        tr = Tracer(record_ptr=not fake)
        fm = FakeTensorMode() if fake else None
        if fm is not None:
            fm.__enter__()
        try:
            with tr:
                torch.manual_seed(0)
                m = small_net()
                tr.set_model(m)
                tr.set_phase("forward", 0)
                out = m(torch.randn(2, 3, 32, 32))
                tr.set_phase("backward", 0)
                out.sum().backward()
                del out, m
        finally:
            if fm is not None:
                fm.__exit__(None, None, None)
        tl = tr.tensor_timeline()
        tr.close()
        return [
            (int(d), tr.strings[o] if o >= 0 else "", tr.strings[mo] if mo >= 0 else "")
            for d, o, mo in zip(tl.delta, tl.op, tl.module, strict=True)
        ]

    real, fake = trace(False), trace(True)
    assert len(real) > 20
    assert real == fake
