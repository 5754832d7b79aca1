"""Predicted beside measured in the window: every edit brings a new prediction (from the helper process),
labelled PREDICTED everywhere; an OOM verdict names the layer and phase; a head that cannot run shows its
shape error instead; stale answers are ignored; "Show prediction" toggles the overlaid curves."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QModelIndex, Qt
from pytestqt.qtbot import QtBot

from vggexplorer.core.base.units import GiB
from vggexplorer.core.predict.service import PredictionAnswer
from vggexplorer.core.results.synthetic import synthetic_run
from vggexplorer.qt.main_window import MainWindow
from vggexplorer.qt.plots.style import PREDICTED_STYLE
from vggexplorer.qt.settings import AppSettings

#: the first answer pays for the child's start (spawn, import torch) and the first fake trace
FIRST_MS = 180_000
NEXT_MS = 60_000


@pytest.fixture
def window(qtbot: QtBot, tmp_path: Path) -> Iterator[MainWindow]:
    w = MainWindow(AppSettings.at(str(tmp_path / "s.ini")), discover=False)
    qtbot.addWidget(w, before_close_func=lambda win: win.shutdown())
    w.resize(1400, 900)
    w.show()
    qtbot.waitExposed(w)
    c = w.controls
    c.iterations.setValue(1)
    c.mode.setCurrentIndex(c.mode.findData("train-step"))
    c.optimizer.setCurrentText("adam")
    c.batch.setValue(1)
    with qtbot.waitSignal(w.predictionReady, timeout=FIRST_MS):
        c.input_h.setValue(384)
    yield w
    w.shutdown()
    assert not w.predict_service.running
    assert multiprocessing.active_children() == []


def test_an_edit_brings_a_new_prediction_labelled_predicted(qtbot: QtBot, window: MainWindow) -> None:
    w = window
    first = w.prediction
    assert first is not None and first.fits
    assert w.predict_panel.verdict.text().startswith(
        "PREDICTED for RTX 4090 (estimated profile): peak allocated"
    )
    # the largest batch follows the verdict
    with qtbot.waitSignal(w.maxBatchReady, timeout=NEXT_MS) as mb:
        w.request_prediction()
    assert mb.args[0] > 1 and f"largest batch that fits: {mb.args[0]}" in w.predict_panel.verdict.text()

    # an edit to the head (Delete a Dropout) → a new prediction for the new config, without asking
    with qtbot.waitSignal(w.predictionReady, timeout=NEXT_MS) as blocker:
        w.load_preset("fcn")
    a: PredictionAnswer = blocker.args[0]
    assert a.request_id == w.predict_service.latest_id
    assert a.result.predicted and a.result.config.run.head.name == "fcn"
    assert a.result.config.run.input_hw == (384, 384)
    assert a.peak_allocated_bytes != first.peak_allocated_bytes  # fcn at 384 keeps a 6×6 score map

    # every predicted curve says so, in the predicted style, on the plot
    curves = w.plot.prediction_curves()
    assert set(curves) == {"allocated", "reserved", "process"}
    for item in curves.values():
        assert item.name().startswith("predicted ") and "RTX 4090" in item.name()
        assert item.opts["pen"].style() == PREDICTED_STYLE
    assert curves["allocated"].series[1].max() == a.peak_allocated_bytes
    assert "PREDICTED for RTX 4090" in w.plot._title.text
    assert "predicted" in w.plot.top.titleLabel.text

    # "Show prediction" toggles the curves; the verdict stays
    w.predict_panel.show_check.setChecked(False)
    assert w.plot.prediction is None and w.plot.prediction_curves() == {}
    assert w.predict_panel.verdict.text().startswith("PREDICTED")
    w.predict_panel.show_check.setChecked(True)
    assert w.plot.prediction is a.result


def test_predicted_beside_measured_and_stale_answers_ignored(qtbot: QtBot, window: MainWindow) -> None:
    w = window
    measured = synthetic_run(head="fc", input_hw=384, batch=1, cuda=True)
    measured.name = "fc measured"
    w.runs_panel.add(measured, checked=True, make_current=True)
    w.flush_updates()
    assert w.plot.results == [measured]
    assert {"allocated", "reserved", "process"} <= set(w.plot.curves(0))
    assert all("predicted" not in c.name() for c in w.plot.curves(0).values())
    assert set(w.plot.prediction_curves()) == {"allocated", "reserved", "process"}  # both, overlaid
    assert w.plot.prediction_aligned  # the prediction's clock mapped onto the measured run's phases
    text = w.plot.readout(float(measured.allocator.t[len(measured.allocator) // 2]))
    assert "predicted allocated" in text and "allocated" in text.replace("predicted allocated", "")

    # a burst of requests: only the newest is answered and shown; an older answer arriving is ignored
    old = w.prediction
    assert old is not None
    w.controls.batch.setValue(2)
    w.request_prediction()
    with qtbot.waitSignal(w.predictionReady, timeout=NEXT_MS) as blocker:
        newest = w.request_prediction()
    assert blocker.args[0].request_id == newest and blocker.args[0].result.config.run.batch == 2
    shown = w.prediction
    assert shown is not None
    w.predict_service.answered.emit(old)  # stale: its id is not the latest
    assert w.prediction is shown and w.plot.prediction is shown.result


def test_oom_verdict_names_layer_and_phase(qtbot: QtBot, window: MainWindow) -> None:
    w = window
    with qtbot.waitSignal(w.predictionReady, timeout=NEXT_MS) as blocker:
        w.predict_panel.set_custom_capacity(int(1.6 * GiB))
    a: PredictionAnswer = blocker.args[0]
    assert not a.fits and a.oom_at is not None
    assert (a.oom_at["layer"], a.oom_at["phase"]) == ("classifier.0", "backward")
    verdict = w.predict_panel.verdict.text()
    assert verdict.startswith("PREDICTED for custom 1.60 GiB")
    assert "OOM at classifier.0 in backward" in verdict
    assert w.predict_panel.level == "oom"
    assert a.result.status == "oom" and w.plot.prediction is a.result  # the curves up to the OOM


def test_a_head_that_cannot_run_shows_its_shape_error(qtbot: QtBot, window: MainWindow) -> None:
    w = window
    assert w.plot.prediction is not None
    mime = w.layer_palette.mimeData([w.layer_palette.item_for("Conv2d")])
    assert w.head_model.dropMimeData(mime, Qt.DropAction.CopyAction, 2, 0, QModelIndex())  # after Flatten
    assert w.head_model.report.issue is not None
    w.predict_timer.timeout.emit()  # what the debounce timer does 150 ms later
    verdict = w.predict_panel.verdict.text()
    assert verdict.startswith("No prediction — the head cannot run:")
    assert str(w.head_model.report.issue) in verdict
    assert w.plot.prediction is None and w.prediction is None
    # undo: the head runs again and the prediction comes back
    with qtbot.waitSignal(w.predictionReady, timeout=NEXT_MS):
        w.undo_action.trigger()
    assert w.predict_panel.verdict.text().startswith("PREDICTED")
