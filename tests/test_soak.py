"""Soak: many edit+run cycles, then count what is left behind.

1. ``test_gui_soak``: one running window; each cycle makes an edit (insert a ReLU / undo it, alternating,
   through the model's undo stack), runs the real engine in its child process (gap head, 32×32, batch 1,
   CPU, eval with every 4th cycle in train mode, 1 iteration) and waits for ``runEnded``; every cycle
   removes the oldest run through the Remove button once three are listed. ``GUI_CYCLES`` = 500 cycles
   (~0.6 s each here: CPU runs fork from the fork server, torch already imported; env
   ``VGGEXPLORER_SOAK_CYCLES`` sets another count). After a warm-up of ``WARMUP`` cycles it asserts:
   GUI-process RSS growth ≤ 5 %, no new Python threads, no run child process left (long-lived helpers
   such as the prediction service and the fork server may stay, never more of them), no growth of the
   QObjects under the window (``findChildren``) nor of gc-tracked PySide6 wrappers, the runs list exactly
   as the cycles left it, the undo stack bounded.
2. ``test_engine_soak``: 500 in-process ``run_iter`` runs (no GUI) of the same tiny config, eval/train
   alternating, every 25th cancelled mid-run. After warm-up: RSS growth ≤ 5 %, no threads, dispatch modes,
   torch-function modes, global module hooks or profilers left installed, and the allocator-level timeline
   starting from the same baseline and reaching the same peak and end level in every run of a mode.

Both print the numbers they measured (``pytest -s`` shows them).
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from PySide6.QtCore import QObject
from pytestqt.qtbot import QtBot

WARMUP = 10
GUI_CYCLES = 500
ENGINE_RUNS = 500
MAX_RSS_GROWTH = 0.05
RUN_TIMEOUT_MS = 240_000


def _rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


def _pyside_objects() -> int:
    return sum(1 for o in gc.get_objects() if type(o).__module__.startswith(("PySide6", "shiboken6")))


def _thread_names() -> Counter[str]:
    return Counter(t.name for t in threading.enumerate() if t.is_alive())


def _run_children() -> list[str]:
    """Child processes of runs (``vggexplorer-child``) still alive."""
    return [p.name for p in multiprocessing.active_children() if p.name == "vggexplorer-child"]


def _qt_children(w: QObject) -> int:
    return len(w.findChildren(QObject))


# ----------------------------------------------------------------------------------------------- GUI soak


@pytest.fixture
def window(qtbot: QtBot, tmp_path: Path) -> Iterator[Any]:
    from vggexplorer.qt.main_window import MainWindow
    from vggexplorer.qt.settings import AppSettings

    w = MainWindow(AppSettings.at(str(tmp_path / "settings.ini")), discover=False)
    qtbot.addWidget(w, before_close_func=lambda win: win.shutdown())
    w.resize(1400, 900)
    w.show()
    qtbot.waitExposed(w)
    yield w
    w.shutdown()


@pytest.mark.slow
def test_gui_soak(qtbot: QtBot, window: Any) -> None:
    w = window
    w.load_preset("gap")
    w.controls.batch.setValue(1)
    w.controls.input_h.setValue(32)
    w.controls.iterations.setValue(1)
    modes = [w.controls.mode.findData("eval"), w.controls.mode.findData("train")]
    assert min(modes) >= 0
    cycles = int(os.environ.get("VGGEXPLORER_SOAK_CYCLES", "0")) or GUI_CYCLES
    threads0: Counter[str] = Counter()
    children0 = 0
    base: dict[str, int] = {}
    samples: list[tuple[int, int, int, int]] = []  # cycle, rss, qt children, pyside objects
    t_start = time.perf_counter()
    t_warm = t_start
    cycle = 0
    undo_max = 0
    while cycle < cycles:
        # --- edit (one undo step either way): insert a ReLU after the head, or undo that insert
        rows = w.head_model.rowCount()
        if cycle % 2 == 0:
            w.head_model.push_insert_type(rows, "ReLU")
            assert w.head_model.rowCount() == rows + 1
        else:
            w.undo_action.trigger()
            assert w.head_model.rowCount() == rows - 1
        undo_max = max(undo_max, w.undo_stack.count())
        w.controls.mode.setCurrentIndex(modes[1 if cycle % 4 == 3 else 0])
        assert w.head_model.report.ok, w.head_model.report.issue
        # --- run
        n_runs = len(w.runs_panel.runs())
        with qtbot.waitSignal(w.runEnded, timeout=RUN_TIMEOUT_MS):
            assert w.start_run()
        assert not w.worker.running
        runs = w.runs_panel.runs()
        assert len(runs) == n_runs + 1, "the runs list must grow by exactly one per run"
        assert runs[-1].status == "ok", w.message_bar.text.text()
        assert not w.message_bar.isVisible(), w.message_bar.text.text()
        # --- keep three runs: remove the oldest through the Remove button
        if len(runs) > 3:
            w.runs_panel.list.setCurrentRow(0)
            w.runs_panel.remove_button.click()
            assert w.runs_panel.runs() == runs[1:]
        w.flush_updates()
        assert _run_children() == [], "a run's child process outlived its run"
        cycle += 1
        if cycle == WARMUP:
            t_warm = time.perf_counter()
            base = {"rss": _rss(), "qt": _qt_children(w), "pyside": _pyside_objects()}
            threads0 = _thread_names()
            children0 = len(psutil.Process().children(recursive=True))
        if cycle >= WARMUP and (cycle - WARMUP) % 10 == 0:
            samples.append((cycle, _rss(), _qt_children(w), _pyside_objects()))
    elapsed = time.perf_counter() - t_start
    rss, qt, pyside = _rss(), _qt_children(w), _pyside_objects()
    per_cycle = (time.perf_counter() - t_warm) / max(cycle - WARMUP, 1)
    growth = rss / base["rss"] - 1
    print(
        f"\nGUI soak: {cycle} cycles in {elapsed:.0f} s ({per_cycle:.2f} s/cycle after warm-up); "
        f"RSS {base['rss'] / 2**20:.1f} → {rss / 2**20:.1f} MiB ({growth:+.2%}); "
        f"QObjects under the window {base['qt']} → {qt}; PySide wrappers {base['pyside']} → {pyside}; "
        f"undo stack ≤ {undo_max}"
    )
    for c, r, q, p in samples:
        print(f"  cycle {c:4d}: RSS {r / 2**20:8.1f} MiB  QObjects {q}  PySide wrappers {p}")
    assert cycle == cycles
    assert growth <= MAX_RSS_GROWTH, f"GUI RSS grew {growth:.1%} after warm-up"
    leaked = _thread_names() - threads0
    assert not leaked, f"threads left: {leaked}"
    assert _run_children() == []
    # Long-lived helpers the window keeps (the prediction service) are allowed, but never more of them.
    assert len(psutil.Process().children(recursive=True)) <= children0
    assert qt <= base["qt"], f"QObjects under the window grew {base['qt']} → {qt}"
    assert pyside <= base["pyside"] + 50, f"PySide wrappers grew {base['pyside']} → {pyside}"
    assert len(w.runs_panel.runs()) == 3
    assert undo_max <= 2


# -------------------------------------------------------------------------------------------- engine soak


def _torch_state() -> dict[str, Any]:
    """Everything a run may install process-wide; it must all be back to this after every run."""
    import torch
    import torch.nn.modules.module as mod

    hooks = {
        name: len(getattr(mod, name))
        for name in dir(mod)
        if name.startswith("_global_") and name.endswith("hooks") and hasattr(getattr(mod, name), "__len__")
    }
    return {
        "dispatch_modes": torch._C._len_torch_dispatch_stack(),
        "function_modes": torch._C._len_torch_function_stack(),
        "profiler": bool(torch.autograd.profiler._is_profiler_enabled),
        "grad_enabled": torch.is_grad_enabled(),
        "threads": sorted(t.name for t in threading.enumerate()),
        **hooks,
    }


@pytest.mark.slow
def test_engine_soak() -> None:
    from vggexplorer.core.model.config import RunConfig
    from vggexplorer.core.model.head import preset
    from vggexplorer.core.run.engine import run_iter

    configs = {
        mode: RunConfig(head=preset("gap"), device="cpu", input_hw=(32, 32), batch=1, mode=mode, iterations=1)
        for mode in ("eval", "train")
    }
    state0 = _torch_state()
    levels: dict[str, set[tuple[int, int, int, int]]] = {"eval": set(), "train": set()}
    rss0 = 0
    trajectory: list[tuple[int, int]] = []
    cancelled = 0
    t0 = time.perf_counter()
    for i in range(ENGINE_RUNS):
        mode = "train" if i % 2 else "eval"
        cancel = threading.Event()
        gen = run_iter(configs[mode], cancel)
        cancel_now = i % 25 == 24
        try:
            while True:
                next(gen)
                if cancel_now:
                    cancel.set()
        except StopIteration as stop:
            r = stop.value
        if cancel_now:
            assert r.status == "cancelled"
            cancelled += 1
        else:
            assert r.status == "ok", r.fault
            a = r.allocator
            assert len(a) > 0
            # baseline (level before the first event), end level, allocator and tensor peaks
            levels[mode].add(
                (
                    int(a.total[0] - a.delta[0]),
                    int(a.total[-1]),
                    r.summary.peak_allocated_bytes,
                    r.summary.peak_tensor_bytes,
                )
            )
        del r, gen
        state = _torch_state()
        assert state == state0, f"run {i} ({mode}) left state behind: {state} != {state0}"
        if i + 1 == 2 * WARMUP:
            rss0 = _rss()
        if (i + 1) % 50 == 0:
            trajectory.append((i + 1, _rss()))
    elapsed = time.perf_counter() - t0
    rss = _rss()
    growth = rss / rss0 - 1
    print(
        f"\nengine soak: {ENGINE_RUNS} runs ({cancelled} cancelled) in {elapsed:.0f} s "
        f"({elapsed / ENGINE_RUNS * 1000:.0f} ms/run); RSS {rss0 / 2**20:.1f} → {rss / 2**20:.1f} MiB "
        f"({growth:+.2%}) after {2 * WARMUP} warm-up runs; allocator levels {levels}"
    )
    for n, r in trajectory:
        print(f"  after run {n:4d}: RSS {r / 2**20:8.1f} MiB")
    assert growth <= MAX_RSS_GROWTH, f"RSS grew {growth:.1%} after warm-up"
    for mode, seen in levels.items():
        assert len(seen) == 1, f"{mode}: the allocator-level baseline/peaks changed between runs: {seen}"
        assert next(iter(seen))[0] == 0, f"{mode}: a run started above the allocator baseline"
