"""The per-layer table of a run (``RunResult.layers``): raw bytes sort; cells show human units."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QLabel, QTableView, QVBoxLayout, QWidget

from vggexplorer.core.base.units import fmt_bytes
from vggexplorer.core.results.result import LayerStats, RunResult

SortRole = Qt.ItemDataRole.UserRole + 1

Column = tuple[
    str, str, Callable[[LayerStats], Any], str
]  # header, tooltip, value, kind ("bytes"|"s"|"text")
COLUMNS: tuple[Column, ...] = (
    ("Layer", "module path in the model", lambda r: r.name, "text"),
    ("Type", "torch.nn class", lambda r: r.type, "text"),
    ("Output shape", "output of the layer's forward", lambda r: "×".join(map(str, r.output_shape)), "text"),
    ("Output", "bytes of the output tensor", lambda r: r.output_bytes, "bytes"),
    ("Saved for bwd", "bytes this layer's forward left alive for backward", lambda r: r.saved_bytes, "bytes"),
    ("Params", "parameter bytes", lambda r: r.param_bytes, "bytes"),
    ("Grads", "gradient bytes of its parameters", lambda r: r.grad_bytes, "bytes"),
    ("Peak fwd", "tensor-level peak during this layer's forward", lambda r: r.peak_forward_bytes, "bytes"),
    ("Peak bwd", "tensor-level peak during this layer's backward", lambda r: r.peak_backward_bytes, "bytes"),
    (
        "Peak fwd (alloc)",
        "allocator-level peak during this layer's forward",
        lambda r: r.peak_forward_allocator_bytes,
        "bytes",
    ),
    (
        "Peak bwd (alloc)",
        "allocator-level peak during this layer's backward",
        lambda r: r.peak_backward_allocator_bytes,
        "bytes",
    ),
    ("Fwd ms", "forward time", lambda r: r.forward_s, "s"),
    ("Bwd ms", "backward time", lambda r: r.backward_s, "s"),
)
HEAD_BG = QColor(236, 244, 255)


class LayerTableModel(QAbstractTableModel):
    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: list[LayerStats] = []

    def set_layers(self, rows: Sequence[LayerStats]) -> None:
        self.beginResetModel()
        self._rows = list(rows)
        self.endResetModel()

    def layers(self) -> list[LayerStats]:
        return list(self._rows)

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation == Qt.Orientation.Horizontal and 0 <= section < len(COLUMNS):
            if role == Qt.ItemDataRole.DisplayRole:
                return COLUMNS[section][0]
            if role == Qt.ItemDataRole.ToolTipRole:
                return COLUMNS[section][1]
        return None

    def data(
        self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        row = self._rows[index.row()]
        _, _, get, kind = COLUMNS[index.column()]
        value = get(row)
        if role == SortRole:
            return value
        if role == Qt.ItemDataRole.DisplayRole:
            if kind == "bytes":
                return fmt_bytes(value) if value else "—"
            if kind == "s":
                return f"{value * 1000:.1f}" if value else "—"
            return str(value)
        if role == Qt.ItemDataRole.ToolTipRole and kind == "bytes":
            return f"{int(value):,} B"
        if role == Qt.ItemDataRole.TextAlignmentRole and kind != "text":
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.BackgroundRole and row.head_index >= 0:
            return QBrush(HEAD_BG)
        return None


class LayerTable(QWidget):
    """Table view + caption ("run: fc · b8 · 224 · cpu — head rows shaded")."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = LayerTableModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SortRole)
        self.caption = QLabel("No run yet: per-layer numbers appear here after a run.")
        self.caption.setObjectName("layerTableCaption")
        self.view = QTableView()
        self.view.setObjectName("layerTable")
        self.view.setModel(self.proxy)
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(-1, Qt.SortOrder.AscendingOrder)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setAlternatingRowColors(True)
        self.view.verticalHeader().hide()
        self.view.verticalHeader().setDefaultSectionSize(22)
        self.view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.view.horizontalHeader().setStretchLastSection(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.caption)
        layout.addWidget(self.view, 1)

    def set_result(self, result: RunResult | None, label: str = "") -> None:
        self.model.set_layers(result.layers if result is not None else [])
        if result is None:
            self.caption.setText("No run yet: per-layer numbers appear here after a run.")
        else:
            self.caption.setText(
                f"Per-layer memory of <b>{label or result.name}</b> — head layers shaded blue; "
                "sort by clicking a column."
            )
