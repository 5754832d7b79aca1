"""``CategoryPlot``: bytes per category (parameters, gradients, activations, …, untracked workspace,
allocator overhead, non-PyTorch) as bars at each run's peak or, for one run, as stacked areas over time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6 import QtWidgets

from vggexplorer.core.base.units import fmt_bytes
from vggexplorer.core.results.analysis import categories_at_peak, category_samples, peak_time
from vggexplorer.core.results.result import CATEGORIES, RunResult
from vggexplorer.core.results.wording import describe_run, run_label
from vggexplorer.qt.plots.items import BytesAxisItem, CategoryAxisItem
from vggexplorer.qt.plots.style import (
    BACKGROUND,
    CATEGORY_COLOURS,
    FOREGROUND,
    RUN_COLOURS,
    esc,
    overlay_legend,
    set_label,
    small_font,
    style_plot,
)


class CategoryPlot(pg.GraphicsLayoutWidget):
    """Bytes per category: horizontal bars at each run's peak (category names down the left, bytes along the
    bottom, one bar per run in each category's row, one colour and legend entry per run) or, for one run,
    stacked areas over time. Both plots are built once and swapped; axes are never replaced."""

    MODES = ("bars", "stacked")

    def __init__(self, parent: QtWidgets.QWidget | None = None, mode: str = "bars") -> None:
        super().__init__(parent=parent, show=False, size=None, title=None)
        self.setBackground(BACKGROUND)
        self.ci.setContentsMargins(4, 2, 4, 2)
        self._title = self.addLabel("", row=0, col=0, justify="left")
        self._cat_axis = CategoryAxisItem("left")
        self.bars_plot: pg.PlotItem = self.addPlot(
            row=1, col=0, axisItems={"left": self._cat_axis, "bottom": BytesAxisItem("bottom")}
        )
        self.stacked_plot = pg.PlotItem(axisItems={"left": BytesAxisItem("left")})
        for p in (self.bars_plot, self.stacked_plot):
            style_plot(p, "")
            p.setTitle(None)  # an empty title still takes a row
            p.setMenuEnabled(False)
        self.bars_plot.showGrid(x=True, y=False, alpha=0.18)
        self.bars_plot.getAxis("bottom").setStyle(maxTickLevel=0)
        self.bars_plot.getAxis("left").setStyle(maxTickLevel=0)
        self.bars_plot.getAxis("left").setWidth(150)
        self.bars_plot.invertY(True)
        self.bars_plot.setLabel("bottom", "bytes at the run's allocator peak", color=FOREGROUND)
        self.stacked_plot.setLabel("bottom", "time", units="s", color=FOREGROUND)
        self.bars_legend = overlay_legend(self.bars_plot)
        self.stacked_legend = overlay_legend(self.stacked_plot)
        self.bars_legend.setColumnCount(1)
        self.bars_plot.vb.sigResized.connect(self._place_bars_legend)
        self.stacked_legend.setColumnCount(3)
        self._results: list[RunResult] = []
        self._mode = mode if mode in self.MODES else "bars"
        self._shown = self.bars_plot
        self._items: list[tuple[pg.PlotItem, Any]] = []
        #: bytes shown per (run index, category): the numbers behind the bars/areas, for tests and tables
        self.values: dict[tuple[int, str], int] = {}
        #: the categories drawn as rows (those not zero in every run)
        self.rows: list[str] = []
        self._show_plot(self.bars_plot if self._mode == "bars" else self.stacked_plot)

    @property
    def plot(self) -> pg.PlotItem:
        """The plot now shown."""
        return self._shown

    @property
    def legend(self) -> pg.LegendItem:
        return self.bars_legend if self._shown is self.bars_plot else self.stacked_legend

    @property
    def mode(self) -> str:
        return self._mode

    def set_mode(self, mode: str) -> None:
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self._mode = mode
        self.set_results(self._results)

    def _show_plot(self, plot: pg.PlotItem) -> None:
        if plot is self._shown and plot.scene() is not None:
            return
        self.ci.removeItem(self._shown)
        self._shown.hide()
        self.ci.addItem(plot, row=1, col=0)
        plot.show()
        self._shown = plot

    def set_results(self, results: Sequence[RunResult]) -> None:
        self._results = list(results)
        for plot, it in self._items:
            plot.removeItem(it)
        self._items = []
        self.bars_legend.clear()
        self.stacked_legend.clear()
        self.values = {}
        self.rows = []
        self._show_plot(self.stacked_plot if self._mode == "stacked" else self.bars_plot)
        if not self._results:
            set_label(self._title, "")
            for lg in (self.bars_legend, self.stacked_legend):
                lg.hide()
            return
        if self._mode == "stacked":
            self._draw_stacked(self._results[0])
        else:
            self._draw_bars(self._results)
        for lg in (self.bars_legend, self.stacked_legend):
            lg.setVisible(bool(lg.items))
        self._place_bars_legend()

    def _place_bars_legend(self, *_: object) -> None:
        """Bars grow from the left: the runs' legend goes in the top right corner."""
        lg = self.bars_legend
        lg.updateSize()
        lg.setPos(max(float(self.bars_plot.vb.width()) - float(lg.width()) - 4.0, 4.0), 2.0)

    def _add(self, plot: pg.PlotItem, item: Any, ignore_bounds: bool = False) -> None:
        plot.addItem(item, ignoreBounds=ignore_bounds)
        self._items.append((plot, item))

    def _draw_bars(self, results: list[RunResult]) -> None:
        p = self.bars_plot
        n = len(results)
        per_run = [categories_at_peak(r) for r in results]
        for i, at in enumerate(per_run):
            for c in CATEGORIES:
                self.values[(i, c)] = int(at[c])
        rows = [c for c in CATEGORIES if any(at[c] > 0 for at in per_run)] or list(CATEGORIES)
        self.rows = rows
        self._cat_axis.set_names([c.replace("_", " ") for c in rows])
        h = 0.82 / n
        label_font = small_font()
        for i, (r, at) in enumerate(zip(results, per_run, strict=True)):
            w = np.array([max(at[c], 0) for c in rows], dtype=np.float64)
            y = np.arange(len(rows)) - 0.41 + h * (i + 0.5)
            colour = RUN_COLOURS[i % len(RUN_COLOURS)] if n > 1 else None
            brushes = [pg.mkBrush(colour or CATEGORY_COLOURS[c]) for c in rows]
            bars = pg.BarGraphItem(
                x0=np.zeros(len(rows)), y=y, height=h * 0.88, width=w, brushes=brushes, pen=pg.mkPen(None)
            )
            self._add(p, bars)
            for k, c in enumerate(rows):
                if at[c] > 0:
                    lab = pg.TextItem(f" {fmt_bytes(at[c])}", color=FOREGROUND, anchor=(0, 0.5))
                    lab.setFont(label_font)
                    lab.setPos(float(w[k]), float(y[k]))
                    self._add(p, lab, ignore_bounds=True)
            if n > 1:
                colour_i = RUN_COLOURS[i % len(RUN_COLOURS)]
                sample = pg.BarGraphItem(x0=[0], y=[0], height=0, width=0, brush=pg.mkBrush(colour_i))
                self._add(p, sample, ignore_bounds=True)
                self.bars_legend.addItem(
                    sample, f"{run_label(r)} (peak {fmt_bytes(r.summary.peak_allocated_bytes)})"
                )
        xmax = max((float(v) for v in self.values.values()), default=1.0)
        p.setXRange(0, max(xmax, 1.0) * 1.6, padding=0)  # the legend sits right of the bars
        p.setYRange(-0.5, len(rows) - 0.5, padding=0)
        desc = " vs ".join(run_label(r) for r in results) if n > 1 else describe_run(results[0])
        set_label(
            self._title,
            f"<span style='font-weight:bold'>Categories at the peak</span> — {esc(desc)}",
            color=FOREGROUND,
            size="9pt",
        )
        self._title.setToolTip(
            "Rows: categories from live tensors (zero in every run: left out). "
            "Untracked workspace = allocator − tensors; allocator overhead = reserved − allocated (CUDA); "
            "non-PyTorch = NVML process − reserved (CUDA)."
        )

    def _draw_stacked(self, r: RunResult) -> None:
        p = self.stacked_plot
        times, levels = category_samples(r)
        if len(times) == 0:
            return
        xs = np.repeat(times, 2)[1:]
        base = np.zeros(len(xs))
        prev_curve = pg.PlotCurveItem(x=xs, y=base, pen=pg.mkPen(None))
        self._add(p, prev_curve)
        for c in CATEGORIES:
            v = np.clip(levels[c], 0, None)
            self.values[(0, c)] = int(levels[c][np.searchsorted(times, peak_time(r))])
            if not v.any():
                continue
            self.rows.append(c)
            top = base + np.repeat(v, 2)[:-1].astype(np.float64)
            curve = pg.PlotCurveItem(x=xs, y=top, pen=pg.mkPen(CATEGORY_COLOURS[c], width=1))
            fill = pg.FillBetweenItem(prev_curve, curve, brush=pg.mkBrush(CATEGORY_COLOURS[c]))
            self._add(p, curve)
            self._add(p, fill)
            sample = pg.BarGraphItem(x0=[0], y=[0], height=0, width=0, brush=pg.mkBrush(CATEGORY_COLOURS[c]))
            self._add(p, sample, ignore_bounds=True)
            self.stacked_legend.addItem(sample, c.replace("_", " "))
            prev_curve, base = curve, top
        ymax = float(base.max()) if len(base) else 1.0
        p.enableAutoRange(axis="x")
        p.setYRange(0, max(ymax, 1.0) * 1.3, padding=0)  # room for the legend in the corner
        set_label(
            self._title,
            f"<span style='font-weight:bold'>Categories over time (stacked)</span> — {esc(describe_run(r))}",
            color=FOREGROUND,
            size="9pt",
        )
        self._title.setToolTip("Each time bin drawn at its highest allocator level.")
