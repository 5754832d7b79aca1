"""Child processes: run a function or drive a generator in another process, from a thread of this one.

``subprocess_iter(target, payload, cancel)`` drives the generator ``target(payload, cancel)`` in a child
and yields what it yields; ``subprocess_call(target, *args)`` returns ``target(*args)``. Targets are named
``"module:function"``, so a child imports only the module that holds its target (the runs' entries are in
:mod:`vggexplorer.core.run.entries`). Exceptions in the child come back as :class:`RemoteError` (type name,
message, traceback; never the exception object, whose unpickling could import torch into the caller); a
child that dies without reporting raises :class:`ChildProcessError`. ``end_process`` is the one way a child
is ended (asked, then terminated, then killed). CPU runs fork from a fork server that preloaded
:mod:`vggexplorer.core.run.forkprep` (``prewarm_fork_server``); everything else is spawned.

This module imports only the standard library, so any process may use it without pulling in torch or Qt.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import os
import sys
import threading
import traceback
from collections.abc import Callable, Generator, Sequence
from typing import Any


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


#: How often the driving thread looks at the cancel flag while waiting for the child (seconds).
POLL_S = 0.05
#: How long a terminated child has to exit before it is killed (seconds).
TERMINATE_WAIT_S = 5.0
#: The child's CPU niceness (0 = as the GUI): runs yield the CPU to the window on a busy machine.
CHILD_NICE = 5
#: What the fork server imports once, so that a CPU run's child starts in milliseconds: a spawned child
#: imports torch, and torch._dynamo at its first dispatch-mode op, 2-3 s of every run on the 2-core machine.
#: ``forkprep`` imports the run's modules and freezes them out of the cycle collector.
FORK_PRELOAD = ("vggexplorer.core.run.forkprep",)


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


def end_process(proc: Any, ask: Callable[[], object] | None = None, grace: float = 30.0) -> None:
    """End the child process ``proc`` and join it: the one terminate/kill ladder for every child.

    A live child is asked first (``ask()``, e.g. send it "cancel"; a pipe already closed is no error) and
    given ``grace`` seconds to finish, then terminated (SIGTERM), given 5 s more, then killed (SIGKILL).
    A child that has already ended is only joined.
    """
    if not proc.is_alive():
        proc.join()
        return
    if ask is not None:
        with contextlib.suppress(OSError):
            ask()
    proc.join(grace)
    if proc.is_alive():
        proc.terminate()
        proc.join(TERMINATE_WAIT_S)
        if proc.is_alive():
            proc.kill()
            proc.join()


def _stop(proc: Any, data: Any, control: Any) -> None:
    try:
        end_process(proc, lambda: control.send("cancel"))
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


# --- what a child has imported ----------------------------------------------------------------------------


def imported_modules(prefixes: Sequence[str]) -> list[str]:
    """The modules in this process's ``sys.modules`` named ``p`` or ``p.…`` for a ``p`` in ``prefixes``."""
    wanted = tuple(prefixes)
    return sorted(m for m in list(sys.modules) if any(m == p or m.startswith(p + ".") for p in wanted))


def probe_iter(payload: tuple[str, Any, Sequence[str]], cancel: threading.Event) -> Generator[Any, None, Any]:
    """``subprocess_iter`` target that drives ``target(inner, cancel)`` (``payload = (target, inner,
    prefixes)``) in this same child, then returns ``(its return value, imported_modules(prefixes))``.

    A probe for tests: it asks a child started exactly as the app starts it what the work made it import.
    """
    target, inner, prefixes = payload
    value = yield from _resolve(target)(inner, cancel)
    return value, imported_modules(prefixes)


def probe_call(target: str, prefixes: Sequence[str], *args: Any) -> tuple[Any, list[str]]:
    """``subprocess_call`` target: ``(target(*args), imported_modules(prefixes))``, in one child (a probe
    for tests, like :func:`probe_iter`)."""
    return _resolve(target)(*args), imported_modules(prefixes)
