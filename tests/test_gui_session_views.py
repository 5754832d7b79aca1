"""The Qt views of the session. The runs list shows what the session holds and sends ticks, picks,
renames and removals to the session's mutators; two views of one session agree. The run controls send
every setting to the session and show settings the session is given."""

from __future__ import annotations

from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from vggexplorer.core.results.result import RunResult
from vggexplorer.core.results.synthetic import synthetic_run
from vggexplorer.core.session.model import SessionModel
from vggexplorer.core.session.settings import RunSettings
from vggexplorer.qt.run_controls import CPU_CHOICE, DeviceChoice, RunControls
from vggexplorer.qt.runs import RunIdRole, RunsPanel


def run(name: str) -> RunResult:
    return synthetic_run(name=name, head="fc", input_hw=64, batch=1)


def shown(panel: RunsPanel) -> list[tuple[str, bool]]:
    items = [panel.list.item(i) for i in range(panel.list.count())]
    return [(it.text(), it.checkState() == Qt.CheckState.Checked) for it in items]


def test_runs_list_follows_the_session_and_acts_through_it(qtbot: QtBot) -> None:
    session = SessionModel()
    before = run("before")
    session.add_run(before, ticked=False)
    panel, other = RunsPanel(session), RunsPanel(session)
    for p in (panel, other):
        qtbot.addWidget(p)
    assert shown(panel) == [("before", False)] and panel.list.currentItem() is not None

    a, b = run("A"), run("B")
    ia = session.add_run(a)
    ib = session.add_run(b, ticked=False, current=False)
    assert shown(panel) == shown(other) == [("before", False), ("A", True), ("B", False)]
    assert panel.list.currentItem().data(RunIdRole) == ia
    assert not panel.compare_button.isEnabled()

    # the user ticks B in one view: the session and the other view follow
    panel.list.item(2).setCheckState(Qt.CheckState.Checked)
    assert session.ticked() == [a, b] and shown(other)[2] == ("B", True)
    assert panel.compare_button.isEnabled() and other.compare_button.isEnabled()

    # picks and renames go to the session
    panel.list.setCurrentRow(2)
    assert session.current() is b and other.list.currentRow() == 2
    panel.list.item(2).setText("  renamed ")
    assert b.name == "renamed" and other.list.item(2).text() == "renamed"
    panel.list.item(2).setText("   ")  # a blank name: the old one comes back
    assert b.name == "renamed" and panel.list.item(2).text() == "renamed"

    # remove the current run: gone from the session and both views; the row above becomes current
    panel.remove_button.click()
    assert session.runs() == [before, a] and session.id_of(b) is None
    assert shown(other) == [("before", False), ("A", True)]
    assert session.current() is a and other.list.currentItem().data(RunIdRole) == ia
    assert ib not in session.run_ids()

    # the old convenience API reads and writes the session
    panel.set_checked([before])
    assert session.ticked() == [before] and shown(other) == [("before", True), ("A", False)]
    assert panel.runs() == session.runs() and panel.checked() == [before] and panel.current() is a


def test_a_deleted_view_stops_listening(qtbot: QtBot) -> None:
    session = SessionModel()
    panel = RunsPanel(session)
    assert len(session.events.runs) == 1 and len(session.events.selection) == 1
    panel.deleteLater()
    qtbot.waitUntil(lambda: len(session.events.runs) == 0, timeout=2000)
    session.add_run(run("after"))  # nothing calls into the deleted widget
    assert len(session.events.selection) == 0


def test_run_controls_are_a_view_of_the_session_settings(qtbot: QtBot) -> None:
    session = SessionModel()
    controls = RunControls(session)
    qtbot.addWidget(controls)
    assert session.settings == controls.settings()  # what the widgets start with is the session's
    seen: list[RunSettings] = []
    session.events.settings.connect(seen.append)

    controls.batch.setValue(5)
    controls.dtype.setCurrentText("bfloat16")
    assert (session.settings.batch, session.settings.dtype) == (5, "bfloat16")
    assert [(x.batch, x.dtype) for x in seen] == [(5, "float32"), (5, "bfloat16")]

    gpu = DeviceChoice("cuda:0", "NVIDIA H100 80GB HBM3", 80 << 30, "cuda")
    controls.set_devices([CPU_CHOICE, gpu])
    target = RunSettings(
        preset=session.settings.preset,
        backbone=session.settings.backbone,
        device="cuda:0",
        batch=2,
        input_hw=(96, 96),
        dtype="float16",
        mode="eval",
        optimizer="sgd",
        iterations=4,
    )
    session.set_settings(target)
    assert controls.settings() == target and session.settings == target
    assert controls.mode.currentData() == "eval" and controls.device_id() == "cuda:0"

    # a device the picker does not offer: the session is corrected to what the controls can show
    session.set_settings(RunSettings(preset=target.preset, backbone=target.backbone, device="cuda:7"))
    assert session.settings.device == "cuda:0" == controls.device_id()
    assert session.settings == controls.settings()


def test_a_runs_tooltip_is_the_run_summary_sentence(qtbot: QtBot) -> None:
    """The runs list says a run's peaks with the one summary sentence the status bar and CLI use."""
    from vggexplorer.core.results.wording import run_summary

    session = SessionModel()
    r = synthetic_run(name="cuda run", head="fc", input_hw=64, batch=1, cuda=True)
    session.add_run(r)
    panel = RunsPanel(session)
    qtbot.addWidget(panel)
    tip = panel.list.item(0).toolTip()
    assert run_summary(r, sep="<br>") in tip and "reserved" in tip and "process" in tip
