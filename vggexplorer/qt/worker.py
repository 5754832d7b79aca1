"""Run work off the GUI thread: a generator (the engine's run) or a single call (device discovery).

Runs and device discovery execute in a *child process* (``subprocess_iter``/``subprocess_call``), driven
from a thread here. Measured, not guessed: the engine traces every op through a Python dispatch mode, so
its thread holds the GIL for 100–160 ms at a stretch (kernels called from ``__torch_dispatch__`` keep the
GIL) — in-process, the GUI thread froze that long. In a child process the GUI never waits for the GIL, the
GUI process never imports torch or initialises CUDA, the measured process (RSS, NVML "this process") is the
run alone, and a host OOM kill takes down the run, not the app.

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

import contextlib
import importlib
import multiprocessing
import os
import threading
import time
import traceback
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
from PySide6.QtCore import QObject, Signal

from vggexplorer.core.results.meta import RunEnvironment, RunMeta

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


class EngineAccumulator:
    """Folds the engine's ``Progress`` chunks (new tensor-level rows) into a growing partial ``RunResult``
    for live plots. Runs on the worker thread; each ``snapshot`` is a new object for the GUI thread.

    The last Progress of a run carries the finished result: from then on ``snapshot`` returns that.
    """

    COLUMNS = ("t", "delta", "total", "phase", "module", "iteration")
    DTYPES: ClassVar[dict[str, Any]] = {
        "t": np.float64,
        "delta": np.int64,
        "total": np.int64,
        "phase": np.int8,
        "module": np.int32,
        "iteration": np.int32,
    }

    def __init__(self, name: str, config: RunMeta, environment: RunEnvironment | None = None) -> None:
        self.name = name
        self.config = config
        self.environment = environment or RunEnvironment()
        self._parts: dict[str, list[np.ndarray]] = {c: [] for c in self.COLUMNS}
        self._strings: tuple[str, ...] = ()
        self._final: Any = None

    def feed(self, progress: Any) -> bool:
        final = getattr(progress, "result", None)
        if final is not None:
            self._final = final
            return True
        strings = getattr(progress, "strings", ())
        if strings:
            self._strings = tuple(strings)
        chunk = getattr(progress, "chunk", None)
        if not chunk:
            return False
        for c in self.COLUMNS:
            col = chunk.get(c)
            if col is None:
                return False
        for c in self.COLUMNS:
            self._parts[c].append(np.asarray(chunk[c], dtype=self.DTYPES[c]))
        return True

    def snapshot(self) -> Any:
        if self._final is not None:
            return self._final
        from vggexplorer.core.results.result import DeviceSamples, RunResult, Summary, Timeline

        cols: dict[str, np.ndarray] = {}
        for c in self.COLUMNS:
            parts = self._parts[c]
            arr = np.concatenate(parts) if parts else np.zeros(0, self.DTYPES[c])
            self._parts[c] = [arr]  # the next snapshot concatenates old + new only once
            cols[c] = arr
        n = len(cols["t"])
        tl = Timeline(
            t=cols["t"],
            delta=cols["delta"],
            total=cols["total"],
            phase=cols["phase"],
            category=np.zeros(n, np.int8),
            op=np.full(n, -1, np.int32),
            module=cols["module"],
            iteration=cols["iteration"],
        )
        peak = tl.peak
        summary = Summary(peak, peak, None, None, 0, None)
        return RunResult(
            config=self.config,
            environment=self.environment,
            summary=summary,
            strings=list(self._strings),
            tensor=tl,
            allocator=Timeline(),
            device=DeviceSamples(),
            spans=[],
            layers=[],
            name=self.name,
            notes=["live: tensor level only until the run ends"],
        )


# --- child processes -----------------------------------------------------------------------------------


class ChildProcessError(RuntimeError):
    """The child process died without reporting (killed by the OOM killer, a crash in native code)."""


class RemoteError(RuntimeError):
    """An exception raised in the child process, carried back as its type name, message and traceback.

    (Not the exception object itself: unpickling, say, the engine's ``ConfigError`` would import the engine
    and with it torch into the GUI process.)
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str = "") -> None:
        super().__init__(message)
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteError, (self.type_name, self.message, self.remote_traceback))


@dataclass(frozen=True)
class RunProgress:
    """The engine's ``Progress`` as plain data (same fields), so the GUI process never imports the engine
    (and torch) to unpickle it."""

    fraction: float
    phase: str
    module: str
    iteration: int
    message: str
    chunk: dict[str, np.ndarray] | None = None
    strings: tuple[str, ...] = ()
    result: Any = None


#: How often the driving thread looks at the cancel flag while waiting for the child (seconds).
POLL_S = 0.05
#: The child's CPU niceness (0 = as the GUI): runs yield the CPU to the window on a busy machine.
CHILD_NICE = 5
#: What the fork server imports once, so that a CPU run's child starts in milliseconds: a spawned child
#: imports torch, and torch._dynamo at its first dispatch-mode op, 2-3 s of every run on the 2-core machine.
#: ``forkprep`` imports the run's modules and freezes them out of the cycle collector.
FORK_PRELOAD = ("vggexplorer.qt.forkprep",)


def _resolve(target: str) -> Callable[..., Any]:
    module, _, name = target.partition(":")
    fn: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return fn


def _child_main(target: str, payload: Any, data: Any, control: Any, generator: bool, nice: int = 0) -> None:
    """Child process: call ``target(payload[, cancel])`` and send what happens back through ``data``.

    Messages: ("progress", p) for each yielded value, then ("return", value) or ("error", (exc, text)).
    A ``"cancel"`` arriving on ``control`` sets the cancel event the generator checks.
    """
    cancel = threading.Event()
    if nice:
        # Below the GUI in CPU priority: on a busy machine the window stays responsive while a run uses
        # every core. Memory numbers do not depend on it; wall-clock layer times can, under contention.
        with contextlib.suppress(OSError, AttributeError):
            os.nice(nice)

    def listen() -> None:
        try:
            while not cancel.is_set():
                if control.poll(POLL_S) and control.recv() == "cancel":
                    cancel.set()
        except (EOFError, OSError):  # parent went away: stop the run
            cancel.set()

    listener = threading.Thread(target=listen, name="vggexplorer-cancel", daemon=True)
    listener.start()
    try:
        fn = _resolve(target)
        if generator:
            gen = fn(payload, cancel)
            try:
                while True:
                    data.send(("progress", next(gen)))
            except StopIteration as stop:
                data.send(("return", stop.value))
        else:
            data.send(("return", fn(*payload)))
    except BaseException as e:  # sent to the parent, which re-raises it
        data.send(("error", RemoteError(type(e).__name__, str(e), traceback.format_exc())))
    finally:
        cancel.set()
        listener.join()
        data.close()


def _context(fork: bool) -> Any:
    """``forkserver`` (children forked from a server that imported ``FORK_PRELOAD``) when asked and the
    platform has it, else ``spawn`` (a fresh interpreter per child).

    Only CPU runs are forked: the server never touches CUDA, but a CUDA run gets a fresh process anyway, so
    nothing a library did at import time can leave the driver in a state a forked child inherits.
    """
    if fork and "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(list(FORK_PRELOAD))  # read when the server starts (first use)
        return ctx
    return multiprocessing.get_context("spawn")


def prewarm_fork_server() -> bool:
    """Start the fork server now, so the first CPU run does not wait for its imports. Returns at once (the
    server imports in its own process); False where the platform has no fork server."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    from multiprocessing import forkserver

    _context(True)
    forkserver.ensure_running()
    return True


def _spawn(
    target: str, payload: Any, generator: bool, nice: int = CHILD_NICE, fork: bool = False
) -> tuple[Any, Any, Any]:
    ctx = _context(fork)
    data_r, data_w = ctx.Pipe(duplex=False)
    ctl_r, ctl_w = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_child_main,
        args=(target, payload, data_w, ctl_r, generator, nice),
        name="vggexplorer-child",
        daemon=True,
    )
    proc.start()
    data_w.close()
    ctl_r.close()
    return proc, data_r, ctl_w


def _raise_child_error(value: Any) -> None:
    if isinstance(value, RemoteError):
        value.add_note(f"--- in the run process ---\n{value.remote_traceback}")
        raise value
    raise RuntimeError(f"the run process reported {value!r:.200}")


def _died(proc: Any) -> ChildProcessError:
    proc.join(5)  # its pipe closed: it is exiting
    code = proc.exitcode
    why = f"killed by signal {-code}" if isinstance(code, int) and code < 0 else f"exit code {code}"
    hint = " — out of host memory? (the kernel's OOM killer sends signal 9)" if code == -9 else ""
    return ChildProcessError(f"the run process ended without a result ({why}){hint}")


def _stop(proc: Any, data: Any, control: Any) -> None:
    try:
        if proc.is_alive():
            with contextlib.suppress(OSError):
                control.send("cancel")
            proc.join(30)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
        else:
            proc.join()
    finally:
        data.close()
        control.close()
        proc.close()


def subprocess_iter(
    target: str, payload: Any, cancel: threading.Event, *, fork: bool = False
) -> Generator[Any, None, Any]:
    """Drive the generator ``target(payload, cancel)`` (``"module:function"``) in a child process.

    Yields what it yields and returns what it returns; its exceptions are re-raised here (with the child's
    traceback as a note). Setting ``cancel`` forwards a cancel to the child; closing this generator cancels
    and joins the child (terminating it only if it does not stop within 30 s). ``fork=True``: the child is
    forked from the fork server (see ``_context``), else spawned.
    """
    proc, data, control = _spawn(target, payload, True, fork=fork)
    forwarded = False
    try:
        while True:
            if cancel.is_set() and not forwarded:
                with contextlib.suppress(OSError):
                    control.send("cancel")
                forwarded = True
            if not data.poll(POLL_S):
                if not proc.is_alive() and not data.poll():
                    raise _died(proc)
                continue
            try:
                kind, value = data.recv()
            except EOFError:
                raise _died(proc) from None
            if kind == "progress":
                yield value
            elif kind == "return":
                return value
            else:
                _raise_child_error(value)
    finally:
        _stop(proc, data, control)


def subprocess_call(target: str, *args: Any) -> Any:
    """Call ``target(*args)`` (``"module:function"``) in a child process and return its value."""
    proc, data, control = _spawn(target, args, False)
    try:
        while True:
            if data.poll(POLL_S):
                try:
                    kind, value = data.recv()
                except EOFError:
                    raise _died(proc) from None
                if kind == "return":
                    return value
                _raise_child_error(value)
            elif not proc.is_alive() and not data.poll():
                raise _died(proc)
    finally:
        _stop(proc, data, control)


def engine_run_iter(config: dict[str, Any], cancel: threading.Event) -> Generator[RunProgress, None, Any]:
    """Child side of a run: the engine's own generator for ``RunConfig.from_dict(config)``, its Progress
    re-yielded as plain ``RunProgress``."""
    from vggexplorer.core.run.engine import FailAt, RunConfig, run_iter

    config = dict(config)
    fail = config.pop("_fail_at", None)  # test hook: the engine's FailAt(module, phase)
    fail_at = FailAt(str(fail[0]), str(fail[1])) if fail else None
    gen = run_iter(RunConfig.from_dict(config), cancel, fail_at=fail_at)
    try:
        while True:
            p = next(gen)
            result = _plain_result(p.result)
            yield RunProgress(
                p.fraction, p.phase, p.module, p.iteration, p.message, p.chunk, p.strings, result
            )
    except StopIteration as stop:
        return _plain_result(stop.value)
    finally:
        gen.close()


def _plain(v: Any) -> Any:
    """Builtin types only (``torch.__version__`` is a ``TorchVersion``, a str subclass whose unpickling
    imports torch)."""
    if isinstance(v, str):
        return str(v)
    if isinstance(v, dict):
        return {_plain(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        items = [_plain(x) for x in v]
        return tuple(items) if isinstance(v, tuple) else items
    return v


def _plain_result(r: Any) -> Any:
    if r is not None and hasattr(r, "environment") and hasattr(r, "config"):
        r.environment = _plain(r.environment)
        r.config = _plain(r.config)
    return r


def discover_devices() -> tuple[list[Any], str, str]:
    """Child side of device discovery: (``list_devices()``, ``best_device()``, ``status_line()``)."""
    from vggexplorer.core.devices import environment

    return environment.list_devices(), environment.best_device(), environment.status_line()
