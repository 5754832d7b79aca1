"""The window's actions and menus: File (heads, presets, runs, plot and data exports, quit), Edit (undo/redo
and the head view's row actions), Run (run, cancel), View (show/hide the docks, pick a result tab) and Help.

``WindowActions`` builds the ``QAction`` objects (parented to the window, with their shortcuts) from the slots
it is given — the file actions, starting and cancelling a run, the about box, the undo stack — and
``build_menus`` lays them out in the window's menu bar. It holds no state of its own beyond the actions and
menus; what they do lives in ``FileActions``, ``RunController`` and the window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from PySide6.QtGui import QAction, QKeySequence, QUndoStack
from PySide6.QtWidgets import QMainWindow, QMenu, QTabWidget, QWidget

from vggexplorer.core.model.head import PRESET_NAMES
from vggexplorer.qt.file_actions import FileActions
from vggexplorer.qt.head.head_view import HeadView


class WindowActions:
    """The window's actions (one attribute each) and, after ``build_menus``, its menus."""

    def __init__(
        self,
        window: QMainWindow,
        undo_stack: QUndoStack,
        *,
        files: FileActions,
        start_run: Callable[[], object],
        cancel_run: Callable[[], object],
        about: Callable[[], object],
    ) -> None:
        self.window = window

        def act(
            text: str,
            slot: Callable[[], object],
            shortcut: QKeySequence | QKeySequence.StandardKey | str | None = None,
        ) -> QAction:
            a = QAction(text, window)
            if shortcut is not None:
                a.setShortcut(QKeySequence(shortcut))
            a.triggered.connect(lambda _=False: slot())
            return a

        self.open_head_action = act("&Open Head…", files.open_head_dialog, QKeySequence.StandardKey.Open)
        self.save_head_action = act("&Save Head…", files.save_head_dialog, QKeySequence.StandardKey.Save)
        self.open_run_action = act("Open &Run…", files.open_run_dialog, "Ctrl+Shift+O")
        self.save_run_action = act("Sa&ve Run…", files.save_run_dialog, "Ctrl+Shift+S")
        self.export_png_action = act("&PNG…", lambda: files.export_plot_dialog("png"))
        self.export_svg_action = act("&SVG…", lambda: files.export_plot_dialog("svg"))
        self.export_csv_action = act("Run as &CSV…", lambda: files.export_data_dialog("csv"))
        self.export_json_action = act("Run as &JSON…", lambda: files.export_data_dialog("json"))
        self.export_cmp_csv_action = act(
            "Comparison as C&SV…", lambda: files.export_data_dialog("compare-csv")
        )
        self.export_cmp_md_action = act(
            "Comparison as &Markdown…", lambda: files.export_data_dialog("compare-md")
        )
        self.quit_action = act("&Quit", window.close, QKeySequence.StandardKey.Quit)

        self.undo_action = undo_stack.createUndoAction(window, "&Undo")
        self.undo_action.setShortcuts([QKeySequence("Ctrl+Z")])
        self.redo_action = undo_stack.createRedoAction(window, "&Redo")
        self.redo_action.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])

        self.run_action = act("&Run", start_run, "Ctrl+R")
        self.cancel_action = act("&Cancel", cancel_run, "Esc")
        self.cancel_action.setEnabled(False)
        self.about_action = act("&About VGG Memory Explorer", about)

    def build_menus(
        self,
        *,
        head_view: HeadView,
        load_preset: Callable[[str], object],
        panes: Sequence[tuple[str, QWidget]],
        tabs: QTabWidget,
    ) -> None:
        """The menu bar; ``panes``: (title, widget) shown or hidden from View; ``tabs``: picked from View."""
        mb = self.window.menuBar()
        file = mb.addMenu("&File")
        file.addAction(self.open_head_action)
        file.addAction(self.save_head_action)
        presets = file.addMenu("&Presets")
        self.preset_actions: dict[str, QAction] = {}
        for name in PRESET_NAMES:
            a = presets.addAction(name)
            a.triggered.connect(lambda _=False, n=name: load_preset(n))
            self.preset_actions[name] = a
        file.addSeparator()
        file.addAction(self.open_run_action)
        file.addAction(self.save_run_action)
        file.addSeparator()
        exp_plot = file.addMenu("Export &Plot")
        exp_plot.addAction(self.export_png_action)
        exp_plot.addAction(self.export_svg_action)
        exp_data = file.addMenu("Export &Data")
        exp_data.addAction(self.export_csv_action)
        exp_data.addAction(self.export_json_action)
        exp_data.addSeparator()
        exp_data.addAction(self.export_cmp_csv_action)
        exp_data.addAction(self.export_cmp_md_action)
        file.addSeparator()
        file.addAction(self.quit_action)
        self.file_menu: QMenu = file

        edit = mb.addMenu("&Edit")
        edit.addAction(self.undo_action)
        edit.addAction(self.redo_action)
        edit.addSeparator()
        edit.addAction(head_view.delete_action)
        edit.addAction(head_view.duplicate_action)
        edit.addAction(head_view.fix_action)
        self.edit_menu: QMenu = edit

        run = mb.addMenu("&Run")
        run.addAction(self.run_action)
        run.addAction(self.cancel_action)
        self.run_menu: QMenu = run

        view = mb.addMenu("&View")
        for title, w in panes:
            a = view.addAction(title)
            a.setCheckable(True)
            a.setChecked(True)
            a.toggled.connect(w.setVisible)
        view.addSeparator()
        for i, title in enumerate(("Categories", "Layers Table", "Compare")):
            a = view.addAction(f"Show {title}")
            a.triggered.connect(lambda _=False, k=i: tabs.setCurrentIndex(k))
        self.view_menu: QMenu = view

        helpm = mb.addMenu("&Help")
        helpm.addAction(self.about_action)
