"""The runs list (every finished run; names editable; tick two or more to overlay them) and the compare
panel (difference tables by category and by layer, and the plain-language explanation from
``core/compare.py``)."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QSignalBlocker, Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from vggexplorer.core.base.units import fmt_bytes, fmt_signed_bytes
from vggexplorer.core.results.compare import Comparison, Diff, compare, explain
from vggexplorer.core.results.result import RunResult

RunRole = Qt.ItemDataRole.UserRole + 1
MORE = QColor(176, 40, 30)
LESS = QColor(30, 120, 50)

STATUS_MARK = {"ok": "", "cancelled": " (cancelled)", "oom": " (out of memory)", "error": " (error)"}


class RunsPanel(QWidget):
    """A list of runs. Checked runs are overlaid in the plot; the current one fills the layer table."""

    checkedChanged = Signal(list)  # list[RunResult], in list order
    currentChanged = Signal(object)  # RunResult | None
    openRequested = Signal()
    saveRequested = Signal()
    compareRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.list = QListWidget()
        self.list.setObjectName("runsList")
        self.list.setEditTriggers(
            QAbstractItemView.EditTrigger.DoubleClicked
            | QAbstractItemView.EditTrigger.EditKeyPressed
            | QAbstractItemView.EditTrigger.SelectedClicked
        )
        self.list.setToolTip("Tick runs to overlay them; double-click a name to rename it")
        self.open_button = QPushButton("Open…")
        self.save_button = QPushButton("Save…")
        self.remove_button = QPushButton("Remove")
        self.compare_button = QPushButton("Compare ticked")
        self.compare_button.setObjectName("compareButton")
        buttons = QHBoxLayout()
        for b in (self.open_button, self.save_button, self.remove_button, self.compare_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(2)
        layout.addWidget(self.list, 1)
        layout.addLayout(buttons)
        self.open_button.clicked.connect(self.openRequested)
        self.save_button.clicked.connect(self.saveRequested)
        self.remove_button.clicked.connect(self.remove_current)
        self.compare_button.clicked.connect(self.compareRequested)
        self.list.itemChanged.connect(self._on_item_changed)
        self.list.currentItemChanged.connect(self._on_current_item)
        self._update_buttons()

    # --- contents ------------------------------------------------------------------------------------------
    def add(self, result: RunResult, *, checked: bool = True, make_current: bool = True) -> QListWidgetItem:
        if not result.name:
            result.name = f"run {self.list.count() + 1}"
        item = QListWidgetItem()
        item.setFlags(
            Qt.ItemFlag.ItemIsEnabled
            | Qt.ItemFlag.ItemIsSelectable
            | Qt.ItemFlag.ItemIsEditable
            | Qt.ItemFlag.ItemIsUserCheckable
        )
        item.setData(RunRole, result)
        with QSignalBlocker(self.list):
            item.setText(result.name)
            item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
            self.list.addItem(item)
        self._decorate(item, result)
        if make_current:
            self.list.setCurrentItem(item)
        self._update_buttons()
        self.checkedChanged.emit(self.checked())
        return item

    def _decorate(self, item: QListWidgetItem, result: RunResult) -> None:
        tip = [f"<b>{result.name}</b>"]
        if result.predicted:
            tip.append("<i>predicted (allocator model), not measured</i>")
        s = result.summary
        tip.append(f"peak allocator {fmt_bytes(s.peak_allocated_bytes)}")
        tip.append(f"peak tensors {fmt_bytes(s.peak_tensor_bytes)}")
        if s.peak_reserved_bytes is not None:
            tip.append(f"peak reserved {fmt_bytes(s.peak_reserved_bytes)}")
        if result.fault is not None:
            f = result.fault
            tip.append(f"<span style='color:#a01414'>{f.kind}: {f.message} ({f.phase} · {f.layer})</span>")
        with QSignalBlocker(self.list):
            item.setToolTip("<br>".join(tip))
            if result.status != "ok":
                item.setForeground(QBrush(MORE))

    def runs(self) -> list[RunResult]:
        return [self.list.item(i).data(RunRole) for i in range(self.list.count())]

    def checked(self) -> list[RunResult]:
        out = []
        for i in range(self.list.count()):
            item = self.list.item(i)
            if item.checkState() == Qt.CheckState.Checked:
                out.append(item.data(RunRole))
        return out

    def current(self) -> RunResult | None:
        item = self.list.currentItem()
        return item.data(RunRole) if item is not None else None

    def set_checked(self, results: Sequence[RunResult]) -> None:
        ids = {id(r) for r in results}
        with QSignalBlocker(self.list):
            for i in range(self.list.count()):
                item = self.list.item(i)
                on = id(item.data(RunRole)) in ids
                item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
        self._update_buttons()
        self.checkedChanged.emit(self.checked())

    def remove_current(self) -> None:
        row = self.list.currentRow()
        if row < 0:
            return
        self.list.takeItem(row)
        self._update_buttons()
        self.checkedChanged.emit(self.checked())
        self.currentChanged.emit(self.current())

    def _on_item_changed(self, item: QListWidgetItem) -> None:
        result: RunResult = item.data(RunRole)
        name = item.text().strip()
        if name and name != result.name:
            result.name = name
            self._decorate(item, result)
        elif not name:
            with QSignalBlocker(self.list):
                item.setText(result.name)
        self._update_buttons()
        self.checkedChanged.emit(self.checked())

    def _on_current_item(self, *_: object) -> None:
        self.currentChanged.emit(self.current())

    def _update_buttons(self) -> None:
        has = self.list.count() > 0
        self.save_button.setEnabled(has)
        self.remove_button.setEnabled(has)
        self.compare_button.setEnabled(len(self.checked()) >= 2)


class ComparePanel(QWidget):
    """B vs A: the explanation, then the differences by category (at each run's peak) and by layer."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._runs: list[RunResult] = []
        self.comparison: Comparison | None = None
        self.combo_a = QComboBox()
        self.combo_a.setObjectName("compareA")
        self.combo_b = QComboBox()
        self.combo_b.setObjectName("compareB")
        for c in (self.combo_a, self.combo_b):
            c.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.swap = QPushButton("⇄ Swap")
        self.show_equal = QCheckBox("show equal layer rows")
        top = QHBoxLayout()
        top.addWidget(QLabel("A"))
        top.addWidget(self.combo_a)
        top.addWidget(QLabel("B"))
        top.addWidget(self.combo_b)
        top.addWidget(self.swap)
        top.addStretch(1)
        top.addWidget(self.show_equal)
        self.explanation = QTextBrowser()
        self.explanation.setObjectName("compareExplanation")
        self.explanation.setOpenLinks(False)
        self.categories = self._table(("Category / metric", "A", "B", "B − A"))
        self.categories.setObjectName("compareCategories")
        self.layers = self._table(("Layer", "Metric", "A", "B", "B − A"))
        self.layers.setObjectName("compareLayers")
        tables = QSplitter(Qt.Orientation.Horizontal)
        tables.addWidget(self._titled("By category — at each run's peak", self.categories))
        tables.addWidget(self._titled("By layer", self.layers))
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.explanation)
        split.addWidget(tables)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 1)
        split.setSizes([200, 200])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(top)
        layout.addWidget(split, 1)
        self.combo_a.currentIndexChanged.connect(self.refresh)
        self.combo_b.currentIndexChanged.connect(self.refresh)
        self.show_equal.toggled.connect(self.refresh)
        self.swap.clicked.connect(self._swap)
        self.refresh()

    @staticmethod
    def _titled(title: str, w: QWidget) -> QWidget:
        host = QWidget()
        lay = QVBoxLayout(host)
        lay.setContentsMargins(0, 0, 0, 0)
        lab = QLabel(f"<b>{title}</b>")
        lay.addWidget(lab)
        lay.addWidget(w, 1)
        return host

    @staticmethod
    def _table(headers: tuple[str, ...]) -> QTableWidget:
        t = QTableWidget(0, len(headers))
        t.setHorizontalHeaderLabels(list(headers))
        t.verticalHeader().hide()
        t.verticalHeader().setDefaultSectionSize(22)
        t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        t.setAlternatingRowColors(True)
        t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        t.horizontalHeader().setStretchLastSection(True)
        return t

    def set_runs(
        self, runs: Sequence[RunResult], a: RunResult | None = None, b: RunResult | None = None
    ) -> None:
        """All runs one may compare; ``a``/``b`` pick the pair (default: the two most recent)."""
        self._runs = list(runs)
        for combo in (self.combo_a, self.combo_b):
            with QSignalBlocker(combo):
                combo.clear()
                for r in self._runs:
                    combo.addItem(r.name)
        if len(self._runs) >= 2:
            ia = self._index(a, len(self._runs) - 2)
            ib = self._index(b, len(self._runs) - 1)
            with QSignalBlocker(self.combo_a), QSignalBlocker(self.combo_b):
                self.combo_a.setCurrentIndex(ia)
                self.combo_b.setCurrentIndex(ib)
        self.refresh()

    def _index(self, r: RunResult | None, default: int) -> int:
        for i, x in enumerate(self._runs):
            if x is r:
                return i
        return default

    def _swap(self) -> None:
        ia, ib = self.combo_a.currentIndex(), self.combo_b.currentIndex()
        with QSignalBlocker(self.combo_a), QSignalBlocker(self.combo_b):
            self.combo_a.setCurrentIndex(ib)
            self.combo_b.setCurrentIndex(ia)
        self.refresh()

    def pair(self) -> tuple[RunResult, RunResult] | None:
        ia, ib = self.combo_a.currentIndex(), self.combo_b.currentIndex()
        if len(self._runs) < 2 or not (0 <= ia < len(self._runs) and 0 <= ib < len(self._runs)) or ia == ib:
            return None
        return self._runs[ia], self._runs[ib]

    def refresh(self, *_: object) -> None:
        pair = self.pair()
        self.categories.setRowCount(0)
        self.layers.setRowCount(0)
        if pair is None:
            self.comparison = None
            self.explanation.setHtml(
                "<p><b>Compare two runs.</b> Run (or open) at least two, tick them in the Runs list and "
                "press <i>Compare ticked</i>; pick A and B above. The difference is explained here, "
                "largest contributor first, from the measured numbers.</p>"
            )
            return
        a, b = pair
        c = compare(a, b)
        self.comparison = c
        sentences = explain(c)
        title = f"B = {_esc(c.label_b)} vs A = {_esc(c.label_a)}"
        html = [f"<h3 style='margin:2px 0'>{title}</h3>"]
        html.append("<ul style='margin-left:-18px'>")
        html += [f"<li>{_esc(s)}</li>" for s in sentences]
        html.append("</ul>")
        if a.predicted or b.predicted:
            html.append("<p><i>Predicted runs replay the allocator model; they are not measurements.</i></p>")
        self.explanation.setHtml("".join(html))
        rows = [*c.summary, *c.categories]
        self.categories.setRowCount(len(rows))
        for i, d in enumerate(rows):
            self._fill(self.categories, i, [d.name.replace("_", " ")], d)
        layer_rows = [d for d in c.layers if self.show_equal.isChecked() or d.delta != 0]
        self.layers.setRowCount(len(layer_rows))
        for i, d in enumerate(layer_rows):
            self._fill(self.layers, i, [d.name, d.metric.replace("_bytes", "").replace("_", " ")], d)

    @staticmethod
    def _fill(table: QTableWidget, row: int, labels: list[str], d: Diff) -> None:
        delta = "N/A" if d.delta is None else fmt_signed_bytes(d.delta)
        cells = [*labels, fmt_bytes(d.a), fmt_bytes(d.b), delta]
        for col, text in enumerate(cells):
            item = QTableWidgetItem(text)
            if col >= len(labels):
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                raw = (d.a, d.b, d.delta)[col - len(labels)]
                if raw is not None:
                    item.setToolTip(f"{raw:,} B")
            if col == len(cells) - 1 and d.delta:
                item.setForeground(QBrush(MORE if d.delta > 0 else LESS))
            table.setItem(row, col, item)


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
