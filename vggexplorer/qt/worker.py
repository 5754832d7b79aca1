"""Run work off the GUI thread: a generator (the engine's run) or a single call (device discovery).

Runs and device discovery execute in a *child process* (``subprocess_iter``/``subprocess_call`` of
:mod:`vggexplorer.core.run.child`), driven from a thread here. Measured, not guessed: the engine traces
every op through a Python dispatch mode, so its thread holds the GIL for 100–160 ms at a stretch (kernels
called from ``__torch_dispatch__`` keep the GIL) — in-process, the GUI thread froze that long. In a child
process the GUI never waits for the GIL, the GUI process never imports torch or initialises CUDA, the
measured process (RSS, NVML "this process") is the run alone, and a host OOM kill takes down the run, not
the app.

The shape follows superqt's ``GeneratorWorker`` (yielded / returned / errored / aborted), re-done for our
needs: the work runs on a plain, joinable ``threading.Thread`` and reports through Qt signals of a QObject
that lives on the GUI thread (Qt queues signals emitted from another thread, so slots run on the GUI thread
and never touch widgets from the worker). A ``QThread`` is not used because on Python 3.11 any Python code
run in a foreign thread leaves a ``_DummyThread`` in ``threading`` that looks alive forever and cannot be
joined — it would defeat the test suite's "no thread left running" check.

Guarantees: every start ends in exactly one of ``finished``/``cancelled``/``errored``; the thread has ended
and is joined before that signal's slots return control (``join`` runs first); exceptions are never
swallowed (``errored`` carries the exception and its traceback); ``cancel()`` sets the event the generator
checks at op/layer boundaries.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Protocol

from PySide6.QtCore import QObject, Signal

#: Progress reports are coalesced to at most one per this many seconds (the last one always goes out).
PROGRESS_INTERVAL_S = 0.05


@dataclass(frozen=True)
class WorkerError:
    """An exception raised by the work, with where it happened (from the last progress report)."""

    exception: BaseException
    traceback: str
    phase: str = ""
    module: str = ""
    partial: Any = None  # the last partial result, if the generator reported one

    @property
    def message(self) -> str:
        text = str(self.exception) or type(self.exception).__name__
        return (
            f"{type(self.exception).__name__}: {text}"
            if not isinstance(self.exception, RuntimeError)
            else text
        )


GeneratorFactory = Callable[[threading.Event], Generator[Any, None, Any]]


class Accumulator(Protocol):
    """Folds progress reports into a partial result, on the worker thread (cheap ``feed``; ``snapshot``
    only when a report is about to be emitted, at most every ``PROGRESS_INTERVAL_S``)."""

    def feed(self, progress: Any) -> bool:
        """Take one progress report; True when it added data to the partial result."""
        ...

    def snapshot(self) -> Any:
        """The partial result so far (a new object: it crosses to the GUI thread)."""
        ...


class GeneratorWorker(QObject):
    """Drives one generator per ``start``; signals arrive on the GUI thread.

    ``progressed(progress)`` for yielded values (throttled), ``partial(obj)`` with the accumulator's
    snapshot when it has new data, then one of ``finished(result)``,
    ``cancelled(result_or_None)``, ``errored(WorkerError)``. ``done`` follows any of those.
    """

    progressed = Signal(object)
    partial = Signal(object)
    finished = Signal(object)
    cancelled = Signal(object)
    errored = Signal(object)
    done = Signal()
    # internal: from the worker thread to the GUI thread
    _ended = Signal(str, object)

    def __init__(
        self,
        accumulator: Callable[[], Accumulator] | None = None,
        is_cancelled_result: Callable[[Any], bool] | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._make_acc = accumulator
        self._is_cancelled_result = is_cancelled_result or (lambda r: getattr(r, "status", "") == "cancelled")
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._ended.connect(self._on_ended)

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(
        self,
        factory: GeneratorFactory,
        accumulator: Callable[[], Accumulator] | None = None,
        name: str = "vggexplorer-run",
    ) -> None:
        """Start ``factory(cancel_event)`` on a new thread. Raises if a run is already going.

        ``accumulator`` (default: the one given at construction) builds partial results for live plots.
        """
        if self._thread is not None:
            raise RuntimeError("a run is already in progress")
        if accumulator is not None:
            self._make_acc = accumulator
        self._cancel = threading.Event()
        thread = threading.Thread(target=self._work, args=(factory, self._cancel), name=name, daemon=True)
        self._thread = thread
        thread.start()

    def cancel(self) -> None:
        """Ask the generator to stop at its next check (cooperative); ``cancelled`` follows."""
        self._cancel.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread (e.g. when the window closes). True when no thread is left."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                return False
        return True

    # --- worker thread ---
    def _work(self, factory: GeneratorFactory, cancel: threading.Event) -> None:
        acc = self._make_acc() if self._make_acc is not None else None
        last: Any = None
        last_emit = 0.0
        pending = fresh = False
        try:
            gen = factory(cancel)
            try:
                while True:
                    progress = next(gen)
                    last = progress
                    if acc is not None and acc.feed(progress):
                        fresh = True
                    now = time.perf_counter()
                    if now - last_emit >= PROGRESS_INTERVAL_S:
                        self._emit_progress(progress, acc.snapshot() if acc is not None and fresh else None)
                        last_emit, pending, fresh = now, False, False
                    else:
                        pending = True
            except StopIteration as stop:
                if pending and last is not None:
                    self._emit_progress(last, acc.snapshot() if acc is not None and fresh else None)
                result = stop.value
            finally:
                gen.close()
        except BaseException as e:  # reported to the GUI, never swallowed
            partial = None
            if acc is not None:
                try:
                    partial = acc.snapshot()
                except Exception:  # the original error matters; the partial is a bonus
                    partial = None
            err = WorkerError(
                e,
                traceback.format_exc(),
                str(getattr(last, "phase", "") or ""),
                str(getattr(last, "module", "") or ""),
                partial,
            )
            self._ended.emit("errored", err)
            return
        if cancel.is_set() or self._is_cancelled_result(result):
            self._ended.emit("cancelled", result)
        else:
            self._ended.emit("finished", result)

    def _emit_progress(self, progress: Any, part: Any) -> None:
        self._ended.emit("progress", (progress, part))

    # --- GUI thread ---
    def _on_ended(self, kind: str, payload: Any) -> None:
        if kind == "progress":
            progress, part = payload
            self.progressed.emit(progress)
            if part is not None:
                self.partial.emit(part)
            return
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()  # the thread has emitted its last signal and is returning: this is immediate
        getattr(self, kind).emit(payload)
        self.done.emit()


class CallWorker(QObject):
    """Run one function on a thread; ``finished(value)`` or ``errored(WorkerError)`` on the GUI thread."""

    finished = Signal(object)
    errored = Signal(object)
    _ended = Signal(str, object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread: threading.Thread | None = None
        self._ended.connect(self._on_ended)

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self, fn: Callable[[], Any], name: str = "vggexplorer-call") -> None:
        if self._thread is not None:
            raise RuntimeError("already running")
        self._thread = threading.Thread(target=self._work, args=(fn,), name=name, daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def _work(self, fn: Callable[[], Any]) -> None:
        try:
            value = fn()
        except BaseException as e:  # reported, never swallowed
            self._ended.emit("errored", WorkerError(e, traceback.format_exc()))
            return
        self._ended.emit("finished", value)

    def _on_ended(self, kind: str, payload: Any) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        getattr(self, kind).emit(payload)
