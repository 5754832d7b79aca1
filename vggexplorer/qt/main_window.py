"""The main window: it composes. It builds the models (the head document and its list model, the undo
stack, the ``SessionModel`` of runs, selection, settings and prediction), hands them to the views, and wires
signals, session events, actions and menus; the work lives elsewhere — ``RunController`` (run_controller.py)
starts runs and puts their results in the session, ``FileActions`` (file_actions.py) opens, saves and exports,
``WindowActions`` (actions.py) holds the actions and menus, ``PredictService`` (predict_panel.py) predicts.

It owns no torch code: a run is started by handing the worker a factory that drives the engine in a child
process; device discovery (NVML, CUDA) also runs in one, from a thread. What stays here is the window's own
business: its layout, the staged view updates (``_defer``), the prediction wiring, the status bar, and the
thin public methods (``start_run``, ``open_run``, ``export_plot``…) that delegate.
"""

from __future__ import annotations

import gc
import platform
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QSplitter,
    QTabWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from vggexplorer import __version__
from vggexplorer.core.base.units import fmt_bytes
from vggexplorer.core.model.head import HeadDocument, preset
from vggexplorer.core.predict.service import PredictionAnswer
from vggexplorer.core.results.result import RunResult
from vggexplorer.core.results.wording import run_summary
from vggexplorer.core.run.child import prewarm_fork_server, subprocess_call
from vggexplorer.core.session.model import RunsChange, Selection, SessionModel
from vggexplorer.core.session.settings import blocked_reason, head_label, preset_of, run_config
from vggexplorer.qt.actions import WindowActions
from vggexplorer.qt.file_actions import FileActions
from vggexplorer.qt.head.head_model import HeadListModel
from vggexplorer.qt.head.head_view import HeadView
from vggexplorer.qt.head.palette import PaletteView
from vggexplorer.qt.head.properties import PropertyPanel
from vggexplorer.qt.head.undo import make_stack
from vggexplorer.qt.layer_table import LayerTable
from vggexplorer.qt.message_bar import MessageBar
from vggexplorer.qt.plots.category_plot import CategoryPlot
from vggexplorer.qt.plots.memory_plot import MemoryPlot
from vggexplorer.qt.predict_panel import DEBOUNCE_MS, PredictPanel, PredictService
from vggexplorer.qt.run_controller import RunController, RunFactory, engine_run_factory
from vggexplorer.qt.run_controls import CPU_CHOICE, DeviceChoice, RunControls
from vggexplorer.qt.runs import ComparePanel, RunsPanel
from vggexplorer.qt.settings import AppSettings
from vggexplorer.qt.worker import CallWorker, WorkerError

#: The fork server for CPU runs starts this long after the window is built (after the first paint).
PREWARM_DELAY_MS = 1500


def find_devices() -> tuple[list[DeviceChoice], str, str]:
    """(devices, best device id, status text), asked in a child process (CUDA/NVML stay out of the GUI)."""
    infos, best, status = subprocess_call("vggexplorer.core.run.entries:discover_devices")
    devices = [DeviceChoice(str(d.id), str(d.label), int(d.total_bytes), str(d.kind)) for d in infos]
    if not any(d.id == "cpu" for d in devices):
        devices.append(CPU_CHOICE)
    return devices, str(best), str(status)


def freeze_long_lived_objects() -> None:
    """Move every object that exists now (Qt wrappers, pyqtgraph items, modules) out of the garbage
    collector's reach. Measured: full (generation 2) collections over them took 37–43 ms of GUI-thread time
    each, enough to break the 50 ms event-loop budget on their own; after ``gc.freeze()`` a collection only
    walks objects made since. Frozen objects are never freed by the cycle collector, which is what we want
    for a window that lives as long as the process.
    """
    gc.collect()
    gc.freeze()


class MainWindow(QMainWindow):
    """VGG Memory Explorer's window."""

    #: A run ended (finished, cancelled or failed) and the window is ready for the next.
    runEnded = Signal()
    #: The prediction for the current config and GPU arrived (a ``PredictionAnswer``; stale ones never).
    predictionReady = Signal(object)
    #: The largest batch that fits arrived for the latest prediction.
    maxBatchReady = Signal(int)

    def __init__(
        self,
        settings: AppSettings | None = None,
        *,
        discover: bool = True,
        run_factory: RunFactory | None = None,
        predict: bool = True,
    ) -> None:
        """``predict``: predict the current config for the chosen GPU after every edit (a helper process)."""
        super().__init__()
        self.setObjectName("mainWindow")
        self.app_settings = settings if settings is not None else AppSettings()
        self.best_device = "cpu"
        self.device_status = "detecting devices…"
        self._stale_tabs: set[str] = set()
        self._predict_gpu_saved = False

        # --- models -------------------------------------------------------------------------------------
        self.session = SessionModel()
        self._shown_selection = Selection()
        self.doc = HeadDocument(preset("fc"))
        self.undo_stack = make_stack(self)
        self.head_model = HeadListModel(self.doc, self.undo_stack, batch=8, input_hw=(224, 224), parent=self)

        # --- views ---------------------------------------------------------------------------------------
        self.controls = RunControls(self.session)
        self.layer_palette = PaletteView()
        self.head_view = HeadView(self.head_model)
        self.properties = PropertyPanel(self.head_model)
        self.plot = MemoryPlot()
        self.plot.setObjectName("memoryPlot")
        self.category_plot = CategoryPlot()
        self.category_plot.setObjectName("categoryPlot")
        self.layer_table = LayerTable()
        self.compare_panel = ComparePanel()
        self.runs_panel = RunsPanel(self.session)
        self.message_bar = MessageBar()
        self.predict_panel = PredictPanel()
        self.predict_service = PredictService(self)
        self._predict_enabled = predict
        self.predict_timer = QTimer(self)
        self.predict_timer.setSingleShot(True)
        self.predict_timer.setInterval(DEBOUNCE_MS)
        self.predict_timer.timeout.connect(self.request_prediction)
        self.runner = RunController(
            self,
            session=self.session,
            doc=self.doc,
            controls=self.controls,
            message_bar=self.message_bar,
            run_factory=run_factory or engine_run_factory,
            show_error=self.show_error,
        )
        self.worker = self.runner.worker
        self.device_worker = CallWorker(self)
        self.files = FileActions(
            self,
            settings=self.app_settings,
            head_model=self.head_model,
            session=self.session,
            plot=self.plot,
            compare_panel=self.compare_panel,
            add_result=self.runner.add_result,
            flush_updates=self.flush_updates,
            refresh_comparison=self._refresh_stale_comparison,
            show_error=self.show_error,
        )
        self._stages: list[Callable[[], object]] = []
        self._stage_timer = QTimer(self)
        self._stage_timer.setSingleShot(True)
        self._stage_timer.setInterval(1)
        self._stage_timer.timeout.connect(self._run_stage)

        self._build_layout()
        self._build_menus()
        self._build_status_bar()
        self._connect()

        self.setWindowTitle("VGG Memory Explorer")
        self.resize(1560, 960)
        self.app_settings.restore_window(self, self.splitters)
        saved = self.app_settings.run_settings()
        self.controls.apply_settings(saved)
        if isinstance(saved.get("predict_gpu"), str):
            self.predict_panel.select(saved["predict_gpu"])
            self._predict_gpu_saved = True
        s = self.session.settings
        self.head_model.set_context(s.batch, s.input_hw)
        self._on_report()
        self._on_document_changed()
        if discover:
            self.device_worker.start(find_devices, name="vggexplorer-devices")
        else:
            self._on_devices(([CPU_CHOICE], "cpu", "device discovery skipped: CPU"))
        if run_factory is None:
            # the fork server imports torch in its own process, after the first paint
            QTimer.singleShot(PREWARM_DELAY_MS, self, prewarm_fork_server)
        freeze_long_lived_objects()

    # --- construction ---
    @staticmethod
    def _group(title: str, w: QWidget) -> QGroupBox:
        box = QGroupBox(title)
        lay = QVBoxLayout(box)
        lay.setContentsMargins(4, 6, 4, 4)
        lay.addWidget(w)
        return box

    def _build_layout(self) -> None:
        tb = QToolBar("Run")
        tb.setObjectName("runToolbar")
        tb.setMovable(False)
        tb.addWidget(self.controls)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, tb)
        self.run_toolbar = tb

        self.palette_box = self._group("Layers", self.layer_palette)
        self.palette_box.setToolTip("Drag a layer type into the model (or double-click to insert)")
        self.properties_box = self._group("Properties", self.properties)
        left = QSplitter(Qt.Orientation.Vertical)
        left.setObjectName("leftSplitter")
        left.addWidget(self.palette_box)
        left.addWidget(self.properties_box)
        left.setStretchFactor(0, 1)
        left.setStretchFactor(1, 1)

        hint = QLabel(
            "Drag layers from the left to insert · drag rows to reorder · Del removes · right-click for more"
        )
        hint.setWordWrap(True)
        hint.setStyleSheet("color: gray;")
        model_host = QWidget()
        ml = QVBoxLayout(model_host)
        ml.setContentsMargins(0, 0, 0, 0)
        ml.addWidget(self.head_view, 1)
        ml.addWidget(hint)
        self.model_box = self._group("Model", model_host)

        self.tabs = QTabWidget()
        self.tabs.setObjectName("resultTabs")
        cat_host = QWidget()
        self.cat_host = cat_host
        cl = QVBoxLayout(cat_host)
        cl.setContentsMargins(0, 0, 0, 0)
        cat_bar = QHBoxLayout()
        self.cat_bars = QPushButton("Bars at peak")
        self.cat_stacked = QPushButton("Stacked over time")
        for b in (self.cat_bars, self.cat_stacked):
            b.setCheckable(True)
            b.setAutoExclusive(True)
            cat_bar.addWidget(b)
        self.cat_bars.setChecked(True)
        cat_bar.addStretch(1)
        cl.addLayout(cat_bar)
        cl.addWidget(self.category_plot, 1)
        self.tabs.addTab(cat_host, "Categories")
        self.tabs.addTab(self.layer_table, "Layers table")
        self.tabs.addTab(self.compare_panel, "Compare")

        plot_host = QWidget()
        pl = QVBoxLayout(plot_host)
        pl.setContentsMargins(0, 0, 0, 0)
        pl.setSpacing(2)
        pl.addWidget(self.predict_panel)
        pl.addWidget(self.plot, 1)
        right = QSplitter(Qt.Orientation.Vertical)
        right.setObjectName("rightSplitter")
        right.addWidget(plot_host)
        right.addWidget(self.tabs)
        right.setStretchFactor(0, 3)
        right.setStretchFactor(1, 2)
        right.setSizes([560, 360])

        # The runs list sits under the model (the head rarely needs the whole height); the plots get it.
        self.runs_box = self._group("Runs — tick two or more to overlay and compare", self.runs_panel)
        middle = QSplitter(Qt.Orientation.Vertical)
        middle.setObjectName("middleSplitter")
        middle.addWidget(self.model_box)
        middle.addWidget(self.runs_box)
        middle.setStretchFactor(0, 3)
        middle.setStretchFactor(1, 2)
        middle.setSizes([560, 300])

        main = QSplitter(Qt.Orientation.Horizontal)
        main.setObjectName("mainSplitter")
        main.addWidget(left)
        main.addWidget(middle)
        main.addWidget(right)
        main.setStretchFactor(0, 0)
        main.setStretchFactor(1, 0)
        main.setStretchFactor(2, 1)
        main.setSizes([210, 450, 940])

        central = QWidget()
        cv = QVBoxLayout(central)
        cv.setContentsMargins(4, 2, 4, 2)
        cv.setSpacing(2)
        cv.addWidget(self.message_bar)
        cv.addWidget(main, 1)
        self.setCentralWidget(central)
        self.splitters = {"left": left, "right": right, "main": main, "middle": middle}

    def _build_menus(self) -> None:
        self.menu_actions = a = WindowActions(
            self,
            self.undo_stack,
            files=self.files,
            start_run=self.start_run,
            cancel_run=self.cancel_run,
            about=self.show_about,
        )
        self.open_head_action, self.open_run_action = a.open_head_action, a.open_run_action
        self.undo_action, self.redo_action = a.undo_action, a.redo_action
        self.run_action, self.cancel_action = a.run_action, a.cancel_action
        panes = (
            ("Layer Palette", self.palette_box),
            ("Properties", self.properties_box),
            ("Runs", self.runs_box),
            ("Run Controls", self.run_toolbar),
        )
        a.build_menus(head_view=self.head_view, load_preset=self.load_preset, panes=panes, tabs=self.tabs)
        self.file_menu = a.file_menu

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.status_device = QLabel()
        self.status_device.setObjectName("statusDevice")
        self.status_memory = QLabel()
        self.status_memory.setObjectName("statusMemory")
        self.status_nvml = QLabel(self.device_status)
        self.status_nvml.setObjectName("statusNvml")
        for w in (self.status_device, self.status_memory):
            sb.addPermanentWidget(w)
        sb.addWidget(self.status_nvml, 1)

    def _connect(self) -> None:
        c = self.controls
        c.presetChosen.connect(self.load_preset)
        c.backboneChosen.connect(self.set_backbone)
        c.contextChanged.connect(self._on_context)
        c.settingsChanged.connect(self._on_settings_changed)
        c.runRequested.connect(self.start_run)
        c.cancelRequested.connect(self.cancel_run)
        self.layer_palette.layerRequested.connect(self.head_view.insert_type)
        self.head_view.selectionChanged.connect(self.properties.set_row)
        self.head_view.message.connect(self._show_status_message)
        self.head_model.reportChanged.connect(self._on_report)
        self.undo_stack.indexChanged.connect(self._on_document_changed)
        self.runner.started.connect(self._on_run_started)
        self.runner.liveChanged.connect(self._on_live_changed)
        self.runner.ended.connect(self._on_run_ended)
        self.device_worker.finished.connect(self._on_devices)
        self.device_worker.errored.connect(self._on_devices_error)
        self.session.events.runs.connect(self._on_session_runs)
        self.session.events.selection.connect(self._on_session_selection)
        self.runs_panel.openRequested.connect(self.open_run_dialog)
        self.runs_panel.saveRequested.connect(self.save_run_dialog)
        self.runs_panel.compareRequested.connect(self.show_comparison)
        self.tabs.currentChanged.connect(self._refresh_visible_tab)
        self.cat_stacked.toggled.connect(self._on_category_mode)
        self.predict_panel.targetChanged.connect(self._on_predict_target)
        self.predict_panel.showToggled.connect(self._on_show_prediction)
        self.predict_service.answered.connect(self._on_prediction)
        self.session.events.prediction.connect(self._on_session_prediction)
        self.predict_service.maxBatch.connect(self._on_max_batch)
        self.predict_service.failed.connect(self._on_prediction_failed)

    # --- prediction (predicted beside measured) ---
    def schedule_prediction(self, *_: object) -> None:
        """Predict again ``DEBOUNCE_MS`` after the last edit or setting change (a burst asks once)."""
        if self._predict_enabled:
            self.predict_timer.start()

    @property
    def prediction(self) -> PredictionAnswer | None:
        """The latest prediction shown (the session's)."""
        return self.session.prediction

    def _prediction_config(self) -> dict[str, Any]:
        # the trace runs on CPU fake tensors and is mapped to CUDA
        return run_config(self.session.settings, self.doc.spec, device="cpu").to_dict()

    def request_prediction(self) -> int | None:
        """Ask for the current config on the chosen GPU now (None when the head cannot run: its shape error
        is shown instead and the predicted curves go away)."""
        self.predict_timer.stop()
        issue = self.head_model.report.issue
        if issue is not None:
            self.predict_service.latest_id += 1  # whatever is in flight is stale now
            self.session.set_prediction(None)  # the curves follow the session's event
            self.predict_panel.show_blocked(str(issue))
            return None
        self.predict_panel.show_busy()
        return self.predict_service.request(
            {"config": self._prediction_config(), "gpu": self.predict_panel.gpu_request()}
        )

    def _on_predict_target(self) -> None:
        self.app_settings.save_run_settings(self._persisted_settings())
        self.schedule_prediction()

    def _on_prediction(self, a: PredictionAnswer) -> None:
        if a.request_id != self.predict_service.latest_id:
            return  # an older config's answer: a newer request is out
        self.session.set_prediction(a)  # the panel and the curves follow the session's event
        self.predictionReady.emit(a)

    def _on_session_prediction(self, a: PredictionAnswer | None) -> None:
        if a is not None:
            self.predict_panel.show_answer(a)
        self._show_prediction_curves()

    def _show_prediction_curves(self) -> None:
        a = self.prediction
        show = a is not None and self.predict_panel.show_check.isChecked() and not a.error
        self.plot.set_prediction(
            a.result if show and a is not None else None, self.predict_panel.short_target()
        )

    def _on_show_prediction(self, _on: bool) -> None:
        self._show_prediction_curves()

    def _on_max_batch(self, rid: int, n: int) -> None:
        if rid == self.predict_service.latest_id:
            self.predict_panel.set_max_batch(n)
            self.maxBatchReady.emit(n)

    def _on_prediction_failed(self, rid: int, text: str) -> None:
        if rid == self.predict_service.latest_id:
            self.predict_panel.show_error(text)

    # Slots are bound methods, not lambdas: Qt drops them when the window is destroyed (a lambda would
    # still be called by, e.g., the undo stack clearing itself during destruction).
    def _on_category_mode(self, stacked: bool) -> None:
        self.category_plot.set_mode("stacked" if stacked else "bars")

    def _on_context(self, batch: int, hw: object) -> None:
        assert isinstance(hw, tuple)
        self.head_model.set_context(int(batch), (int(hw[0]), int(hw[1])))

    def _show_status_message(self, text: str) -> None:
        self.statusBar().showMessage(text, 8000)

    # --- head ---
    def load_preset(self, name: str) -> None:
        spec = preset(name, self.doc.spec.backbone)
        self.head_model.push_set_head(spec, f"Load preset {name}")
        self.controls.set_preset_label(name)

    def set_backbone(self, backbone: str) -> None:
        if backbone != self.doc.spec.backbone:
            self.head_model.push_set_head(self.doc.spec.with_backbone(backbone), f"Backbone {backbone}")

    def _on_document_changed(self, *_: object) -> None:
        spec = self.doc.spec
        self.controls.set_preset_label(preset_of(spec) or "custom")
        self.controls.set_backbone(spec.backbone)
        self._update_title()

    def _on_report(self, *_: object) -> None:
        self._update_blocked()
        self.schedule_prediction()

    def _update_blocked(self) -> None:
        reason = blocked_reason(self.session.settings, self.head_model.report.issue)
        self.controls.set_blocked(reason)
        self.run_action.setEnabled(not reason and not self.worker.running)

    def _on_settings_changed(self) -> None:
        self._update_blocked()
        self.schedule_prediction()
        self._update_title()
        self._update_device_status()
        self.app_settings.save_run_settings(self._persisted_settings())

    def _persisted_settings(self) -> dict[str, Any]:
        d = self.session.settings.to_dict()
        d.pop("preset", None)
        d.pop("backbone", None)
        d["predict_gpu"] = self.predict_panel.choice_key()
        return d

    def _update_title(self) -> None:
        spec = self.doc.spec
        dev = self.controls.device_choice()
        dev_text = dev.short()
        self.setWindowTitle(f"VGG Memory Explorer — {spec.backbone} · {head_label(spec)} · {dev_text}")

    # --- run (the lifecycle lives in RunController) ---
    @property
    def run_factory(self) -> RunFactory:
        """How a run's generator is made (the engine in a child process; tests pass their own)."""
        return self.runner.run_factory

    @run_factory.setter
    def run_factory(self, factory: RunFactory) -> None:
        self.runner.run_factory = factory

    def start_run(self) -> bool:
        """Start a run with the current head and settings (False when blocked or already running)."""
        return self.runner.start_run()

    def cancel_run(self) -> None:
        self.runner.cancel_run()

    def _on_run_started(self) -> None:
        self.run_action.setEnabled(False)
        self.cancel_action.setEnabled(True)

    def _on_live_changed(self) -> None:
        self._defer(self._update_plot)

    def _on_run_ended(self) -> None:
        self.cancel_action.setEnabled(False)
        self._update_blocked()
        # modules a first run imports and the views it builds live as long as the window: keep them out of
        # the cycle collector's full passes too (see freeze_long_lived_objects)
        self._defer(freeze_long_lived_objects)
        self._defer(self.runEnded.emit)  # after the views caught up with the result

    # --- runs, plots, compare ---
    def _on_session_runs(self, change: RunsChange) -> None:
        """A run added, removed or renamed: the plot and tabs show names and the ticked runs."""
        self._on_checked_runs(self.session.ticked())
        if change.kind != "renamed":
            self._on_current_run(self.session.current())
        self._shown_selection = change.selection

    def _on_session_selection(self, selection: Selection) -> None:
        if selection.ticked != self._shown_selection.ticked:
            self._on_checked_runs(self.session.ticked())
        if selection.current != self._shown_selection.current:
            self._on_current_run(self.session.current())
        self._shown_selection = selection

    def _on_checked_runs(self, runs: list[RunResult]) -> None:
        # The views follow in stages, each in its own event-loop turn (see ``_defer``); the tabs below
        # only when shown.
        self._stale_tabs = {"categories", "compare"}
        self._defer(self._update_plot)
        self._defer(self._refresh_visible_tab)
        if len(runs) == 1:
            self.statusBar().showMessage(f"{runs[0].name}: {run_summary(runs[0])}", 10000)

    def _update_plot(self) -> None:
        shown = self.session.ticked()
        live = self.runner.live
        if live is not None:  # a run going on, or the partial curves of one that failed
            shown = [r for r in shown if r.name != live.name] + [live]
        # New curves, then their first paint in a later turn: the two together can exceed 50 ms.
        self.plot.setUpdatesEnabled(False)
        self.plot.set_results(shown)
        self._defer(self._show_plot, first=True)

    def _show_plot(self) -> None:
        self.plot.setUpdatesEnabled(True)

    def _defer(self, fn: Callable[[], object], first: bool = False) -> None:
        """Run ``fn`` in a later event-loop turn, one queued step per turn (each once), so that a burst of
        view updates (a run ending: plot, table, tabs) never holds the event loop for long in one go."""
        if fn not in self._stages:
            self._stages.insert(0, fn) if first else self._stages.append(fn)
        if not self._stage_timer.isActive():
            self._stage_timer.start()

    def _run_stage(self) -> None:
        if self._stages:
            self._stages.pop(0)()
        if self._stages:
            self._stage_timer.start()

    def flush_updates(self) -> None:
        """Run every deferred view update now (tests, exports, screenshots)."""
        while self._stages:
            self._stages.pop(0)()

    def _refresh_visible_tab(self, *_: object) -> None:
        w = self.tabs.currentWidget()
        if w is self.cat_host and "categories" in self._stale_tabs:
            self._stale_tabs.discard("categories")
            self.category_plot.set_results(self.session.ticked())
        elif w is self.compare_panel and "compare" in self._stale_tabs:
            self._stale_tabs.discard("compare")
            runs = self.session.ticked()
            a, b = (runs[0], runs[1]) if len(runs) >= 2 else (None, None)
            self.compare_panel.set_runs(self.session.runs(), a, b)

    def _refresh_stale_comparison(self) -> None:
        if "compare" in self._stale_tabs:
            self.refresh_all_tabs()

    def refresh_all_tabs(self) -> None:
        """Bring every tab up to date now (exports, screenshots, tests)."""
        self.category_plot.set_results(self.session.ticked())
        runs = self.session.ticked()
        a, b = (runs[0], runs[1]) if len(runs) >= 2 else (None, None)
        self.compare_panel.set_runs(self.session.runs(), a, b)
        self._stale_tabs = set()

    def _on_current_run(self, run: RunResult | None) -> None:
        self._defer(self._update_layer_table)

    def _update_layer_table(self) -> None:
        run = self.session.current()
        self.layer_table.set_result(run, run.name if run is not None else "")

    def show_comparison(self) -> None:
        self.flush_updates()
        runs = self.session.ticked()
        if len(runs) >= 2:
            self.compare_panel.set_runs(self.session.runs(), runs[0], runs[1])
            self._stale_tabs.discard("compare")
        self.tabs.setCurrentWidget(self.compare_panel)

    def current_run(self) -> RunResult | None:
        return self.session.current()

    # --- files (the work lives in FileActions) ---
    def open_head_dialog(self) -> None:
        self.files.open_head_dialog()

    def open_head(self, path: Path) -> bool:
        return self.files.open_head(path)

    def save_head_dialog(self) -> None:
        self.files.save_head_dialog()

    def save_head(self, path: Path) -> bool:
        return self.files.save_head(path)

    def open_run_dialog(self) -> None:
        self.files.open_run_dialog()

    def open_run(self, path: Path) -> RunResult | None:
        return self.files.open_run(path)

    def save_run_dialog(self) -> None:
        self.files.save_run_dialog()

    def save_run(self, path: Path, result: RunResult | None = None) -> bool:
        return self.files.save_run(path, result)

    def export_plot_dialog(self, fmt: str) -> None:
        self.files.export_plot_dialog(fmt)

    def export_plot(self, path: Path, fmt: str | None = None) -> bool:
        """The plot as shown (one run or the overlay of the ticked runs) as PNG or SVG."""
        return self.files.export_plot(path, fmt)

    def export_data_dialog(self, kind: str) -> None:
        self.files.export_data_dialog(kind)

    def export_data(self, path: Path, kind: str) -> bool:
        """``csv``/``json``: the current run; ``compare-csv``/``compare-md``: the comparison shown."""
        return self.files.export_data(path, kind)

    # --- devices and status bar ---
    def _on_devices(self, value: tuple[list[DeviceChoice], str, str]) -> None:
        devices, best, status = value
        self.best_device = best
        self.device_status = status
        saved = self.app_settings.run_settings().get("device")
        ids = {d.id for d in devices}
        self.controls.set_devices(devices, select=saved if saved in ids else best)
        if not self._predict_gpu_saved:  # default: the device's own GPU when a profile matches it
            gpu = next((d for d in devices if d.kind != "cpu"), None)
            self.predict_panel.blockSignals(True)
            self.predict_panel.select_for_device(gpu.name() if gpu is not None else "")
            self.predict_panel.blockSignals(False)
        self._on_settings_changed()

    def _on_devices_error(self, err: WorkerError) -> None:
        self.device_status = f"device discovery failed: {err.message} — CPU only"
        self.controls.set_devices([CPU_CHOICE], select="cpu")
        self._update_device_status()
        self.show_error("Could not list GPUs; the CPU is still available.", err.traceback, level="warning")

    def _update_device_status(self) -> None:
        d = self.controls.device_choice()
        self.status_device.setText(f"Device: {d.text()}")
        self.status_memory.setText(f"Total memory: {fmt_bytes(d.total_bytes)}" if d.total_bytes else "")
        self.status_nvml.setText(self.device_status)

    # --- messages ---
    def show_error(self, text: str, details: str = "", level: str = "error") -> None:
        """Non-modal: the message bar above the views; the app stays usable."""
        self.message_bar.show_message(level, text, details)

    def show_about(self) -> None:
        QMessageBox.about(self, "About VGG Memory Explorer", about_text())

    # --- lifetime ---
    def closeEvent(self, event: QCloseEvent) -> None:
        self.shutdown()
        self.app_settings.save_window(self, self.splitters)
        self.app_settings.save_run_settings(self._persisted_settings())
        super().closeEvent(event)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Cancel a run and join every thread this window started."""
        self.predict_timer.stop()
        self.runner.shutdown(timeout)
        self.device_worker.join(timeout)
        self.predict_service.stop()


def about_text() -> str:
    def v(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    from PySide6 import __version__ as pyside_version
    from PySide6.QtCore import qVersion

    rows = [
        ("VGG Memory Explorer", __version__),
        ("Python", platform.python_version()),
        ("PyTorch", v("torch")),
        ("PySide6 / Qt", f"{pyside_version} / {qVersion()}"),
        ("pyqtgraph", v("pyqtgraph")),
        ("NumPy", v("numpy")),
        ("nvidia-ml-py", v("nvidia-ml-py")),
    ]
    table = "".join(f"<tr><td>{k}</td><td><b>{val}</b></td></tr>" for k, val in rows)
    return (
        "<p>Where GPU memory goes when VGG's fully-connected head becomes fully convolutional — measured, "
        f"attributed, compared.</p><table>{table}</table>"
    )
