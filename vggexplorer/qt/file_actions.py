"""The window's file actions: heads and runs opened and saved, the plot exported as PNG/SVG, and the data as
run CSV/JSON or the comparison as CSV/Markdown, each with its file dialog (the folder remembered per kind).

``FileActions`` is given what it reads and writes — the window (dialog parent and status bar), the app
settings, the head model (its document), the session, the memory plot and the compare panel — and callbacks
for what belongs to the window: adding an opened run, bringing the deferred views up to date before an
export, refreshing a stale comparison, and showing an error in the message bar. Failures never raise: they
are shown and the method returns ``False`` (or ``None``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog, QMainWindow

from vggexplorer.core.base.errors import VGGExplorerError
from vggexplorer.core.model.head import HeadSpec
from vggexplorer.core.results.compare import comparison_to_markdown, comparison_to_rows
from vggexplorer.core.results.result import RunResult
from vggexplorer.core.session.model import SessionModel
from vggexplorer.qt.head.head_model import HeadListModel
from vggexplorer.qt.plots.export import export_png, export_svg
from vggexplorer.qt.plots.memory_plot import MemoryPlot
from vggexplorer.qt.runs import ComparePanel
from vggexplorer.qt.settings import AppSettings

#: ``show_error(text, details="", level="error")``: the window's message bar.
ShowError = Callable[..., None]


class FileActions(QObject):
    """Open/save heads and runs, export the plot and the data (dialogs and the file work behind them)."""

    def __init__(
        self,
        window: QMainWindow,
        *,
        settings: AppSettings,
        head_model: HeadListModel,
        session: SessionModel,
        plot: MemoryPlot,
        compare_panel: ComparePanel,
        add_result: Callable[[RunResult], None],
        flush_updates: Callable[[], None],
        refresh_comparison: Callable[[], None],
        show_error: ShowError,
    ) -> None:
        super().__init__(window)
        self.parent_window = window
        self.settings = settings
        self.head_model = head_model
        self.session = session
        self.plot = plot
        self.compare_panel = compare_panel
        self._add_result = add_result
        self._flush_updates = flush_updates
        self._refresh_comparison = refresh_comparison
        self._show_error = show_error

    def _status(self, text: str) -> None:
        self.parent_window.statusBar().showMessage(text, 5000)

    def _ask_path(self, kind: str, title: str, filt: str, save: bool, suffix: str) -> Path | None:
        start = self.settings.last_dir(kind)
        if save:
            path, _ = QFileDialog.getSaveFileName(self.parent_window, title, start, filt)
        else:
            path, _ = QFileDialog.getOpenFileName(self.parent_window, title, start, filt)
        if not path:
            return None
        p = Path(path)
        if save and not p.suffix:
            p = p.with_suffix(suffix)
        self.settings.set_last_dir(kind, str(p.parent))
        return p

    # --- head ---
    def open_head_dialog(self) -> None:
        p = self._ask_path("head", "Open head", "Head JSON (*.json);;All files (*)", False, ".json")
        if p is not None:
            self.open_head(p)

    def open_head(self, path: Path) -> bool:
        try:
            spec = HeadSpec.load(path)
        except VGGExplorerError as e:
            self._show_error(f"Could not open head {path.name}: {e}")
            return False
        self.head_model.push_set_head(spec, f"Open {path.name}")
        return True

    def save_head_dialog(self) -> None:
        p = self._ask_path("head", "Save head", "Head JSON (*.json)", True, ".json")
        if p is not None:
            self.save_head(p)

    def save_head(self, path: Path) -> bool:
        try:
            self.head_model.doc.spec.save(path)
        except (OSError, VGGExplorerError) as e:
            self._show_error(f"Could not save head to {path}: {e}")
            return False
        self._status(f"Saved head to {path}")
        return True

    # --- runs ---
    def open_run_dialog(self) -> None:
        p = self._ask_path("run", "Open run", "Run JSON (*.json);;All files (*)", False, ".json")
        if p is not None:
            self.open_run(p)

    def open_run(self, path: Path) -> RunResult | None:
        from vggexplorer.core.results.runfile import load_run

        try:
            result = load_run(path)
        except (OSError, ValueError, VGGExplorerError) as e:
            self._show_error(f"Could not open run {path.name}: {e}")
            return None
        if not result.name:
            result.name = path.stem
        result.name = self.session.unique_name(result.name)
        self._add_result(result)
        self._flush_updates()
        return result

    def save_run_dialog(self) -> None:
        if self.session.current() is None:
            self._show_error("No run to save: run the model or open a run first.", level="info")
            return
        p = self._ask_path("run", "Save run", "Run JSON (*.json)", True, ".json")
        if p is not None:
            self.save_run(p)

    def save_run(self, path: Path, result: RunResult | None = None) -> bool:
        from vggexplorer.core.results.runfile import save_run

        r = result or self.session.current()
        if r is None:
            return False
        try:
            save_run(r, path)
        except (OSError, ValueError, VGGExplorerError) as e:
            self._show_error(f"Could not save run to {path}: {e}")
            return False
        self._status(f"Saved {r.name} to {path}")
        return True

    # --- exports ---
    def export_plot_dialog(self, fmt: str) -> None:
        if not self.plot.results:
            self._show_error("Nothing to export yet: run the model or open a run.", level="info")
            return
        filt = "PNG image (*.png)" if fmt == "png" else "SVG image (*.svg)"
        p = self._ask_path("export", f"Export plot as {fmt.upper()}", filt, True, f".{fmt}")
        if p is not None:
            self.export_plot(p, fmt)

    def export_plot(self, path: Path, fmt: str | None = None) -> bool:
        """The plot as shown (one run or the overlay of the ticked runs) as PNG or SVG."""
        fmt = fmt or path.suffix.lstrip(".").lower()
        self._flush_updates()
        try:
            if fmt == "png":
                export_png(self.plot, path)
            elif fmt == "svg":
                export_svg(self.plot, path)
            else:
                raise ValueError(f"unknown plot format {fmt!r}: use png or svg")
        except (OSError, ValueError, TypeError) as e:
            self._show_error(f"Could not export the plot to {path}: {e}")
            return False
        self._status(f"Exported plot to {path}")
        return True

    def export_data_dialog(self, kind: str) -> None:
        filt, suffix = {
            "csv": ("CSV (*.csv)", ".csv"),
            "json": ("Run JSON (*.json)", ".json"),
            "compare-csv": ("CSV (*.csv)", ".csv"),
            "compare-md": ("Markdown (*.md)", ".md"),
        }[kind]
        p = self._ask_path("export", "Export data", filt, True, suffix)
        if p is not None:
            self.export_data(p, kind)

    def export_data(self, path: Path, kind: str) -> bool:
        """``csv``/``json``: the current run; ``compare-csv``/``compare-md``: the comparison shown."""
        self._flush_updates()
        try:
            if kind in ("csv", "json"):
                r = self.session.current()
                if r is None:
                    raise ValueError("no run selected")
                from vggexplorer.core.results import runfile

                if kind == "csv":
                    runfile.write_csv(r, path)
                else:
                    runfile.save_run(r, path)
            else:
                self._refresh_comparison()
                c = self.compare_panel.comparison
                if c is None:
                    raise ValueError("no comparison: tick two runs and press Compare")
                from vggexplorer.core.base.fileio import atomic_write_text

                if kind == "compare-md":
                    atomic_write_text(path, comparison_to_markdown(c))
                else:
                    rows = comparison_to_rows(c)
                    buf = io.StringIO()
                    w = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["section"])
                    w.writeheader()
                    w.writerows(rows)
                    atomic_write_text(path, buf.getvalue())
        except (OSError, ValueError, VGGExplorerError) as e:
            self._show_error(f"Could not export to {path}: {e}")
            return False
        self._status(f"Exported to {path}")
        return True
