"""The main window end to end: edit → shapes → undo/redo → fix → run on the CPU → plots and table →
export; cancel; errors shown without a modal and the app stays usable; the event loop never stalls."""

from __future__ import annotations

import csv
import gc
import multiprocessing
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np
import pytest
from PySide6.QtCore import QModelIndex, Qt, QTimer
from pytestqt.qtbot import QtBot

from vggexplorer.core.model.head import HeadSpec
from vggexplorer.core.run.progress import Progress
from vggexplorer.core.session.settings import RunSettings
from vggexplorer.qt.head.head_model import IssueRole, StateRole
from vggexplorer.qt.head.palette import PaletteView
from vggexplorer.qt.main_window import MainWindow, engine_run_factory
from vggexplorer.qt.settings import AppSettings

RUN_TIMEOUT_MS = 240_000  # a real CPU run: child start (imports torch) + a tiny VGG11 step; slow CI boxes


def make_window(qtbot: QtBot, ini: Path, size: tuple[int, int] | None = (1400, 900), **kw: Any) -> MainWindow:
    w = MainWindow(AppSettings.at(str(ini)), discover=False, **kw)
    qtbot.addWidget(w, before_close_func=lambda win: win.shutdown())
    if size is not None:
        w.resize(*size)
    w.show()
    qtbot.waitExposed(w)
    return w


@pytest.fixture
def window(qtbot: QtBot, tmp_path: Path) -> Iterator[MainWindow]:
    w = make_window(qtbot, tmp_path / "settings.ini")
    yield w
    w.shutdown()
    assert not w.worker.running
    assert multiprocessing.active_children() == []


def small_run(w: MainWindow, preset_name: str = "gap", size: int = 64) -> None:
    w.load_preset(preset_name)
    w.controls.batch.setValue(1)
    w.controls.input_h.setValue(size)
    w.controls.iterations.setValue(1)
    w.controls.mode.setCurrentIndex(w.controls.mode.findData("train-step"))


def run_and_wait(qtbot: QtBot, w: MainWindow) -> None:
    with qtbot.waitSignal(w.runEnded, timeout=RUN_TIMEOUT_MS):
        assert w.start_run()
    assert not w.worker.running


def drop_type(w: MainWindow, type_name: str, row: int) -> None:
    """What a drop from the palette does (the real drag is tested under Xvfb)."""
    mime = w.layer_palette.mimeData([w.layer_palette.item_for(type_name)])
    assert w.head_model.dropMimeData(mime, Qt.DropAction.CopyAction, row, 0, QModelIndex())


def test_first_screen(window: MainWindow) -> None:
    w = window
    assert w.doc.spec.name == "fc" and w.doc.spec.backbone == "vgg11"
    assert w.windowTitle() == "VGG Memory Explorer — vgg11 · fc · cpu"
    assert w.controls.run_button.isEnabled() and w.run_action.isEnabled()
    assert w.head_model.rowCount() == 9
    assert "N×512×7×7" in w.head_view.backbone_shape.text()
    assert w.status_device.text().startswith("Device: CPU")
    assert isinstance(w.layer_palette, PaletteView)
    menus = [a.text() for a in w.menuBar().actions()]
    assert menus == ["&File", "&Edit", "&Run", "&View", "&Help"]
    file_items = [a.text() for a in w.file_menu.actions() if a.text()]
    for item in (
        "&Open Head…",
        "&Save Head…",
        "&Presets",
        "Open &Run…",
        "Sa&ve Run…",
        "Export &Plot",
        "Export &Data",
        "&Quit",
    ):
        assert item in file_items
    assert w.run_action.shortcut().toString() == "Ctrl+R"
    assert w.cancel_action.shortcut().toString() == "Esc"
    assert [k.toString() for k in w.undo_action.shortcuts()] == ["Ctrl+Z"]
    assert w.redo_action.shortcuts()[0].toString() == "Ctrl+Shift+Z"


def test_edit_undo_redo_fix_run_export(qtbot: QtBot, window: MainWindow, tmp_path: Path) -> None:
    w = window
    # --- edit: a Conv2d dropped after Flatten cannot run; marked in place, Run disabled with the reason
    drop_type(w, "Conv2d", 2)
    assert w.head_model.index(2).data(StateRole) == "error"
    issue = w.head_model.index(2).data(IssueRole)
    assert "N×C×H×W" in issue.message and issue.fix == "remove the Flatten above it"
    assert not w.controls.run_button.isEnabled() and not w.run_action.isEnabled()
    assert issue.message in w.controls.reason.text() and w.controls.reason.isVisibleTo(w)
    assert "Cannot run" in w.head_view.summary.text()
    assert w.controls.preset.currentText() == "custom"
    assert w.start_run() is False

    # --- undo / redo with the step names in the Edit menu
    assert w.undo_action.text() == "&Undo Insert Conv2d"
    w.undo_action.trigger()
    assert w.controls.run_button.isEnabled() and w.head_model.rowCount() == 9
    assert w.redo_action.text() == "&Redo Insert Conv2d"
    assert w.controls.preset.currentText() == "fc"
    w.redo_action.trigger()
    assert not w.controls.run_button.isEnabled()

    # --- fix it as the message says: remove the Flatten above it … then the Linear needs a flat input
    w.head_view.select_row(1)
    w.head_view.delete_action.trigger()
    assert w.undo_action.text() == "&Undo Remove Flatten"
    assert w.head_model.index(1).data(StateRole) == "ok"  # the Conv2d now runs: N×512×7×7
    assert w.head_model.index(2).data(StateRole) == "error"  # Linear(25088→…) receives a map
    w.head_view.select_row(1)
    w.head_view.delete_action.trigger()  # drop the conv too, put the Flatten back: runnable again
    drop_type(w, "Flatten", 1)
    assert w.head_model.report.ok and w.controls.run_button.isEnabled()

    # --- run on the CPU at a small input
    small_run(w)
    assert w.head_model.report.ok
    run_and_wait(qtbot, w)
    assert not w.message_bar.isVisible(), w.message_bar.text.text()
    runs = w.runs_panel.runs()
    assert len(runs) == 1
    r = runs[0]
    assert r.status == "ok" and r.name == "gap · b1 · 64 · cpu"
    assert w.controls.progress_text().startswith("done")
    curves = w.plot.curves(0)
    assert len(curves["tensors"].series[0]) > 10 and len(curves["allocated"].series[0]) > 10
    assert w.layer_table.model.rowCount() == len(r.layers) > 0
    assert any(row.head_index >= 0 for row in w.layer_table.model.layers())

    # --- exports, files checked
    png = tmp_path / "plot.png"
    assert w.export_plot(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    svg = tmp_path / "plot.svg"
    assert w.export_plot(svg)
    root = ElementTree.parse(svg).getroot()
    assert root.tag.endswith("svg") and len(list(root.iter("{http://www.w3.org/2000/svg}path"))) > 3
    if shutil.which("rsvg-convert"):
        out = tmp_path / "svg.png"
        subprocess.run(["rsvg-convert", "-o", str(out), str(svg)], check=True, timeout=60)
        assert out.stat().st_size > 5_000
    csv_path = tmp_path / "run.csv"
    assert w.export_data(csv_path, "csv")
    with csv_path.open(newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows) > 2 and len(rows[0]) > 2
    json_path = tmp_path / "run.json"
    assert w.export_data(json_path, "json")
    from vggexplorer.core.results.runfile import load_run

    again = load_run(json_path)
    assert again.summary.peak_tensor_bytes == r.summary.peak_tensor_bytes
    assert not w.message_bar.isVisible()

    # --- the saved run opens as a second run; compare them
    opened = w.open_run(json_path)
    assert opened is not None and len(w.runs_panel.runs()) == 2
    w.show_comparison()
    assert w.compare_panel.comparison is not None
    assert "No difference" in w.compare_panel.explanation.toPlainText()
    md = tmp_path / "cmp.md"
    assert w.export_data(md, "compare-md") and md.read_text().startswith("# ")
    cmp_csv = tmp_path / "cmp.csv"
    assert w.export_data(cmp_csv, "compare-csv") and "section" in cmp_csv.read_text().splitlines()[0]


def test_head_files_round_trip(window: MainWindow, tmp_path: Path) -> None:
    w = window
    w.load_preset("fcn")
    path = tmp_path / "head.json"
    assert w.save_head(path)
    w.load_preset("gap")
    assert w.open_head(path)
    assert w.doc.spec == HeadSpec.load(path) and w.undo_action.text() == "&Undo Open head.json"
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    assert not w.open_head(bad)
    assert w.message_bar.isVisible() and "bad.json" in w.message_bar.text.text()
    w.message_bar.close_button.click()
    assert not w.message_bar.isVisible()


def test_cancel_keeps_the_app_usable(qtbot: QtBot, window: MainWindow) -> None:
    w = window
    small_run(w)
    with qtbot.waitSignal(w.runEnded, timeout=RUN_TIMEOUT_MS):
        assert w.start_run()
        assert not w.controls.run_button.isEnabled() and w.controls.cancel_button.isEnabled()
        w.cancel_action.trigger()
    assert w.controls.progress_text().startswith("cancelled")
    assert w.message_bar.isVisible() and w.message_bar.level == "info"
    assert w.controls.run_button.isEnabled() and not w.controls.cancel_button.isEnabled()
    assert all(r.status == "cancelled" for r in w.runs_panel.runs())


def failing_factory(
    settings: RunSettings, head: HeadSpec
) -> Callable[[threading.Event], Generator[Any, None, Any]]:
    def gen(cancel: threading.Event) -> Generator[Progress, None, Any]:
        chunk = {
            "t": np.linspace(0, 0.1, 50),
            "delta": np.full(50, 1 << 20),
            "total": np.arange(1, 51) << 20,
            "phase": np.ones(50, np.int8),
            "module": np.zeros(50, np.int32),
            "iteration": np.zeros(50, np.int32),
        }
        yield Progress(0.3, "forward", "features.3", 0, "forward · features.3", chunk, ("features.3",))
        yield Progress(0.6, "backward", "features.8", 0, "backward · features.8")
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    return lambda cancel: gen(cancel)


def test_error_is_non_modal_partial_curves_stay_app_usable(qtbot: QtBot, tmp_path: Path) -> None:
    w = make_window(qtbot, tmp_path / "s.ini", run_factory=failing_factory)
    small_run(w)
    with qtbot.waitSignal(w.runEnded, timeout=20_000):
        assert w.start_run()
    bar = w.message_bar
    assert bar.isVisible() and bar.level == "error"
    text = bar.text.text()
    assert "backward" in text and "features.8" in text and "out of memory" in text
    assert "RuntimeError" in bar.details.toPlainText()
    assert w.app_settings is not None and not bar.details.isVisible()
    # the partial curve stays in the plot
    assert w.plot.results and len(w.plot.results[-1].tensor) == 50
    # still usable: edit, undo, run again with a working generator
    drop_type(w, "ReLU", 3)
    w.undo_action.trigger()
    w.run_factory = engine_run_factory
    run_and_wait(qtbot, w)
    assert [r.status for r in w.runs_panel.runs()] == ["ok"]
    assert not bar.isVisible()  # a new run clears the old message
    w.shutdown()


def test_real_oom_shows_layer_and_phase(qtbot: QtBot, tmp_path: Path) -> None:
    """The engine's own allocation-failure hook: the run ends with status "oom", message names where."""

    def factory(s: RunSettings, h: HeadSpec) -> Callable[[threading.Event], Generator[Any, None, Any]]:
        return engine_run_factory(s, h, fail_at=("classifier.0", "backward"))

    w = make_window(qtbot, tmp_path / "s.ini", run_factory=factory)
    small_run(w)
    run_and_wait(qtbot, w)
    r = w.runs_panel.runs()[0]
    assert r.status == "oom" and r.fault is not None
    text = w.message_bar.text.text()
    assert w.message_bar.isVisible() and "Out of memory in backward at classifier.0" in text
    assert len(r.tensor) > 0 and w.plot.results == [r]  # the curves up to the failure stay
    assert w.controls.run_button.isEnabled()
    w.shutdown()


def test_event_loop_never_blocked_during_a_real_run(qtbot: QtBot, window: MainWindow) -> None:
    """A heartbeat QTimer every 10 ms while a real small CPU run goes on (live plots included).

    Two measures: the GUI thread's own CPU time between beats (work we do on it) must stay ≤ 50 ms, and
    so must the wall-clock gap — unless the machine is busy (load average above half the cores, e.g. the
    2-core CI box while the run's child process computes), where the scheduler alone can delay any
    thread; then the wall gap gets a looser bound and is reported.
    """
    w = window
    small_run(w)
    gaps: list[tuple[float, float]] = []
    last = [time.perf_counter(), time.thread_time()]

    def beat() -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        gaps.append((now - last[0], cpu - last[1]))
        last[0], last[1] = now, cpu

    hb = QTimer()
    hb.setTimerType(Qt.TimerType.PreciseTimer)
    hb.setInterval(10)
    hb.timeout.connect(beat)
    partials: list[Any] = []
    w.worker.partial.connect(partials.append)
    load0 = os.getloadavg()[0]
    # What the test process made before this point (other tests' leftovers, test-only imports) is not the
    # app's: freeze it as the app freezes its own start-up objects (main_window.freeze_long_lived_objects),
    # so that a full collection here walks only what this run makes — as it would in the app.
    gc.collect()
    gc.freeze()
    hb.start()
    try:
        run_and_wait(qtbot, w)
        qtbot.wait(300)  # the final redraw and repaint happen after runEnded
    finally:
        hb.stop()
        gc.unfreeze()
    load = max(load0, os.getloadavg()[0])
    assert partials, "no live partial results reached the GUI"
    assert w.runs_panel.runs()[0].status == "ok"
    wall = max(g[0] for g in gaps[1:])
    cpu = max(g[1] for g in gaps[1:])
    print(
        f"heartbeat: {len(gaps)} beats, max wall gap {wall * 1000:.0f} ms, max GUI CPU {cpu * 1000:.0f} ms, "
        f"load {load:.1f} on {os.cpu_count()} cores"
    )
    assert len(gaps) > 50
    assert cpu <= 0.050, f"the GUI thread worked {cpu * 1000:.0f} ms without returning to the event loop"
    # The run's child process uses every core for its kernels; where that leaves the machine busy (load
    # above half the cores: the 2-core CI box during any run), the scheduler alone can hold the GUI process
    # back for tens of ms, so the wall-clock gap gets a looser bound — the GUI thread's own work (above)
    # keeps the strict one.
    busy = load > (os.cpu_count() or 1) / 2
    assert wall <= (0.500 if busy else 0.050), f"event loop stalled {wall * 1000:.0f} ms (load {load:.1f})"


def test_settings_persist(qtbot: QtBot, tmp_path: Path) -> None:
    ini = tmp_path / "persist.ini"
    w = make_window(qtbot, ini)
    w.controls.batch.setValue(4)
    w.controls.input_h.setValue(96)
    w.controls.dtype.setCurrentText("bfloat16")
    w.resize(1234, 777)
    w.close()
    w2 = make_window(qtbot, ini, size=None)
    s = w2.controls.settings()
    assert (s.batch, s.input_hw, s.dtype) == (4, (96, 96), "bfloat16")
    assert w2.head_model.batch == 4 and w2.head_model.input_hw == (96, 96)
    # the saved geometry is restored (the offscreen platform may clamp it to its virtual screen)
    assert AppSettings.at(str(ini)).q.contains("window/geometry")
    assert (w2.width(), w2.height()) != (1560, 960) and abs(w2.height() - 777) <= 40


def test_float16_on_cpu_is_blocked_with_reason(window: MainWindow) -> None:
    window.controls.dtype.setCurrentText("float16")
    assert not window.controls.run_button.isEnabled()
    assert "bfloat16" in window.controls.reason.text()
    window.controls.dtype.setCurrentText("float32")
    assert window.controls.run_button.isEnabled()


def test_run_controls_offer_the_engines_choices(window: MainWindow) -> None:
    """The pickers list core/model/config.py's constants (the one copy), modes fullest first."""
    from vggexplorer.core.model.config import DTYPES, MODES, OPTIMIZERS

    c = window.controls

    def texts(combo: Any) -> list[str]:
        return [combo.itemText(i) for i in range(combo.count())]

    assert texts(c.dtype) == list(DTYPES)
    assert texts(c.optimizer) == list(OPTIMIZERS)
    assert [c.mode.itemData(i) for i in range(c.mode.count())] == ["train-step", "train", "eval"]
    assert set(MODES) == {c.mode.itemData(i) for i in range(c.mode.count())}
