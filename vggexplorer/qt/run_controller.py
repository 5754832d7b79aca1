"""The run lifecycle in the GUI: a run started from the current head and settings, its progress and live
partial result while it goes, and its end (finished, cancelled or failed) with the result in the session.

``RunController`` owns the ``GeneratorWorker`` that drives the engine (in a child process, through the run
factory, so the GUI process never imports torch), the live partial result and the redraw timer that throttles
it. Finished runs, and cancelled ones with curves, go to ``SessionModel.add_run`` (ticked and current) under
the name the run was given at its start. The window listens to three signals: ``started`` (a run is going),
``liveChanged`` (the partial curves changed: redraw the plot) and ``ended`` (the worker is done, whatever
the outcome).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import replace
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from vggexplorer.core.base.errors import VGGExplorerError
from vggexplorer.core.model.head import HeadDocument, HeadSpec
from vggexplorer.core.results.meta import RunEnvironment, RunMeta
from vggexplorer.core.results.result import RunResult
from vggexplorer.core.results.wording import run_summary
from vggexplorer.core.run.accumulate import EngineAccumulator
from vggexplorer.core.run.child import subprocess_iter
from vggexplorer.core.session.model import SessionModel
from vggexplorer.core.session.settings import RunSettings, head_label, preset_of, run_config, settings_label
from vggexplorer.qt.message_bar import MessageBar
from vggexplorer.qt.run_controls import RunControls
from vggexplorer.qt.worker import GeneratorWorker, WorkerError

#: Live plots redraw at most this often while a run is going (10 Hz).
REDRAW_INTERVAL_MS = 100

RunFactory = Callable[[RunSettings, HeadSpec], Callable[[threading.Event], Generator[Any, None, Any]]]


def engine_run_factory(
    settings: RunSettings, head: HeadSpec, *, fail_at: tuple[str, str] | None = None
) -> Callable[[threading.Event], Generator[Any, None, Any]]:
    """The real run: the engine's generator in a child process (see ``worker.py`` for why), driven from the
    worker thread. The config crosses as the engine's own ``RunConfig.to_dict`` format."""
    config = run_config(settings, head).to_dict()
    if fail_at is not None:  # test hook: an allocation failure at (module, phase)
        config["_fail_at"] = list(fail_at)
    # CPU runs fork from the warm fork server (torch already imported); CUDA runs get a fresh process
    fork = config["device"] == "cpu"
    target = "vggexplorer.core.run.entries:engine_run_iter"
    return lambda cancel: subprocess_iter(target, config, cancel, fork=fork)


class RunController(QObject):
    """Starts and cancels runs, follows their progress and puts their results in the session."""

    #: A run was started (the worker is about to go).
    started = Signal()
    #: The live partial result changed (``live``): the plot should redraw.
    liveChanged = Signal()
    #: The worker is done (finished, cancelled or failed) and ready for the next run.
    ended = Signal()

    def __init__(
        self,
        parent: QObject,
        *,
        session: SessionModel,
        doc: HeadDocument,
        controls: RunControls,
        message_bar: MessageBar,
        run_factory: RunFactory,
        show_error: Callable[..., None],
    ) -> None:
        super().__init__(parent)
        self.session = session
        self.doc = doc
        self.controls = controls
        self.message_bar = message_bar
        self.run_factory = run_factory
        self._show_error = show_error
        #: the run going on, or the partial curves of one that failed (None once a result is added)
        self.live: RunResult | None = None
        self._live_dirty = False
        self._run_name = ""
        self._run_meta: RunMeta | None = None  # the labels the GUI gives the run in flight
        self.worker = GeneratorWorker(parent=self)
        self.redraw_timer = QTimer(self)
        self.redraw_timer.setInterval(REDRAW_INTERVAL_MS)
        self.redraw_timer.timeout.connect(self._redraw_live)
        self.worker.progressed.connect(self._on_progress)
        self.worker.partial.connect(self._on_partial)
        self.worker.finished.connect(self._on_finished)
        self.worker.cancelled.connect(self._on_cancelled)
        self.worker.errored.connect(self._on_errored)
        self.worker.done.connect(self._on_run_done)

    def start_run(self) -> bool:
        """Start a run with the current head and settings (False when blocked or already running)."""
        if self.worker.running or self.controls.blocked_reason:
            return False
        s = self.session.settings
        spec = self.doc.spec
        label = head_label(spec)
        name = self.session.unique_name(settings_label(s, label))
        try:
            run = run_config(s, spec)
        except VGGExplorerError as e:
            self._show_error(f"Cannot run this configuration: {e}")
            return False
        config = RunMeta(run, device=s.device, head_label=label, preset=preset_of(spec))
        self._run_name, self._run_meta = name, config
        self.live, self._live_dirty = None, False
        self.message_bar.hide()
        self.controls.set_running(True)
        self.started.emit()
        env = RunEnvironment(device=s.device, device_name=self.controls.device_choice().name())
        self.worker.start(self.run_factory(s, spec), lambda: EngineAccumulator(name, config, env))
        self.redraw_timer.start()
        return True

    def cancel_run(self) -> None:
        if self.worker.running:
            self.worker.cancel()
            self.controls.show_status("cancelling…")

    def add_result(self, result: RunResult) -> None:
        """A result into the session (ticked and current); the live curves give way to it."""
        self.live = None
        self.session.add_run(result, ticked=True, current=True)

    def shutdown(self, timeout: float) -> None:
        """Stop redrawing, cancel a run going on and join the worker thread."""
        self.redraw_timer.stop()
        if self.worker.running:
            self.worker.cancel()
        self.worker.join(timeout)

    def _on_progress(self, p: Any) -> None:
        self.controls.show_progress(
            float(getattr(p, "fraction", 0.0)),
            str(getattr(p, "phase", "") or ""),
            str(getattr(p, "module", "") or ""),
            str(getattr(p, "message", "") or ""),
        )

    def _on_partial(self, partial: Any) -> None:
        if isinstance(partial, RunResult):
            self.live = partial
            self._live_dirty = True

    def _redraw_live(self) -> None:
        if not self._live_dirty or self.live is None:
            return
        self._live_dirty = False
        self.liveChanged.emit()

    def _name_result(self, result: RunResult) -> RunResult:
        result.name = self._run_name  # short and unique in the runs list (editable there)
        meta, ours = result.config, self._run_meta
        if ours is not None and not meta.head_label:
            result.config = replace(meta, head_label=ours.head_label, preset=ours.preset)
        return result

    def _on_finished(self, result: Any) -> None:
        if not isinstance(result, RunResult):
            self._show_error(f"The run returned {type(result).__name__}, not a RunResult")
            return
        self.add_result(self._name_result(result))
        if result.status != "ok" and result.fault is not None:
            f = result.fault
            what = "Out of memory" if result.status == "oom" else "The run failed"
            self._show_error(
                f"{what} in {f.phase or '?'} at {f.layer or '?'} (iteration {f.iteration + 1}): {f.message}. "
                "The curves up to that point are kept.",
            )
        else:
            self.controls.show_status(f"done · {run_summary(result)}", 1.0)

    def _on_cancelled(self, result: Any) -> None:
        where = ""
        if isinstance(result, RunResult):
            result = self._name_result(result)
            if result.fault is not None:
                where = f" in {result.fault.phase} at {result.fault.layer}"
            if len(result.tensor) or len(result.allocator):
                self.add_result(result)
        self.controls.show_status("cancelled" + where)
        self.message_bar.show_message("info", f"Run cancelled{where}. The partial curves are kept.")

    def _on_errored(self, err: WorkerError) -> None:
        where = " · ".join(x for x in (err.phase, err.module) if x)
        text = f"The run failed{f' in {where}' if where else ''}: {err.message}"
        if isinstance(err.partial, RunResult):
            self.live = err.partial
            self._live_dirty = True
            self._redraw_live()
            text += " — the partial curves stay in the plot."
        self.controls.show_status("failed" + (f" · {where}" if where else ""))
        self._show_error(text, err.traceback)

    def _on_run_done(self) -> None:
        self.redraw_timer.stop()
        self.controls.set_running(False)
        self.ended.emit()
