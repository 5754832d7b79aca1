"""The runs list (every finished run; names editable; tick two or more to overlay them) and the compare
panel (difference tables by category and by layer, and the plain-language explanation from
``core.results.compare``).

The runs list is a view of the session (``core/session``): it shows the session's runs and selection, follows
its ``runs`` and ``selection`` events, and sends what the user does (tick, pick, rename, remove) to the
session's mutators. Its items hold the session's run id, never the run.
"""

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
from vggexplorer.core.results.wording import run_summary
from vggexplorer.core.session.model import RunsChange, Selection, SessionModel

RunIdRole = Qt.ItemDataRole.UserRole + 1
MORE = QColor(176, 40, 30)
LESS = QColor(30, 120, 50)


class RunsPanel(QWidget):
    """A list of the session's runs. Ticked runs are overlaid in the plot; the current one fills the layer
    table."""

    openRequested = Signal()
    saveRequested = Signal()
    compareRequested = Signal()

    def __init__(self, session: SessionModel | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session if session is not None else SessionModel()
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
        for run_id in self.session.run_ids():
            self._insert(run_id, self.list.count())
        self._show_selection(self.session.selection)
        self.session.events.runs.connect(self._on_runs)
        self.session.events.selection.connect(self._show_selection)
        # the session may outlive the widget: stop calling back into it once it is gone
        events, on_runs, on_selection = self.session.events, self._on_runs, self._show_selection

        def unhook(*_: object) -> None:
            if on_runs in events.runs:
                events.runs.disconnect(on_runs)
            if on_selection in events.selection:
                events.selection.disconnect(on_selection)

        self.destroyed.connect(unhook)

    # --- the session's runs and selection, shown ------------------------------------------------------------
    def _on_runs(self, change: RunsChange) -> None:
        if change.kind == "added":
            self._insert(change.run_id, change.index)
        elif change.kind == "removed":
            item = self._item(change.run_id)
            if item is not None:
                with QSignalBlocker(self.list):
                    self.list.takeItem(self.list.row(item))
        else:
            item = self._item(change.run_id)
            if item is not None:
                with QSignalBlocker(self.list):
                    item.setText(self.session.run(change.run_id).name)
                self._decorate(item, self.session.run(change.run_id))
        self._show_selection(change.selection)

    def _insert(self, run_id: int, row: int) -> None:
        result = self.session.run(run_id)
        item = QListWidgetItem()
        item.setFlags(
            Qt.ItemFlag.ItemIsEnabled
            | Qt.ItemFlag.ItemIsSelectable
            | Qt.ItemFlag.ItemIsEditable
            | Qt.ItemFlag.ItemIsUserCheckable
        )
        item.setData(RunIdRole, run_id)
        with QSignalBlocker(self.list):
            item.setText(result.name)
            item.setCheckState(Qt.CheckState.Unchecked)
            self.list.insertItem(row, item)
        self._decorate(item, result)

    def _show_selection(self, selection: Selection) -> None:
        ticked = set(selection.ticked)
        with QSignalBlocker(self.list):
            for i in range(self.list.count()):
                item = self.list.item(i)
                on = item.data(RunIdRole) in ticked
                item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
            current = self._item(selection.current) if selection.current is not None else None
            if current is None:
                self.list.setCurrentRow(-1)
            elif current is not self.list.currentItem():
                self.list.setCurrentItem(current)
        self._update_buttons()

    def _item(self, run_id: int | None) -> QListWidgetItem | None:
        for i in range(self.list.count()):
            item = self.list.item(i)
            if item.data(RunIdRole) == run_id:
                return item
        return None

    def _decorate(self, item: QListWidgetItem, result: RunResult) -> None:
        tip = [f"<b>{result.name}</b>"]
        if result.predicted:
            tip.append("<i>predicted (allocator model), not measured</i>")
        tip.append(run_summary(result, sep="<br>"))
        if result.fault is not None:
            f = result.fault
            tip.append(f"<span style='color:#a01414'>{f.kind}: {f.message} ({f.phase} · {f.layer})</span>")
        with QSignalBlocker(self.list):
            item.setToolTip("<br>".join(tip))
            if result.status != "ok":
                item.setForeground(QBrush(MORE))

    # --- reading and acting, through the session ----------------------------------------------------------
    def add(self, result: RunResult, *, checked: bool = True, make_current: bool = True) -> int:
        """Add ``result`` to the session (the list follows); returns its run id."""
        return self.session.add_run(result, ticked=checked, current=make_current)

    def runs(self) -> list[RunResult]:
        return self.session.runs()

    def checked(self) -> list[RunResult]:
        return self.session.ticked()

    def current(self) -> RunResult | None:
        return self.session.current()

    def set_checked(self, results: Sequence[RunResult]) -> None:
        ids = {id(r) for r in results}
        self.session.set_selection(i for i in self.session.run_ids() if id(self.session.run(i)) in ids)

    def remove_current(self) -> None:
        if self.session.current_id is not None:
            self.session.remove_run(self.session.current_id)

    def _on_item_changed(self, item: QListWidgetItem) -> None:
        run_id = item.data(RunIdRole)
        result = self.session.run(run_id)
        if not self.session.rename_run(run_id, item.text()) and item.text() != result.name:
            with QSignalBlocker(self.list):
                item.setText(result.name)  # a blank name: the old one comes back
        self.session.set_ticked(run_id, item.checkState() == Qt.CheckState.Checked)

    def _on_current_item(self, current: QListWidgetItem | None, *_: object) -> None:
        self.session.set_current(current.data(RunIdRole) if current is not None else None)

    def _update_buttons(self) -> None:
        has = self.list.count() > 0
        self.save_button.setEnabled(has)
        self.remove_button.setEnabled(has)
        self.compare_button.setEnabled(len(self.session.selection.ticked) >= 2)


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
