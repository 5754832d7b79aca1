"""The head list model (a thin bridge over HeadDocument), undo commands, drops, palette and property panel."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import QByteArray, QMimeData, QModelIndex, Qt
from PySide6.QtGui import QUndoStack
from PySide6.QtWidgets import QLineEdit, QMenu
from pytestqt.qtbot import QtBot

from vggexplorer.core.model.head import HeadDocument, default_layer, preset
from vggexplorer.core.model.layers import LAYER_TYPES
from vggexplorer.qt.head.head_model import (
    ROWS_MIME,
    TYPE_MIME,
    HeadListModel,
    IssueRole,
    OutputShapeRole,
    ParamsRole,
    StateRole,
)
from vggexplorer.qt.head.head_view import HeadView
from vggexplorer.qt.head.palette import PaletteView
from vggexplorer.qt.head.properties import PropertyPanel, parse_value


@pytest.fixture
def model(qtbot: QtBot) -> HeadListModel:
    doc = HeadDocument(preset("fc"))
    stack = QUndoStack()
    m = HeadListModel(doc, stack, batch=1, input_hw=(224, 224))
    m._test_stack = stack  # type: ignore[attr-defined]  # keep the stack alive with the model
    return m


def types(m: HeadListModel) -> list[str]:
    return [lay.type for lay in m.doc.spec.layers]


def type_mime(name: str) -> QMimeData:
    mime = QMimeData()
    mime.setData(TYPE_MIME, QByteArray(name.encode()))
    return mime


def test_qtmodeltester_through_edits(qtmodeltester, model: HeadListModel) -> None:  # type: ignore[no-untyped-def]
    qtmodeltester.check(model)
    model.push_insert_type(2, "Conv2d")
    model.push_move(0, 3)
    model.push_remove(1)
    model.push_update(types(model).index("Dropout"), p=0.25)
    model.push_set_head(preset("fcn"), "Load preset fcn")
    model.stack.undo()
    model.stack.undo()
    qtmodeltester.check(model)


def test_edits_map_to_row_signals(qtbot: QtBot, model: HeadListModel) -> None:
    with qtbot.waitSignal(model.rowsInserted) as ins:
        model.push_insert_type(2, "ReLU")
    assert ins.args[1:] == [2, 2]
    with qtbot.waitSignal(model.rowsMoved) as mv:
        model.push_move(2, 5)  # ReLU ends up at index 5
    assert mv.args[1:3] == [2, 2] and mv.args[4] == 6  # Qt's destination: before old row 6
    assert types(model)[5] == "ReLU"
    with qtbot.waitSignal(model.rowsRemoved) as rm:
        model.push_remove(5)
    assert rm.args[1:] == [5, 5]
    with qtbot.waitSignal(model.dataChanged):
        model.push_update(2, out_features=2048)
    with qtbot.waitSignal(model.modelReset):
        model.push_set_head(preset("gap"), "Load preset gap")
    assert model.rowCount() == 3


def test_shapes_and_error_with_fix(model: HeadListModel) -> None:
    assert model.index(2).data(OutputShapeRole) == "N×4096"
    assert model.index(2).data(ParamsRole) == 25088 * 4096 + 4096
    # a Conv2d after Flatten cannot run: marked in place with the message and the fix
    model.push_insert_type(2, "Conv2d")
    issue = model.index(2).data(IssueRole)
    assert issue is not None and "N×C×H×W" in issue.message and "Flatten" in issue.fix
    assert model.index(2).data(StateRole) == "error"
    assert model.index(3).data(StateRole) == "unreached"
    assert model.index(3).data(OutputShapeRole) == ""
    assert not model.report.ok


def test_context_change_updates_shapes(qtbot: QtBot, model: HeadListModel) -> None:
    model.push_set_head(preset("fcn"), "fcn")
    assert model.index(0).data(OutputShapeRole) == "N×4096×1×1"
    with qtbot.waitSignal(model.reportChanged):
        model.set_context(2, (384, 384))
    assert model.index(0).data(OutputShapeRole) == "N×4096×6×6"
    model.set_context(1, (160, 160))  # 5×5 map: the 7×7 conv cannot run
    issue = model.index(0).data(IssueRole)
    assert issue is not None and "larger than" in issue.message and "224" in issue.fix


def test_undo_texts_and_round_trip(model: HeadListModel) -> None:
    start = model.doc.spec
    model.push_insert_type(2, "Conv2d")
    assert model.stack.undoText() == "Insert Conv2d"
    model.push_update(2, in_channels=256)
    assert model.stack.undoText() == "Set in_channels=256 of Conv2d"
    model.push_move(2, 0)
    model.push_replace_type(0, "BatchNorm2d")
    assert model.stack.undoText() == "Replace Conv2d with BatchNorm2d"
    model.push_duplicate(0)
    assert model.stack.undoText() == "Duplicate BatchNorm2d"
    assert model.stack.count() == 5
    while model.stack.canUndo():
        model.stack.undo()
    assert model.doc.spec == start
    assert model.stack.redoText() == "Insert Conv2d"
    while model.stack.canRedo():
        model.stack.redo()
    assert types(model)[:2] == ["BatchNorm2d", "BatchNorm2d"]


def test_invalid_edit_pushes_nothing(model: HeadListModel) -> None:
    from vggexplorer.core.base.errors import HeadError

    with pytest.raises(HeadError):
        model.push_update(2, in_features=0)
    with pytest.raises(HeadError):
        model.push_remove(99)
    assert model.stack.count() == 0


def test_drop_palette_type_is_one_undo_step(model: HeadListModel) -> None:
    before = model.doc.spec
    assert model.canDropMimeData(type_mime("Conv2d"), Qt.DropAction.CopyAction, 1, 0, QModelIndex())
    assert model.dropMimeData(type_mime("Conv2d"), Qt.DropAction.CopyAction, 1, 0, QModelIndex())
    assert types(model)[1] == "Conv2d"
    assert model.doc.spec.layers[1] == default_layer("Conv2d")
    assert model.stack.count() == 1 and model.stack.undoText() == "Insert Conv2d"
    model.stack.undo()
    assert model.doc.spec == before


def test_drop_rows_reorders_through_undo(model: HeadListModel) -> None:
    mime = model.mimeData([model.index(3)])  # ReLU
    # drop before row 6: it lands at index 5 (rows after the source shift up)
    assert model.dropMimeData(mime, Qt.DropAction.MoveAction, 6, 0, QModelIndex())
    assert types(model)[5] == "ReLU" and types(model)[3] == "Dropout"
    assert model.stack.count() == 1
    # dropping a row onto its own place changes nothing and pushes nothing
    mime = model.mimeData([model.index(0)])
    assert model.dropMimeData(mime, Qt.DropAction.MoveAction, 1, 0, QModelIndex())
    assert model.stack.count() == 1
    # drop onto an item (parent valid): before it
    mime = model.mimeData([model.index(8)])
    model.dropMimeData(mime, Qt.DropAction.MoveAction, -1, -1, model.index(0))
    assert types(model)[0] == "Linear"


@pytest.mark.parametrize(
    "payload",
    [b"Bogus", b"", b"os.system"],
)
def test_drop_rejects_unknown_types(model: HeadListModel, payload: bytes) -> None:
    mime = QMimeData()
    mime.setData(TYPE_MIME, QByteArray(payload))
    assert not model.canDropMimeData(mime, Qt.DropAction.CopyAction, 0, 0, QModelIndex())
    assert not model.dropMimeData(mime, Qt.DropAction.CopyAction, 0, 0, QModelIndex())
    assert model.stack.count() == 0


def test_drop_rejects_rows_of_another_model(model: HeadListModel) -> None:
    mime = QMimeData()
    mime.setData(ROWS_MIME, QByteArray(json.dumps({"model": 1, "rows": [0]}).encode()))
    assert not model.dropMimeData(mime, Qt.DropAction.MoveAction, 3, 0, QModelIndex())
    mime.setData(ROWS_MIME, QByteArray(b"{not json"))
    assert not model.dropMimeData(mime, Qt.DropAction.MoveAction, 3, 0, QModelIndex())


def test_palette_lists_every_type_and_drags_its_name(qtbot: QtBot) -> None:
    pal = PaletteView()
    qtbot.addWidget(pal)
    for name in LAYER_TYPES:
        item = pal.item_for(name)
        mime = pal.mimeData([item])
        assert bytes(mime.data(TYPE_MIME).data()).decode() == name
    with qtbot.waitSignal(pal.layerRequested) as sig:
        pal.itemActivated.emit(pal.item_for("GELU"), 0)
    assert sig.args == ["GELU"]


def test_head_view_delete_key_and_context_menu(qtbot: QtBot, model: HeadListModel) -> None:
    view = HeadView(model)
    qtbot.addWidget(view)
    view.show()
    view.select_row(4)
    view.list.setFocus()
    qtbot.waitUntil(view.list.hasFocus)
    qtbot.keyClick(view.list, Qt.Key.Key_Delete)
    assert model.rowCount() == 8 and model.stack.undoText() == "Remove Dropout"
    menu = view.build_context_menu(model.index(2))
    texts = [a.text() for a in menu.actions()]
    assert {"&Delete Layer", "D&uplicate Layer", "&Replace With", "Make Chain &Consistent"} <= set(texts)
    replace = next(a for a in menu.actions() if a.text() == "&Replace With").menu()
    assert isinstance(replace, QMenu)
    next(a for a in replace.actions() if a.text() == "Conv2d").trigger()
    assert types(model)[2] == "Conv2d"
    # "Make chain consistent" fixes in_features after the head changed upstream
    model.push_set_head(preset("fc"), "fc")
    model.push_update(0, output_size=1)  # pool to 1×1: Linear(25088→…) no longer matches
    assert not model.report.ok and "in_features=512" in model.report.issue.fix  # type: ignore[union-attr]
    view.fix_action.trigger()
    assert model.report.ok and model.stack.undoText() == "Make chain consistent"
    assert "Cannot run" not in view.summary.text()


def test_property_panel_validates_inline_and_applies_once(qtbot: QtBot, model: HeadListModel) -> None:
    panel = PropertyPanel(model)
    qtbot.addWidget(panel)
    panel.show()
    panel.set_row(2)  # Linear(25088→4096)
    edit = panel.editors["out_features"]
    assert isinstance(edit, QLineEdit) and edit.text() == "4096"
    edit.setFocus()
    edit.selectAll()
    qtbot.keyClicks(edit, "-5")
    assert panel.is_invalid("out_features") and "≥ 1" in panel.errors["out_features"].text()
    qtbot.keyClick(edit, Qt.Key.Key_Return)
    assert model.stack.count() == 0  # not applied
    assert edit.text() == "-5"  # nothing the user typed is lost
    edit.selectAll()
    qtbot.keyClicks(edit, "2048")
    assert not panel.is_invalid("out_features")
    qtbot.keyClick(edit, Qt.Key.Key_Return)
    assert model.doc.spec.layers[2].get("out_features") == 2048
    assert model.stack.count() == 1 and model.stack.undoText() == "Set out_features=2048 of Linear"
    model.stack.undo()
    assert edit.text() == "4096"  # the panel follows the document
    # booleans apply at once
    panel.set_row(3)
    box = panel.editors["inplace"]
    box.setChecked(False)  # type: ignore[attr-defined]
    assert model.doc.spec.layers[3].get("inplace") is False


def test_parse_value_sizes() -> None:
    spec = LAYER_TYPES["Conv2d"].spec("kernel_size")
    assert parse_value(spec, "7") == 7
    assert parse_value(spec, "7×5") == [7, 5]
    assert parse_value(spec, "[3, 3]") == [3, 3]
    with pytest.raises(ValueError):
        parse_value(spec, "seven")
    assert parse_value(LAYER_TYPES["Conv2d"].spec("padding"), "same") == "same"
    assert parse_value(LAYER_TYPES["MaxPool2d"].spec("stride"), "") is None
