"""The layer palette: supported layer types grouped by category; drag one into the head (or double-click)."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QByteArray, QMimeData, Qt, Signal
from PySide6.QtWidgets import QAbstractItemView, QTreeWidget, QTreeWidgetItem, QWidget

from vggexplorer.core.model.layers import LAYER_TYPES
from vggexplorer.qt.head.head_model import TYPE_MIME

CATEGORY_ORDER = ("Linear / Conv", "Pooling", "Activation", "Regularisation", "Normalisation", "Shape")
TypeRole = Qt.ItemDataRole.UserRole + 1


def grouped_types() -> list[tuple[str, list[str]]]:
    """``[(category, [type names])]`` in display order (unknown categories last, alphabetical)."""
    groups: dict[str, list[str]] = {}
    for lt in LAYER_TYPES.values():
        groups.setdefault(lt.category, []).append(lt.name)
    order = [c for c in CATEGORY_ORDER if c in groups] + sorted(c for c in groups if c not in CATEGORY_ORDER)
    return [(c, sorted(groups[c])) for c in order]


class PaletteView(QTreeWidget):
    """Drag source for layer types. ``layerRequested(type)`` on double-click / Enter."""

    layerRequested = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("palette")
        self.setHeaderHidden(True)
        self.setRootIsDecorated(True)
        self.setIndentation(12)
        self.setUniformRowHeights(True)
        self.setDragEnabled(True)
        self.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        self.setDefaultDropAction(Qt.DropAction.CopyAction)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self._items: dict[str, QTreeWidgetItem] = {}
        for category, names in grouped_types():
            top = QTreeWidgetItem([category])
            top.setFlags(Qt.ItemFlag.ItemIsEnabled)
            font = top.font(0)
            font.setBold(True)
            top.setFont(0, font)
            for name in names:
                lt = LAYER_TYPES[name]
                item = QTreeWidgetItem([name])
                item.setData(0, TypeRole, name)
                item.setFlags(
                    Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsDragEnabled
                )
                tip = lt.help or f"torch.nn.{name}"
                params = ", ".join(p.name for p in lt.params) or "no parameters"
                item.setToolTip(
                    0, f"<b>{name}</b><br>{tip}<br><i>{params}</i><br>Drag into the head to insert."
                )
                top.addChild(item)
                self._items[name] = item
            self.addTopLevelItem(top)
        self.expandAll()
        self.itemActivated.connect(self._on_activated)

    def item_for(self, type_name: str) -> QTreeWidgetItem:
        return self._items[type_name]

    def _on_activated(self, item: QTreeWidgetItem, column: int) -> None:
        name = item.data(0, TypeRole)
        if isinstance(name, str):
            self.layerRequested.emit(name)

    def mimeTypes(self) -> list[str]:
        return [TYPE_MIME]

    def mimeData(self, items: Sequence[QTreeWidgetItem]) -> QMimeData:
        mime = QMimeData()
        names = [n for n in (it.data(0, TypeRole) for it in items) if isinstance(n, str)]
        if names:
            mime.setData(TYPE_MIME, QByteArray(names[0].encode()))
            mime.setText(names[0])
        return mime

    def supportedDropActions(self) -> Qt.DropAction:
        return Qt.DropAction.CopyAction
