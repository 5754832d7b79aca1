"""The torch child processes never import Qt: each child entry is started the way the app starts it (a CPU
run forked from the fork server, a run spawned as CUDA runs are, device discovery spawned, the prediction
service spawned by PredictService), does real work, and then reports which modules it has imported."""

from __future__ import annotations

import multiprocessing
import threading

from generators import drive
from pytestqt.qtbot import QtBot

from vggexplorer.core.model.config import RunConfig
from vggexplorer.core.model.head import preset
from vggexplorer.core.run.child import subprocess_call, subprocess_iter
from vggexplorer.qt.predict_panel import PredictService

#: What no child may import: Qt, its bindings, the plotting library, the GUI package.
QT = ("PySide6", "shiboken6", "pyqtgraph", "vggexplorer.qt")

#: A tiny CPU run (the fc head at 32×32, batch 1, eval), in the engine's dict format as the GUI sends it.
CONFIG = RunConfig(head=preset("fc"), device="cpu", batch=1, input_hw=(32, 32), mode="eval").to_dict()


def test_run_child_forked_from_the_fork_server_imports_no_qt() -> None:
    # the GUI's path for a CPU run: subprocess_iter(engine_run_iter, config, cancel, fork=True)
    payload = ("vggexplorer.core.run.entries:engine_run_iter", CONFIG, (*QT, "vggexplorer.core.run.engine"))
    progress, (result, modules) = drive(
        subprocess_iter("vggexplorer.core.run.child:probe_iter", payload, threading.Event(), fork=True)
    )
    assert progress and result.status == "ok" and len(result.tensor) > 0
    # the engine ran in that child (the probe sees imports); nothing of Qt is there
    assert modules == ["vggexplorer.core.run.engine"]
    assert multiprocessing.active_children() == []


def test_run_child_spawned_as_for_cuda_imports_no_qt() -> None:
    """CUDA runs get a freshly spawned process (no driver state inherited from a fork): the spawn path
    re-imports the parent's main module there, so it is checked too — here with a CPU config, the same
    entry and the same spawn."""
    payload = ("vggexplorer.core.run.entries:engine_run_iter", CONFIG, (*QT, "vggexplorer.core.run.engine"))
    progress, (result, modules) = drive(
        subprocess_iter("vggexplorer.core.run.child:probe_iter", payload, threading.Event(), fork=False)
    )
    assert progress and result.status == "ok"
    assert modules == ["vggexplorer.core.run.engine"]
    assert multiprocessing.active_children() == []


def test_device_discovery_child_imports_no_qt() -> None:
    (devices, best, status), modules = subprocess_call(
        "vggexplorer.core.run.child:probe_call",
        "vggexplorer.core.run.entries:discover_devices",
        (*QT, "vggexplorer.core.devices.environment"),
    )
    assert isinstance(devices, list) and best and status
    assert modules == ["vggexplorer.core.devices.environment"]


def test_prediction_service_child_imports_no_qt(qtbot: QtBot) -> None:
    service = PredictService()
    try:
        with qtbot.waitSignal(service.answered, timeout=240_000) as answered:
            rid = service.request({"config": CONFIG, "gpu": {"profile": "RTX 4090"}})
        assert answered.args[0].request_id == rid and answered.args[0].fits
        with qtbot.waitSignal(service.modulesReported, timeout=60_000) as reported:
            rid = service.request({"modules": [*QT, "vggexplorer.core.predict.predictor"]})
        assert reported.args[0] == rid
        # the predictor ran in that child; nothing of Qt is there
        assert reported.args[1] == ["vggexplorer.core.predict.predictor"]
    finally:
        service.stop()
    assert multiprocessing.active_children() == []
