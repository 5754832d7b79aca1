"""The head editor: the backbone as one collapsed read-only block, then the head's layers.

Each row shows index, layer, output shape and parameter count; the first layer that cannot run is marked
in place with the message and its fix. Drop palette types between rows, drag rows to reorder, Delete /
context menu to remove, duplicate, replace (type picker) or make the chain consistent. All edits go through
the model's ``push_*`` methods (one undo step each).
"""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QPoint, QRect, QSize, Qt, Signal
from PySide6.QtGui import (
    QAction,
    QColor,
    QDropEvent,
    QFont,
    QFontMetrics,
    QKeySequence,
    QPainter,
    QPalette,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QHBoxLayout,
    QLabel,
    QListView,
    QMenu,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QVBoxLayout,
    QWidget,
)

from vggexplorer.core.base.errors import HeadError
from vggexplorer.core.model.backbone import BACKBONES
from vggexplorer.core.model.shapes import ShapeIssue, ShapeReport, fmt_shape
from vggexplorer.qt.head.head_model import (
    HeadListModel,
    IssueRole,
    LayerRole,
    OutputShapeRole,
    ParamsRole,
    StateRole,
    fmt_params,
)
from vggexplorer.qt.head.palette import grouped_types

ERROR_BG = QColor(253, 231, 231)
ERROR_FG = QColor(160, 20, 20)
FIX_FG = QColor(30, 100, 40)
MUTED = QColor(128, 128, 128)
PAD = 6
SHAPE_W = 118
PARAMS_W = 70
INDEX_W = 24


class LayerDelegate(QStyledItemDelegate):
    """Paints ``idx  layer ........ N×C×H×W   params`` and, for an error row, the message and its fix."""

    def _issue_text(self, issue: ShapeIssue) -> tuple[str, str]:
        return f"⚠ {issue.message}", (f"fix: {issue.fix}" if issue.fix else "")

    def _text_width(self, option: QStyleOptionViewItem) -> int:
        return max(option.rect.width() - INDEX_W - 2 * PAD, 80)

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> QSize:
        fm = QFontMetrics(option.font)
        h = fm.height() + 2 * PAD
        issue = index.data(IssueRole)
        if isinstance(issue, ShapeIssue):
            w = self._text_width(option)
            view = option.widget
            if isinstance(view, QAbstractItemView):
                w = max(view.viewport().width() - INDEX_W - 2 * PAD, 80)
            for text in self._issue_text(issue):
                if text:
                    r = fm.boundingRect(QRect(0, 0, w, 10_000), int(Qt.TextFlag.TextWordWrap), text)
                    h += r.height() + 2
            h += PAD // 2
        return QSize(200, h)

    def paint(
        self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> None:
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        rect: QRect = opt.rect
        widget = opt.widget
        style = widget.style() if widget is not None else None
        state = index.data(StateRole)
        selected = bool(opt.state & QStyle.StateFlag.State_Selected)
        painter.save()
        if state == "error" and not selected:
            painter.fillRect(rect, ERROR_BG)
        opt.text = ""
        if style is not None:
            style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, widget)
        pal: QPalette = opt.palette
        fg = pal.color(QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Text)
        fm = QFontMetrics(opt.font)
        line_h = fm.height()
        top = rect.top() + PAD
        x = rect.left() + PAD
        painter.setPen(MUTED if not selected else fg)
        painter.drawText(QRect(x, top, INDEX_W, line_h), int(Qt.AlignmentFlag.AlignLeft), str(index.row()))
        x += INDEX_W
        right = rect.right() - PAD
        params_rect = QRect(right - PARAMS_W, top, PARAMS_W, line_h)
        shape_rect = QRect(params_rect.left() - SHAPE_W - PAD, top, SHAPE_W, line_h)
        name_rect = QRect(x, top, max(shape_rect.left() - x - PAD, 20), line_h)
        color = fg
        if state == "error" and not selected:
            color = ERROR_FG
        elif state == "unreached" and not selected:
            color = MUTED
        painter.setPen(color)
        font = QFont(opt.font)
        font.setBold(state == "error")
        painter.setFont(font)
        text = str(index.data(Qt.ItemDataRole.DisplayRole) or "")
        painter.drawText(
            name_rect,
            int(Qt.AlignmentFlag.AlignLeft),
            fm.elidedText(text, Qt.TextElideMode.ElideRight, name_rect.width()),
        )
        painter.setFont(opt.font)
        shape = str(index.data(OutputShapeRole) or "")
        painter.setPen(fg if shape and not (state == "unreached" and not selected) else MUTED)
        painter.drawText(shape_rect, int(Qt.AlignmentFlag.AlignRight), shape or "—")
        params = index.data(ParamsRole)
        painter.setPen(fg if params else MUTED)
        painter.drawText(params_rect, int(Qt.AlignmentFlag.AlignRight), fmt_params(int(params or 0)))
        issue = index.data(IssueRole)
        if isinstance(issue, ShapeIssue):
            w = max(right - x, 80)
            y = top + line_h + 2
            for i, line in enumerate(self._issue_text(issue)):
                if not line:
                    continue
                r = fm.boundingRect(QRect(x, y, w, 10_000), int(Qt.TextFlag.TextWordWrap), line)
                painter.setPen(fg if selected else (ERROR_FG if i == 0 else FIX_FG))
                painter.drawText(QRect(x, y, w, r.height()), int(Qt.TextFlag.TextWordWrap), line)
                y += r.height() + 2
        painter.restore()


class HeadListView(QListView):
    """The list of head layers: a drop target for palette types and for its own rows (reorder)."""

    removeRequested = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("headList")
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setDragEnabled(True)
        self.setAcceptDrops(True)
        self.setDropIndicatorShown(True)
        self.setDragDropMode(QAbstractItemView.DragDropMode.DragDrop)
        self.setDefaultDropAction(Qt.DropAction.MoveAction)
        self.setItemDelegate(LayerDelegate(self))
        self.setUniformItemSizes(False)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

    def drop_position(self, pos: QPoint) -> int:
        """Insertion row (0..n) for a drop at viewport position ``pos``: above/below the row's middle."""
        index = self.indexAt(pos)
        model = self.model()
        n = model.rowCount() if model is not None else 0
        if not index.isValid():
            return n
        rect = self.visualRect(index)
        return index.row() + (1 if pos.y() >= rect.center().y() else 0)

    def dropEvent(self, event: QDropEvent) -> None:
        """Hand the drop to the model (which pushes one undo command); never let Qt remove source rows."""
        model = self.model()
        if not isinstance(model, HeadListModel):
            event.ignore()
            return
        row = self.drop_position(event.position().toPoint())
        ok = model.dropMimeData(event.mimeData(), Qt.DropAction.CopyAction, row, 0, QModelIndex())
        if ok:
            # Copy, not Move: the source view must not delete anything; the model already did the edit.
            event.setDropAction(Qt.DropAction.CopyAction)
            event.accept()
        else:
            event.ignore()
        self.setState(QAbstractItemView.State.NoState)
        self.viewport().update()

    def resizeEvent(self, event: object) -> None:  # error rows wrap: re-measure on width changes
        super().resizeEvent(event)  # type: ignore[arg-type]
        self.scheduleDelayedItemsLayout()


class HeadView(QWidget):
    """Backbone block + layer list + summary line; owns the edit actions (Delete, Duplicate, ...)."""

    #: Selected head row (-1 for none).
    selectionChanged = Signal(int)
    #: A user-facing note (e.g. what "Make chain consistent" changed), for the status bar.
    message = Signal(str)

    def __init__(self, model: HeadListModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)

        self.backbone_block = QFrame()
        self.backbone_block.setObjectName("backboneBlock")
        self.backbone_block.setFrameShape(QFrame.Shape.StyledPanel)
        self.backbone_block.setStyleSheet("#backboneBlock { background: palette(alternate-base); }")
        bl = QHBoxLayout(self.backbone_block)
        bl.setContentsMargins(PAD, 4, PAD, 4)
        self.backbone_label = QLabel()
        self.backbone_label.setObjectName("backboneLabel")
        self.backbone_shape = QLabel()
        self.backbone_shape.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.backbone_params = QLabel()
        self.backbone_params.setMinimumWidth(PARAMS_W)
        self.backbone_params.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        bl.addWidget(self.backbone_label, 1)
        bl.addWidget(self.backbone_shape)
        bl.addWidget(self.backbone_params)
        layout.addWidget(self.backbone_block)

        self.list = HeadListView()
        self.list.setModel(model)
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._context_menu)
        layout.addWidget(self.list, 1)

        self.summary = QLabel()
        self.summary.setObjectName("headSummary")
        self.summary.setWordWrap(True)
        layout.addWidget(self.summary)

        # Edit actions: active while focus is in the list (the main window shows them in the Edit menu).
        self.delete_action = QAction("&Delete Layer", self)
        self.delete_action.setShortcut(QKeySequence(QKeySequence.StandardKey.Delete))
        self.delete_action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.delete_action.triggered.connect(self.remove_selected)
        self.duplicate_action = QAction("D&uplicate Layer", self)
        self.duplicate_action.setShortcut(QKeySequence("Ctrl+D"))
        self.duplicate_action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.duplicate_action.triggered.connect(self.duplicate_selected)
        self.fix_action = QAction("Make Chain &Consistent", self)
        self.fix_action.setStatusTip(
            "Set in_features / in_channels / num_features to what arrives at each layer"
        )
        self.fix_action.triggered.connect(self.make_consistent)
        self.list.addAction(self.delete_action)
        self.list.addAction(self.duplicate_action)

        sel = self.list.selectionModel()
        sel.currentChanged.connect(self._on_current)
        model.reportChanged.connect(self._on_report)
        model.rowsInserted.connect(self._on_rows_inserted)
        model.rowsMoved.connect(self._on_rows_moved)
        self._on_report(model.report)
        self._update_actions()

    # --- selection ---
    def selected_row(self) -> int:
        idx = self.list.currentIndex()
        return idx.row() if idx.isValid() and self.list.selectionModel().isSelected(idx) else -1

    def select_row(self, row: int) -> None:
        if 0 <= row < self.model.rowCount():
            self.list.setCurrentIndex(self.model.index(row))
        else:
            self.list.clearSelection()
            self.list.setCurrentIndex(QModelIndex())

    def _on_current(self, cur: QModelIndex, prev: QModelIndex) -> None:
        self._update_actions()
        self.selectionChanged.emit(cur.row() if cur.isValid() else -1)

    def _on_rows_inserted(self, parent: QModelIndex, first: int, last: int) -> None:
        self.select_row(first)

    def _on_rows_moved(self, parent: QModelIndex, start: int, end: int, dest: QModelIndex, row: int) -> None:
        self.select_row(row - 1 if row > start else row)

    def _update_actions(self) -> None:
        has = self.selected_row() >= 0
        self.delete_action.setEnabled(has)
        self.duplicate_action.setEnabled(has)

    # --- report → backbone block + summary ---
    def _on_report(self, report: ShapeReport) -> None:
        bb = BACKBONES[report.spec.backbone]
        self.backbone_label.setText(f"▸ <b>features</b> ({bb.label()}, {bb.n_pools} max-pools) · read-only")
        self.backbone_block.setToolTip(
            "The backbone: "
            + ", ".join(str(c) for c in bb.layers)
            + " (numbers: 3×3 conv channels, M: max-pool)"
        )
        if report.backbone is not None:
            self.backbone_shape.setText(fmt_shape(report.backbone.output_shape, True))
        else:
            self.backbone_shape.setText("—")
        self.backbone_params.setText(fmt_params(bb.param_count))
        issue = report.issue
        if issue is not None and issue.index < 0:
            self.backbone_block.setStyleSheet("#backboneBlock { background: #fde7e7; }")
            self.backbone_block.setToolTip(str(issue))
        else:
            self.backbone_block.setStyleSheet("#backboneBlock { background: palette(alternate-base); }")
        if issue is None:
            out = report.output_shape
            self.summary.setText(
                f"Head: {len(report.spec)} layers · {report.head_params:,} parameters · output "
                f"{fmt_shape(out, True) if out else '—'} · model {report.total_params:,} parameters"
            )
            self.summary.setStyleSheet("")
        else:
            self.summary.setText(f"<b>Cannot run</b> — {issue}")
            self.summary.setStyleSheet(f"color: {ERROR_FG.name()};")
        self.list.scheduleDelayedItemsLayout()

    # --- edits ---
    def remove_selected(self) -> None:
        row = self.selected_row()
        if row < 0:
            return
        self.model.push_remove(row)
        self.select_row(min(row, self.model.rowCount() - 1))

    def duplicate_selected(self) -> None:
        row = self.selected_row()
        if row >= 0:
            self.model.push_duplicate(row)

    def insert_type(self, type_name: str, row: int | None = None) -> None:
        """Insert a palette type after the selection (or at the end)."""
        if row is None:
            sel = self.selected_row()
            row = sel + 1 if sel >= 0 else self.model.rowCount()
        try:
            self.model.push_insert_type(row, type_name)
        except HeadError as e:
            self.message.emit(str(e))

    def make_consistent(self) -> None:
        changes = self.model.push_make_consistent()
        self.message.emit(
            "Made chain consistent: " + "; ".join(changes) if changes else "Chain already consistent"
        )

    def _context_menu(self, pos: QPoint) -> None:
        menu = self.build_context_menu(self.list.indexAt(pos))
        menu.exec(self.list.viewport().mapToGlobal(pos))

    def build_context_menu(self, index: QModelIndex) -> QMenu:
        menu = QMenu(self)
        row = index.row() if index.isValid() else -1
        if row >= 0:
            self.select_row(row)
            menu.addAction(self.delete_action)
            menu.addAction(self.duplicate_action)
            replace = menu.addMenu("&Replace With")
            current = self.model.spec.layers[row].type
            for category, names in grouped_types():
                replace.addSection(category)
                for name in names:
                    act = replace.addAction(name)
                    act.setEnabled(name != current)
                    act.triggered.connect(lambda _=False, n=name, r=row: self.model.push_replace_type(r, n))
        insert = menu.addMenu("&Insert " + ("After" if row >= 0 else "At End"))
        at = row + 1 if row >= 0 else self.model.rowCount()
        for category, names in grouped_types():
            insert.addSection(category)
            for name in names:
                act = insert.addAction(name)
                act.triggered.connect(lambda _=False, n=name, r=at: self.insert_type(n, r))
        menu.addSeparator()
        menu.addAction(self.fix_action)
        return menu

    def current_layer_type(self) -> str | None:
        row = self.selected_row()
        if row < 0:
            return None
        lay = self.model.index(row).data(LayerRole)
        return str(lay.type) if lay is not None else None
