"""The run worker: finished / cancelled / errored, threads joined, child processes driven and reaped."""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Generator
from typing import Any

import numpy as np
import pytest
from generators import drive
from pytestqt.qtbot import QtBot

from vggexplorer.core.model.config import RunConfig
from vggexplorer.core.model.head import preset
from vggexplorer.core.results.meta import RunMeta
from vggexplorer.core.run.accumulate import EngineAccumulator
from vggexplorer.core.run.child import ChildProcessError, RemoteError, subprocess_call, subprocess_iter
from vggexplorer.core.run.progress import Progress
from vggexplorer.qt.worker import CallWorker, GeneratorWorker, WorkerError

# --- generators the tests drive (module level: the child processes import them by name) -----------------


def counting(n: int, cancel: threading.Event) -> Generator[int, None, str]:
    for i in range(n):
        if cancel.is_set():
            return "cancelled"
        yield i
    return f"counted {n}"


def waiting(_: object, cancel: threading.Event) -> Generator[str, None, str]:
    yield "started"
    cancel.wait(60)
    return "stopped" if cancel.is_set() else "timed out"


def failing(_: object, cancel: threading.Event) -> Generator[int, None, None]:
    yield 1
    raise ValueError("bad layer 7")


def dying(_: object, cancel: threading.Event) -> Generator[int, None, None]:
    yield 1
    os._exit(3)


def preloaded(_: object, cancel: threading.Event) -> Generator[bool, None, int]:
    """Whether torch was already imported when this child's work began, then the child's pid."""
    import sys

    yield "torch._dynamo" in sys.modules
    cancel.wait(60)
    return os.getpid()


class Cancelled:
    status = "cancelled"


# --- in-thread --------------------------------------------------------------------------------------------


def test_finished_carries_the_return_value(qtbot: QtBot) -> None:
    w = GeneratorWorker()
    seen: list[Any] = []
    order: list[str] = []
    w.progressed.connect(seen.append)
    w.finished.connect(lambda v: order.append(f"finished {v}"))
    w.done.connect(lambda: order.append("done"))
    with qtbot.waitSignal(w.done):
        w.start(lambda cancel: counting(5, cancel))
    assert order == ["finished counted 5", "done"]
    assert seen and seen[-1] == 4  # throttled, but the last report always arrives
    assert not w.running


def test_cancel_sets_the_event_and_reports_cancelled(qtbot: QtBot) -> None:
    w = GeneratorWorker()
    started = threading.Event()

    def gen(cancel: threading.Event) -> Generator[str, None, Cancelled]:
        started.set()
        yield "x"
        cancel.wait(30)
        return Cancelled()

    with qtbot.waitSignal(w.cancelled, timeout=10_000) as sig:
        w.start(gen)
        started.wait(10)
        w.cancel()
    assert isinstance(sig.args[0], Cancelled)
    assert not w.running


def test_errors_are_reported_with_phase_and_module(qtbot: QtBot) -> None:
    w = GeneratorWorker()

    def gen(cancel: threading.Event) -> Generator[Progress, None, None]:
        yield Progress(0.5, "backward", "features.8", 0, "")
        raise MemoryError("boom")

    with qtbot.waitSignal(w.errored) as sig:
        w.start(gen)
    err = sig.args[0]
    assert isinstance(err, WorkerError) and isinstance(err.exception, MemoryError)
    assert (err.phase, err.module) == ("backward", "features.8")
    assert "MemoryError: boom" in err.message and "raise MemoryError" in err.traceback


def test_start_while_running_is_refused(qtbot: QtBot) -> None:
    w = GeneratorWorker()
    gate = threading.Event()

    def gen(cancel: threading.Event) -> Generator[int, None, int]:
        yield 0
        gate.wait(10)
        return 1

    with qtbot.waitSignal(w.finished):
        w.start(gen)
        with pytest.raises(RuntimeError):
            w.start(gen)
        gate.set()


def test_accumulator_builds_partial_results(qtbot: QtBot) -> None:
    acc = EngineAccumulator("live", RunMeta(RunConfig(preset("gap")), head_label="gap", preset="gap"))
    for k in range(3):
        chunk = {
            "t": np.array([k * 0.1, k * 0.1 + 0.05]),
            "delta": np.array([100, -40]),
            "total": np.array([100 + 60 * k, 60 + 60 * k]),
            "phase": np.array([1, 1]),
            "module": np.array([0, 0]),
            "iteration": np.array([0, 0]),
        }
        assert acc.feed(Progress(0.1 * k, "forward", "features.0", 0, "", chunk, ("features.0",)))
    snap = acc.snapshot()
    assert len(snap.tensor) == 6 and snap.summary.peak_tensor_bytes == 220 and snap.name == "live"
    assert snap.config.preset == "gap" and snap.config.run.head == preset("gap")
    assert not acc.feed(Progress(0.5, "forward", "", 0, "no data"))
    assert acc.snapshot() is not snap  # a new object for the GUI thread every time


def test_call_worker(qtbot: QtBot) -> None:
    w = CallWorker()
    with qtbot.waitSignal(w.finished) as sig:
        w.start(lambda: 6 * 7)
    assert sig.args == [42]
    with qtbot.waitSignal(w.errored) as sig:
        w.start(lambda: 1 / 0)
    assert isinstance(sig.args[0].exception, ZeroDivisionError)


# --- child processes ---------------------------------------------------------------------------------------


def test_subprocess_iter_yields_and_returns() -> None:
    items, value = drive(subprocess_iter(f"{__name__}:counting", 4, threading.Event()))
    assert items == [0, 1, 2, 3] and value == "counted 4"
    assert multiprocessing.active_children() == []


def test_subprocess_iter_forwards_cancel() -> None:
    cancel = threading.Event()
    gen = subprocess_iter(f"{__name__}:waiting", None, cancel)
    assert next(gen) == "started"
    cancel.set()
    assert drive(gen) == ([], "stopped")
    assert multiprocessing.active_children() == []


def test_subprocess_iter_reraises_child_errors() -> None:
    gen = subprocess_iter(f"{__name__}:failing", None, threading.Event())
    assert next(gen) == 1
    with pytest.raises(RemoteError) as ei:
        next(gen)
    assert ei.value.type_name == "ValueError" and "bad layer 7" in str(ei.value)
    assert "in the run process" in "".join(getattr(ei.value, "__notes__", []))


def test_subprocess_iter_reports_a_dead_child() -> None:
    gen = subprocess_iter(f"{__name__}:dying", None, threading.Event())
    assert next(gen) == 1
    with pytest.raises(ChildProcessError, match="exit code 3"):
        next(gen)


def test_closing_the_generator_stops_the_child() -> None:
    gen = subprocess_iter(f"{__name__}:waiting", None, threading.Event())
    assert next(gen) == "started"
    gen.close()
    assert multiprocessing.active_children() == []


def test_forked_children_start_with_torch_imported_and_stay_separate() -> None:
    """CPU runs fork from the fork server: torch (and torch._dynamo) are there before the work starts, each
    child is a new process, cancel and clean-up work as for spawned children; spawned ones start bare."""
    pids = set()
    for _ in range(2):
        cancel = threading.Event()
        gen = subprocess_iter(f"{__name__}:preloaded", None, cancel, fork=True)
        assert next(gen) is True
        cancel.set()
        _, pid = drive(gen)
        assert pid != os.getpid()
        pids.add(pid)
        assert multiprocessing.active_children() == []
    assert len(pids) == 2
    items, value = drive(subprocess_iter(f"{__name__}:counting", 3, threading.Event(), fork=True))
    assert items == [0, 1, 2] and value == "counted 3"
    cancel = threading.Event()
    gen = subprocess_iter(f"{__name__}:preloaded", None, cancel)
    assert next(gen) is False  # spawned: a fresh interpreter that has not imported torch
    cancel.set()
    drive(gen)
    assert multiprocessing.active_children() == []


def test_subprocess_call() -> None:
    assert subprocess_call("math:factorial", 5) == 120
    with pytest.raises(RemoteError, match="not defined for negative"):
        subprocess_call("math:factorial", -1)
