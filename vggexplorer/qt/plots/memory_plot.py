"""``MemoryPlot``: two stacked plots on one linked time axis — "Allocator level" (allocated / CPU allocator
total, reserved on CUDA, live tensors dashed, predicted curves dash-dotted and named "predicted …") and the
"nvidia-smi level" (NVML device used + this process on CUDA; process RSS on CPU). Phases are shaded, layer
boundaries are light ticks, peaks carry markers with values, axes are in bytes (MiB/GiB), and a hover
read-out tells time, values, module and phase. Big timelines stay smooth (see ``items.StepCurveItem``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from vggexplorer.core.base.units import fmt_bytes
from vggexplorer.core.results.analysis import (
    aligned_times,
    layer_boundaries,
    level_at,
    phase_intervals,
    run_offsets,
    step_index,
)
from vggexplorer.core.results.result import PHASES, RunResult, Timeline
from vggexplorer.core.results.wording import (
    curve_name,
    describe_run,
    device_description,
    is_cuda,
    measures_text,
    prediction_gpu,
    run_label,
)
from vggexplorer.qt.plots.items import BytesAxisItem, PhaseBands, StepCurveItem
from vggexplorer.qt.plots.style import (
    BACKGROUND,
    FOREGROUND,
    KIND_COLOURS,
    KIND_STYLES,
    MAX_PHASE_LABELS,
    PREDICTED_COLOURS,
    PREDICTED_STYLE,
    RUN_COLOURS,
    esc,
    make_pen,
    overlay_legend,
    set_label,
    small_font,
    style_plot,
)

F64 = npt.NDArray[np.float64]


@dataclass
class _Curve:
    kind: str
    item: StepCurveItem
    plot: pg.PlotItem
    marker: pg.ScatterPlotItem | None = None
    label: pg.TextItem | None = None
    predicted: bool = False  # a curve of the overlaid prediction


class MemoryPlot(pg.GraphicsLayoutWidget):
    """Allocator level above, nvidia-smi (or RSS) level below, on one time axis; one or several runs, and
    optionally the prediction for the current config overlaid (``set_prediction``)."""

    def __init__(self, parent: QtWidgets.QWidget | None = None, *, wide_lines: bool = False) -> None:
        """``wide_lines``: 2 px curves (exports). On screen curves are 1 px: Qt's raster engine draws wider
        cosmetic pens several times slower (measured: 3 curves of ~6,000 points, 14 ms → 2 ms per frame)."""
        super().__init__(parent=parent, show=False, size=None, title=None)
        self.setBackground(BACKGROUND)
        self.ci.setSpacing(2)
        self.ci.setContentsMargins(4, 2, 4, 2)
        self._wide = wide_lines
        #: exports stand alone: they carry a fuller caption (each run, what each curve measures)
        self.full_caption = False
        self._title = self.addLabel("", row=0, col=0, justify="left")
        self.top: pg.PlotItem = self.addPlot(row=1, col=0, axisItems={"left": BytesAxisItem("left")})
        self.bottom: pg.PlotItem = self.addPlot(row=2, col=0, axisItems={"left": BytesAxisItem("left")})
        self._readout = self.addLabel("", row=3, col=0, justify="left", size="8pt", color=FOREGROUND)
        self.ci.layout.setRowStretchFactor(1, 3)
        self.ci.layout.setRowStretchFactor(2, 2)
        style_plot(self.top, "Allocator level")
        style_plot(self.bottom, "nvidia-smi level")
        self.top_legend = overlay_legend(self.top)
        self.bottom_legend = overlay_legend(self.bottom)
        self.bottom.setXLink(self.top)
        # the shared time axis is labelled once, below (the top plot's tick marks stay, without values)
        self.top.getAxis("bottom").setStyle(showValues=False)
        self.top.getAxis("bottom").setHeight(6)
        self.bottom.setLabel("bottom", "time", units="s", color=FOREGROUND)
        for p in (self.top, self.bottom):
            p.setDownsampling(auto=True, mode="peak")  # for any plain PlotDataItem added later
            p.setClipToView(True)
        self._results: list[RunResult] = []
        self._prediction: RunResult | None = None
        self._prediction_label = ""
        self.prediction_aligned = False
        self._offsets: list[float] = []
        self._xlabel = "time"
        self._curves: list[list[_Curve]] = []
        self._pred_curves: list[_Curve] = []
        self._structure: tuple[object, ...] = ()
        self._bands = {"top": PhaseBands(), "bottom": PhaseBands()}
        self.top.addItem(self._bands["top"], ignoreBounds=True)
        self.bottom.addItem(self._bands["bottom"], ignoreBounds=True)
        self._phase_labels: list[pg.TextItem] = []
        self._phase_spans: list[tuple[float, float]] = []
        self._titles: tuple[str, str, str, str] = ("", "", "", "")
        self._ticks: dict[str, pg.PlotCurveItem] = {}
        self._cross = {
            "top": pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen((0, 0, 0, 90), width=1)),
            "bottom": pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen((0, 0, 0, 90), width=1)),
        }
        self.top.addItem(self._cross["top"], ignoreBounds=True)
        self.bottom.addItem(self._cross["bottom"], ignoreBounds=True)
        for line in self._cross.values():
            line.hide()
        for name, p in (("top", self.top), ("bottom", self.bottom)):
            tick = pg.PlotCurveItem(
                pen=pg.mkPen((120, 120, 120, 45), width=1), connect="pairs", skipFiniteCheck=True
            )
            p.addItem(tick, ignoreBounds=True)
            tick.setZValue(-5)
            self._ticks[name] = tick
        self.top.vb.sigResized.connect(self._on_view_resized)
        self.bottom.vb.sigResized.connect(self._on_view_resized)
        self.top.vb.sigXRangeChanged.connect(self._on_x_range)
        self._proxy = pg.SignalProxy(self.scene().sigMouseMoved, rateLimit=60, slot=self._mouse_moved)

    # ---- data

    @property
    def results(self) -> list[RunResult]:
        return list(self._results)

    @property
    def prediction(self) -> RunResult | None:
        return self._prediction

    @property
    def prediction_label(self) -> str:
        """The prediction's name in legends and captions (its GPU unless set_prediction named it)."""
        return self._prediction_label

    def curves(self, run: int = 0) -> dict[str, StepCurveItem]:
        """The curve items of one run by kind (allocated, reserved, tensors, device_used, process)."""
        return {c.kind: c.item for c in self._curves[run]}

    def prediction_curves(self) -> dict[str, StepCurveItem]:
        """The overlaid prediction's curve items by kind (allocated, reserved, process); empty without one."""
        return {c.kind: c.item for c in self._pred_curves}

    @staticmethod
    def _kinds(r: RunResult) -> tuple[str, ...]:
        kinds = []
        if len(r.allocator):
            kinds.append("allocated")
            if r.allocator.reserved is not None:
                kinds.append("reserved")
        if len(r.tensor):
            kinds.append("tensors")
        if r.device.device_used is not None:
            kinds.append("device_used")
        if len(r.device):
            kinds.append("process")
        return tuple(kinds)

    @staticmethod
    def _pred_kinds(r: RunResult | None) -> tuple[str, ...]:
        if r is None:
            return ()
        kinds = []
        if len(r.allocator):
            kinds.append("allocated")
            if r.allocator.reserved is not None:
                kinds.append("reserved")
        if len(r.device):
            kinds.append("process")
        return tuple(kinds)

    def set_results(self, results: Sequence[RunResult]) -> None:
        """Show one run, or several overlaid (each its own colour). Cheap to call again with new data of the
        same runs (live updates): existing curves get new data, nothing is rebuilt."""
        self._results = list(results)
        self._refresh()

    def set_prediction(self, prediction: RunResult | None, label: str = "") -> None:
        """Overlay the prediction for the current config (allocated, reserved, nvidia-smi process), in the
        predicted style and named "predicted …"; None removes it. Its time axis is mapped onto the last
        shown run's phases when both went through the same phases (``prediction_aligned``)."""
        self._prediction = prediction
        self._prediction_label = label or (prediction_gpu(prediction) if prediction is not None else "")
        self._refresh()

    def append_partial(self, result: RunResult) -> None:
        """Live update: replace the last run with a newer partial result of the same run (or show it)."""
        if self._results and run_label(self._results[-1]) == run_label(result):
            self.set_results([*self._results[:-1], result])
        else:
            self.set_results([*self._results, result])

    def _refresh(self) -> None:
        results = self._results
        several = len(results) > 1
        structure = (
            tuple((run_label(r), r.predicted, is_cuda(r), *self._kinds(r)) for r in results),
            self._pred_kinds(self._prediction),
            self._prediction_label,
        )
        if structure != self._structure:
            self._rebuild(results, several)
            self._structure = structure
        self._offsets = run_offsets(results)
        xlabel = "time (runs aligned at their first forward)" if any(self._offsets) else "time"
        if xlabel != self._xlabel:
            self.bottom.setLabel("bottom", xlabel, units="s", color=FOREGROUND)
            self._xlabel = xlabel
        for r, curves, off in zip(results, self._curves, self._offsets, strict=True):
            for c in curves:
                t, y = self._series(r, c.kind)
                c.item.set_series(t - off if off else t, y)
        self.prediction_aligned = False
        if self._prediction is not None:
            ref = results[-1] if results else None
            t_pred, self.prediction_aligned = aligned_times(
                self._prediction.allocator.t, self._prediction, ref
            )
            for c in self._pred_curves:
                _t, y = self._series(self._prediction, c.kind)
                c.item.set_series(t_pred if len(_t) == len(t_pred) else _t, y)
        self._place_peaks()
        self._update_decorations()
        self._update_titles()

    @staticmethod
    def _series(r: RunResult, kind: str) -> tuple[F64, npt.NDArray[Any]]:
        if kind == "allocated":
            return r.allocator.t, r.allocator.total
        if kind == "reserved":
            assert r.allocator.reserved is not None
            return r.allocator.t, r.allocator.reserved
        if kind == "tensors":
            return r.tensor.t, r.tensor.total
        if kind == "device_used":
            assert r.device.device_used is not None
            return r.device.t, r.device.device_used
        return r.device.t, r.device.process

    def _width(self, kind: str) -> float:
        return (2.0 if kind in ("allocated", "process") else 1.6) if self._wide else 1.0

    def _add_curve(self, kind: str, plot: pg.PlotItem, pen: QtGui.QPen, name: str, marker: bool) -> _Curve:
        item = StepCurveItem(pen=pen, name=name)
        plot.addItem(item)
        legend = self.top_legend if plot is self.top else self.bottom_legend
        legend.addItem(item, name)
        c = _Curve(kind, item, plot)
        if marker:
            colour = pen.color()
            c.marker = pg.ScatterPlotItem(size=9, symbol="t1", pen=pg.mkPen(colour), brush=pg.mkBrush(colour))
            c.label = pg.TextItem("", color=colour, anchor=(0, 1), fill=pg.mkBrush(255, 255, 255, 185))
            c.label.setZValue(20)
            plot.addItem(c.marker, ignoreBounds=True)
            plot.addItem(c.label, ignoreBounds=True)
        return c

    def _rebuild(self, results: list[RunResult], several: bool) -> None:
        for c in [c for cs in self._curves for c in cs] + self._pred_curves:
            c.plot.removeItem(c.item)
            for extra in (c.marker, c.label):
                if extra is not None:
                    c.plot.removeItem(extra)
        self.top_legend.clear()
        self.bottom_legend.clear()
        self._curves = []
        self._pred_curves = []
        for i, r in enumerate(results):
            curves: list[_Curve] = []
            for kind in self._kinds(r):
                plot = self.bottom if kind in ("device_used", "process") else self.top
                if several:
                    colour = RUN_COLOURS[i % len(RUN_COLOURS)]
                else:
                    key = f"predicted_{kind}" if r.predicted and f"predicted_{kind}" in KIND_COLOURS else kind
                    colour = KIND_COLOURS[key]
                style = PREDICTED_STYLE if r.predicted and plot is self.top else KIND_STYLES[kind]
                marker = kind in ("allocated", "reserved", "tensors", "process") and (
                    not several or kind in ("allocated", "process")
                )
                c = self._add_curve(
                    kind,
                    plot,
                    make_pen(colour, style, self._width(kind)),
                    curve_name(kind, r, several),
                    marker,
                )
                c.item.setZValue(12 if kind == "tensors" else 10 - len(curves))
                curves.append(c)
            self._curves.append(curves)
        pred = self._prediction
        if pred is not None:
            gpu = self._prediction_label
            names = {
                "allocated": f"predicted allocated · {gpu}",
                "reserved": f"predicted reserved · {gpu}",
                "process": f"predicted nvidia-smi process · {gpu}",
            }
            for kind in self._pred_kinds(pred):
                plot = self.bottom if kind == "process" else self.top
                pen = make_pen(PREDICTED_COLOURS[kind], PREDICTED_STYLE, 2.0 if self._wide else 1.5)
                c = self._add_curve(kind, plot, pen, names[kind], kind in ("allocated", "process"))
                c.predicted = True
                c.item.setZValue(14)
                self._pred_curves.append(c)
        for legend in (self.top_legend, self.bottom_legend):
            legend.setColumnCount(2 if several or pred is not None else 3)
            legend.setVisible(bool(legend.items))

    def _place_peaks(self) -> None:
        several = len(self._results) > 1
        xr = self._x_bounds()
        for k, (r, curves) in enumerate(zip(self._results, self._curves, strict=True)):
            for c in curves:
                self._place_peak(c, r, several, k, xr)
        if self._prediction is not None:
            for c in self._pred_curves:
                self._place_peak(c, self._prediction, False, 0, xr)

    def _x_bounds(self) -> tuple[float, float]:
        lo, hi = math.inf, -math.inf
        for c in [c for cs in self._curves for c in cs] + self._pred_curves:
            b = c.item.dataBounds(0)
            if b[0] is not None and b[1] is not None:
                lo, hi = min(lo, b[0]), max(hi, b[1])
        return (lo, hi) if hi > lo else (0.0, 1.0)

    def _place_peak(self, c: _Curve, r: RunResult, several: bool, k: int, xr: tuple[float, float]) -> None:
        if c.marker is None or c.label is None:
            return
        t, y = c.item.series
        if len(y) == 0:
            c.marker.setData([], [])
            c.label.setText("")
            return
        i = c.item.peak_index
        pos = (float(t[i]), float(y[i]))
        if c.marker.getData()[0].tolist() != [pos[0]] or c.marker.getData()[1].tolist() != [pos[1]]:
            c.marker.setData([pos[0]], [pos[1]])  # ScatterPlotItem.setData costs ~3 ms: only on a change
        what = {"allocated": "", "reserved": "reserved ", "tensors": "tensors ", "process": ""}[c.kind]
        pred = "predicted " if c.predicted or (r.predicted and c.kind != "process") else ""
        text = f"{pred}{what}peak {fmt_bytes(int(y[i]))}"
        if c.label.textItem.toPlainText() != text:
            c.label.setText(text)
        # in the right part of the view the label goes to the left of its marker (never clipped); the run's
        # colour says whose peak it is. Measured labels sit above their marker (several runs: one line per
        # run, stacked, so equal peaks do not overprint; one run: reserved a line higher, tensors below);
        # the prediction's below its marker, so a predicted and a measured peak at one spot both read.
        right = pos[0] > xr[0] + 0.55 * (xr[1] - xr[0])
        if c.predicted:
            ay = -0.15
        elif several:
            ay = 1.0 + 1.05 * k
        else:
            ay = {"tensors": -0.15, "reserved": 2.1}.get(c.kind, 1.05)
        c.label.setAnchor((1.0 if right else 0.0, ay))
        c.label.setPos(*pos)

    def _ymax(self, plot: pg.PlotItem) -> float:
        return max(
            (
                c.item.dataBounds(1)[1] or 0.0
                for c in [c for cs in self._curves for c in cs] + self._pred_curves
                if c.plot is plot
            ),
            default=0.0,
        )

    def _update_decorations(self) -> None:
        # phases and layer ticks of the last run shown (the live one; the prediction is aligned to it)
        r0 = self._results[-1] if self._results else self._prediction
        intervals = phase_intervals(r0) if r0 else []
        for bands in self._bands.values():
            bands.set_intervals(intervals)
        shown = intervals if len(intervals) <= MAX_PHASE_LABELS else []
        while len(self._phase_labels) < len(shown):
            lab = pg.TextItem("", color=(80, 80, 80), anchor=(0, 1))
            lab.setFont(small_font())
            lab.setZValue(-4)
            self.top.addItem(lab, ignoreBounds=True)
            self._phase_labels.append(lab)
        self._phase_spans = []
        for k, lab in enumerate(self._phase_labels):
            if k < len(shown):
                ph, a, b = shown[k]
                if lab.textItem.toPlainText() != ph:
                    lab.setText(ph)
                lab.setPos(a, 0.0)  # at the bottom of its shaded region, clear of the peak labels above
                self._phase_spans.append((a, b))
            else:
                lab.hide()
        bounds = layer_boundaries(r0) if r0 else np.zeros(0)
        for name, p in (("top", self.top), ("bottom", self.bottom)):
            ymax = self._ymax(p)
            if len(bounds) and ymax > 0:
                xs = np.repeat(bounds, 2)
                ys = np.tile(np.array([0.0, ymax]), len(bounds))
                self._ticks[name].setData(x=xs, y=ys, connect="pairs", skipFiniteCheck=True)
            else:
                self._ticks[name].setData(x=[], y=[])
        self._set_y_ranges()
        self._layout_phase_labels()
        self.top.enableAutoRange(axis="x")

    def _set_y_ranges(self) -> None:
        """From 0, with head-room (in pixels) for the legend in the corner and the peak labels."""
        for p, legend in ((self.top, self.top_legend), (self.bottom, self.bottom_legend)):
            ymax = self._ymax(p)
            if ymax <= 0:
                p.setYRange(0, 1.0, padding=0)
                continue
            lines = 1 + (len(self._results) if len(self._results) > 1 else 1)
            need = max(float(legend.height()) if legend.isVisible() else 0.0, 14.0 * lines) + 6.0
            h = max(float(p.vb.height()), 60.0)
            frac = min(need / h, 0.45)
            top = ymax / (1.0 - frac)
            lo, hi = p.vb.viewRange()[1]
            if lo != 0 or abs(hi - top) > 1e-9 * top:
                p.setYRange(0, top, padding=0)

    def _on_view_resized(self, *_: object) -> None:
        self._set_y_ranges()
        self._layout_phase_labels()

    def _on_x_range(self, *_: object) -> None:
        self._layout_phase_labels()

    def _layout_phase_labels(self) -> None:
        """Show a phase's name only where its shaded region is wide enough for it (no overprinting)."""
        px = self.top.vb.viewPixelSize()[0] if self.top.vb.width() > 0 else 0.0
        for lab, (a, b) in zip(self._phase_labels, self._phase_spans, strict=False):
            wide = px > 0 and (b - a) / px >= float(lab.textItem.boundingRect().width()) + 2
            lab.setVisible(bool(wide) or px == 0)

    def _update_titles(self) -> None:
        rs = self._results
        pred = self._prediction
        shown = [*rs, *([pred] if pred is not None else [])]
        if not shown:
            title = tip = ""
        else:
            title, tip = self._caption(rs, pred)
        cuda = [is_cuda(r) for r in rs]
        if not cuda:  # nothing measured yet: say what will be shown, for either device
            top, bottom = "Allocator level", "Device level — nvidia-smi (CUDA) or process RSS (CPU)"
        elif all(cuda):
            top, bottom = "Allocator level — CUDA caching allocator", "nvidia-smi level — NVML"
        elif not any(cuda):
            top, bottom = "Allocator level — CPU allocator (c10)", "Process level — RSS (CPU run, no GPU)"
        else:
            top = "Allocator level — CUDA caching allocator / CPU allocator"
            bottom = "nvidia-smi level (CUDA) / RSS (CPU)"
        if any(r.predicted for r in shown):
            top += " — dash-dot: predicted (allocator model)"
            bottom += " — dash-dot: predicted"
        titles = (title, tip, top, bottom)
        if titles == self._titles:  # setText relays out the label: only on a change
            return
        if title != self._titles[0]:
            set_label(self._title, title, color=FOREGROUND)
        self._title.setToolTip(tip)
        if top != self._titles[2]:
            self.top.setTitle(top, color=FOREGROUND, size="9pt", justify="left")
        if bottom != self._titles[3]:
            self.bottom.setTitle(bottom, color=FOREGROUND, size="9pt", justify="left")
        self._titles = titles

    def _caption(self, rs: list[RunResult], pred: RunResult | None) -> tuple[str, str]:
        """(title HTML, tooltip): one line — config · device — on screen; exports: each run on its own line
        and what each curve measures."""
        shown = [*rs, *([pred] if pred is not None else [])]
        tip = measures_text(shown).replace(" · ", "\n")
        pred_bit = ""
        if pred is not None:
            pred_bit = f"+ PREDICTED for {self._prediction_label} (dash-dot)"
            how = "time mapped onto the last run's phases" if self.prediction_aligned else "on its own clock"
            tip += f"\nPREDICTED curves for {self._prediction_label}: {how}"
        if self.full_caption:
            heads = [describe_run(r) for r in rs]
            if len(rs) > 1:
                heads = [f"{k}. {h}" for k, h in enumerate(heads, 1)]
            if pred is not None:
                heads.append(f"PREDICTED for {self._prediction_label}: {describe_run(pred)}")
            lines = [f"<span style='font-size:10pt; font-weight:bold'>{esc(h)}</span>" for h in heads]
            lines += [f"<span style='font-size:8pt'>{esc(b)}</span>" for b in tip.split("\n")]
            return "<br>".join(lines), tip
        if len(rs) == 1:
            head = describe_run(rs[0])
        elif rs:
            devices = list(dict.fromkeys(device_description(r) for r in rs))
            labels = [run_label(r) + (" (PREDICTED)" if r.predicted else "") for r in rs]
            head = " vs ".join(labels) + " · " + " / ".join(devices)
        else:
            head = ""
        parts = [f"<span style='font-size:10pt; font-weight:bold'>{esc(head)}</span>"] if head else []
        if pred_bit:
            parts.append(f"<span style='font-size:9pt; color:#6a2c91'>{esc(pred_bit)}</span>")
        return " &nbsp;·&nbsp; ".join(parts), tip

    # ---- hover

    def readout(self, x: float) -> str:
        """What is under time ``x``: time, each curve's level, and the module and phase of each run."""
        parts = [f"t = {x:.4f} s"]
        several = len(self._results) > 1
        offsets = self._offsets if len(self._offsets) == len(self._results) else [0.0] * len(self._results)
        for r, curves, off in zip(self._results, self._curves, offsets, strict=True):
            tl: Timeline = r.tensor if len(r.tensor) else r.allocator
            bits = []
            i = int(step_index(tl.t, x + off)) if len(tl) else -1
            if i >= 0:
                p = int(tl.phase[i])
                bits.append(PHASES[p] if 0 <= p < len(PHASES) else "?")
                bits.append(r.string(int(tl.module[i])) or "(no module)")
            for c in curves:
                t, y = c.item.series
                v = level_at(t, y, x)
                if v is not None:
                    short = {
                        "allocated": "allocated" if is_cuda(r) else "CPU allocator",
                        "reserved": "reserved",
                        "tensors": "tensors",
                        "device_used": "device used",
                        "process": "process" if is_cuda(r) else "RSS",
                    }[c.kind]
                    if r.predicted and c.kind in ("allocated", "reserved", "tensors"):
                        short = f"predicted {short}"
                    bits.append(f"{short} {fmt_bytes(v)}")
            prefix = f"{run_label(r)}: " if several else ""
            parts.append(prefix + " · ".join(bits))
        if self._pred_curves:
            bits = []
            for c in self._pred_curves:
                t, y = c.item.series
                v = level_at(t, y, x)
                if v is not None:
                    bits.append(f"predicted {'nvidia-smi' if c.kind == 'process' else c.kind} {fmt_bytes(v)}")
            if bits:
                parts.append(" · ".join(bits))
        return "  |  ".join(parts)

    def _mouse_moved(self, event: tuple[QtCore.QPointF]) -> None:
        pos = event[0]
        for p in (self.top, self.bottom):
            if p.sceneBoundingRect().contains(pos):
                x = float(p.vb.mapSceneToView(pos).x())
                self.show_readout(x)
                return
        for line in self._cross.values():
            line.hide()

    def show_readout(self, x: float) -> str:
        text = self.readout(x) if self._results or self._pred_curves else ""
        set_label(self._readout, esc(text), color=FOREGROUND, size="8pt")
        for line in self._cross.values():
            line.setPos(x)
            line.setVisible(bool(text))
        return text

    def clear_readout(self) -> None:
        set_label(self._readout, "")
        for line in self._cross.values():
            line.hide()
