"""The Qt list model over a ``HeadDocument``: a thin bridge, never a second source of truth.

Document edits arrive as ``(edit, old, new)`` events and map to ``beginInsertRows``/``beginRemoveRows``/
``beginMoveRows``/``dataChanged``/``beginResetModel``. Every change the user makes (drops included) goes
through ``push_*`` methods that push one ``QUndoCommand``; ``dropMimeData`` never mutates directly.

Shapes are re-inferred after every edit (pure arithmetic, ``check_meta=False``: no torch on the GUI
thread) for the current batch and input size; each row exposes its output shape, parameter count and —
for the first layer that cannot run — the message and its fix.
"""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtCore import (
    QAbstractListModel,
    QByteArray,
    QMimeData,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
    Signal,
)
from PySide6.QtGui import QBrush, QColor, QUndoStack

from vggexplorer.core.base.errors import HeadError
from vggexplorer.core.model.head import Edit, HeadDocument, HeadSpec, LayerSpec, default_layer
from vggexplorer.core.model.layers import LAYER_TYPES
from vggexplorer.core.model.shapes import (
    LayerShape,
    ShapeIssue,
    ShapeReport,
    fix_chain,
    fmt_shape,
    infer_shapes,
)
from vggexplorer.qt.head.undo import InsertLayer, MoveLayer, RemoveLayer, ReplaceLayer, SetHead, UpdateParams

#: Rows of this head being dragged (JSON: ``{"model": id, "rows": [..]}``).
ROWS_MIME = "application/x-vggexplorer-head-rows"
#: A layer type dragged from the palette (UTF-8 class name, e.g. ``Conv2d``).
TYPE_MIME = "application/x-vggexplorer-layer-type"

LayerRole = Qt.ItemDataRole.UserRole + 1  # LayerSpec
ShapeRole = Qt.ItemDataRole.UserRole + 2  # LayerShape | None (None when the layer is not reached)
IssueRole = Qt.ItemDataRole.UserRole + 3  # ShapeIssue | None (only on the first layer that cannot run)
StateRole = Qt.ItemDataRole.UserRole + 4  # "ok" | "error" | "unreached"
OutputShapeRole = Qt.ItemDataRole.UserRole + 5  # "N×4096" or ""
ParamsRole = Qt.ItemDataRole.UserRole + 6  # int
ModuleNameRole = Qt.ItemDataRole.UserRole + 7  # "classifier.0" / "" when not reached


def fmt_params(n: int) -> str:
    """``102764544`` → ``102.8 M``; ``0`` → ``—``."""
    if n == 0:
        return "—"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return str(n)


class HeadListModel(QAbstractListModel):
    """Rows = head layers (the backbone is not a row; views show it as a fixed block above)."""

    #: The shape report was recomputed (after an edit or a change of batch/input size).
    reportChanged = Signal(object)

    def __init__(
        self,
        doc: HeadDocument,
        stack: QUndoStack,
        *,
        batch: int = 1,
        input_hw: tuple[int, int] = (224, 224),
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.doc = doc
        self.stack = stack
        self._spec: HeadSpec = doc.spec
        self._batch = batch
        self._input_hw = input_hw
        self._report = self._infer(self._spec)
        doc.subscribe(self._on_edit)

    def detach(self) -> None:
        """Stop listening to the document (call before dropping the model)."""
        self.doc.unsubscribe(self._on_edit)

    # --- shapes ---
    @property
    def report(self) -> ShapeReport:
        return self._report

    @property
    def spec(self) -> HeadSpec:
        return self._spec

    @property
    def input_hw(self) -> tuple[int, int]:
        return self._input_hw

    @property
    def batch(self) -> int:
        return self._batch

    def set_context(self, batch: int, input_hw: tuple[int, int]) -> None:
        """Batch and input size the shapes are inferred for (from the run controls)."""
        if (batch, input_hw) == (self._batch, self._input_hw):
            return
        self._batch, self._input_hw = batch, input_hw
        self._refresh_report()

    def _infer(self, spec: HeadSpec) -> ShapeReport:
        return infer_shapes(spec, self._batch, self._input_hw, check_meta=False)

    def _refresh_report(self) -> None:
        self._report = self._infer(self._spec)
        if self.rowCount():
            self.dataChanged.emit(self.index(0), self.index(self.rowCount() - 1))
        self.reportChanged.emit(self._report)

    def row_shape(self, row: int) -> LayerShape | None:
        layers = self._report.layers
        return layers[row] if 0 <= row < len(layers) else None

    def row_issue(self, row: int) -> ShapeIssue | None:
        issue = self._report.issue
        return issue if issue is not None and issue.index == row else None

    def row_state(self, row: int) -> str:
        if row < len(self._report.layers):
            return "ok"
        return "error" if self.row_issue(row) is not None else "unreached"

    # --- document events → Qt model signals ---
    def _on_edit(self, edit: Edit, old: HeadSpec, new: HeadSpec) -> None:
        if edit.kind == "insert":
            self.beginInsertRows(QModelIndex(), edit.index, edit.index)
            self._spec = new
            self.endInsertRows()
        elif edit.kind == "remove":
            self.beginRemoveRows(QModelIndex(), edit.index, edit.index)
            self._spec = new
            self.endRemoveRows()
        elif edit.kind == "move" and edit.index != edit.dst:
            # Qt's destination is the row *before which* the moved row lands, in pre-move numbering.
            dest = edit.dst + 1 if edit.dst > edit.index else edit.dst
            ok = self.beginMoveRows(QModelIndex(), edit.index, edit.index, QModelIndex(), dest)
            self._spec = new
            if ok:
                self.endMoveRows()
            else:  # pragma: no cover - beginMoveRows refuses only no-op moves, excluded above
                self.beginResetModel()
                self.endResetModel()
        elif edit.kind in ("replace", "update", "move"):
            self._spec = new
        else:
            self.beginResetModel()
            self._spec = new
            self.endResetModel()
        self._refresh_report()

    # --- read access ---
    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._spec.layers)

    def data(
        self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._spec.layers):
            return None
        row = index.row()
        lay = self._spec.layers[row]
        shape = self.row_shape(row)
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.EditRole):
            return lay.describe()
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(row, lay, shape)
        if role == Qt.ItemDataRole.ForegroundRole:
            state = self.row_state(row)
            if state == "error":
                return QBrush(QColor(170, 20, 20))
            if state == "unreached":
                return QBrush(QColor(130, 130, 130))
            return None
        if role == Qt.ItemDataRole.AccessibleTextRole:
            issue = self.row_issue(row)
            return f"{row} {lay.describe()}" + (f", cannot run: {issue.message}" if issue else "")
        if role == LayerRole:
            return lay
        if role == ShapeRole:
            return shape
        if role == IssueRole:
            return self.row_issue(row)
        if role == StateRole:
            return self.row_state(row)
        if role == OutputShapeRole:
            return fmt_shape(shape.output_shape, True) if shape else ""
        if role == ParamsRole:
            return lay.param_count
        if role == ModuleNameRole:
            return shape.name if shape else ""
        return None

    def _tooltip(self, row: int, lay: LayerSpec, shape: LayerShape | None) -> str:
        lines = [f"<b>{row} · {lay.describe()}</b>"]
        if shape is not None:
            lines.append(f"module: {shape.name}")
            lines.append(
                f"in: {fmt_shape(shape.input_shape, True)} → out: {fmt_shape(shape.output_shape, True)}"
            )
            lines.append(f"parameters: {lay.param_count:,}")
        issue = self.row_issue(row)
        if issue is not None:
            lines.append(f"<span style='color:#a00'>cannot run: {issue.message}</span>")
            if issue.fix:
                lines.append(f"fix: {issue.fix}")
        elif shape is None:
            lines.append("not reached: an earlier layer cannot run")
        return "<br>".join(lines)

    def flags(self, index: QModelIndex | QPersistentModelIndex) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.ItemIsDropEnabled
        return (
            Qt.ItemFlag.ItemIsEnabled
            | Qt.ItemFlag.ItemIsSelectable
            | Qt.ItemFlag.ItemIsDragEnabled
            | Qt.ItemFlag.ItemNeverHasChildren
        )

    # --- drag and drop ---
    def supportedDropActions(self) -> Qt.DropAction:
        return Qt.DropAction.MoveAction | Qt.DropAction.CopyAction

    def supportedDragActions(self) -> Qt.DropAction:
        return Qt.DropAction.MoveAction

    def mimeTypes(self) -> list[str]:
        return [ROWS_MIME, TYPE_MIME]

    def mimeData(self, indexes: list[QModelIndex]) -> QMimeData:  # type: ignore[override]
        rows = sorted({i.row() for i in indexes if i.isValid()})
        mime = QMimeData()
        mime.setData(ROWS_MIME, QByteArray(json.dumps({"model": id(self), "rows": rows}).encode()))
        mime.setText("\n".join(self._spec.layers[r].describe() for r in rows))
        return mime

    def _decode(self, data: QMimeData) -> tuple[str, Any] | None:
        """("move", src_row) or ("insert", type_name), or None for data this model does not take."""
        if data.hasFormat(ROWS_MIME):
            try:
                payload = json.loads(bytes(data.data(ROWS_MIME).data()).decode())
            except (ValueError, UnicodeDecodeError):
                return None
            if not isinstance(payload, dict) or payload.get("model") != id(self):
                return None
            rows = payload.get("rows")
            if not isinstance(rows, list) or len(rows) != 1 or not isinstance(rows[0], int):
                return None
            if not 0 <= rows[0] < len(self._spec.layers):
                return None
            return ("move", rows[0])
        if data.hasFormat(TYPE_MIME):
            name = bytes(data.data(TYPE_MIME).data()).decode("utf-8", "replace").strip()
            return ("insert", name) if name in LAYER_TYPES else None
        return None

    def canDropMimeData(
        self,
        data: QMimeData,
        action: Qt.DropAction,
        row: int,
        column: int,
        parent: QModelIndex | QPersistentModelIndex,
    ) -> bool:
        return self._decode(data) is not None

    def drop_row(self, row: int, parent: QModelIndex | QPersistentModelIndex) -> int:
        """Insertion position (0..n, pre-move numbering) for a drop at ``row`` / on ``parent``."""
        n = len(self._spec.layers)
        if parent.isValid():  # dropped onto an item: insert before it
            return parent.row()
        if row < 0 or row > n:
            return n
        return row

    def dropMimeData(
        self,
        data: QMimeData,
        action: Qt.DropAction,
        row: int,
        column: int,
        parent: QModelIndex | QPersistentModelIndex,
    ) -> bool:
        if action == Qt.DropAction.IgnoreAction:
            return True
        decoded = self._decode(data)
        if decoded is None:
            return False
        pos = self.drop_row(row, parent)
        kind, value = decoded
        try:
            if kind == "move":
                src = int(value)
                dst = pos - 1 if pos > src else pos
                if dst != src:
                    self.push_move(src, dst)
            else:
                self.push_insert(pos, default_layer(str(value)))
        except HeadError:
            return False
        # The edit is done (as an undo command); tell the view not to remove any source rows.
        return True

    # --- edits as undo commands (the only way the GUI changes the head) ---
    def push_insert(self, row: int, lay: LayerSpec) -> None:
        self.doc.spec.insert(row, lay)  # validates (raises HeadError) before anything is pushed
        self.stack.push(InsertLayer(self.doc, row, lay))

    def push_insert_type(self, row: int, type_name: str) -> None:
        self.push_insert(row, default_layer(type_name))

    def push_remove(self, row: int) -> None:
        self.doc.spec.remove(row)
        self.stack.push(RemoveLayer(self.doc, row))

    def push_move(self, src: int, dst: int) -> None:
        self.doc.spec.move(src, dst)
        self.stack.push(MoveLayer(self.doc, src, dst))

    def push_replace(self, row: int, lay: LayerSpec) -> None:
        self.doc.spec.replace(row, lay)
        self.stack.push(ReplaceLayer(self.doc, row, lay))

    def push_replace_type(self, row: int, type_name: str) -> None:
        self.push_replace(row, default_layer(type_name))

    def push_duplicate(self, row: int) -> None:
        self.doc.spec.update(row)  # validates the row (raises HeadError) before anything is pushed
        lay = self.doc.spec.layers[row]
        self.doc.spec.insert(row + 1, lay)
        cmd = InsertLayer(self.doc, row + 1, lay)
        cmd.setText(f"Duplicate {lay.type}")
        self.stack.push(cmd)

    def push_update(self, row: int, **changes: Any) -> None:
        """Raises ``HeadError`` (and pushes nothing) when the row or the new values are invalid."""
        self.doc.spec.update(row, **changes)  # validates the row and the values before anything is pushed
        cmd = UpdateParams(self.doc, row, changes)
        if cmd.new == cmd.old:
            return
        self.stack.push(cmd)

    def push_set_head(self, spec: HeadSpec, text: str) -> None:
        if spec == self.doc.spec:
            return
        self.stack.push(SetHead(self.doc, spec, text))

    def push_make_consistent(self) -> list[str]:
        """``fix_chain`` as one undo step; returns the descriptions of what changed (empty: nothing did)."""
        spec, changes = fix_chain(self.doc.spec, self._input_hw)
        if changes:
            self.stack.push(SetHead(self.doc, spec, "Make chain consistent"))
        return changes
