"""Memory plots with pyqtgraph, shared by the GUI and the CLI exporters.

``MemoryPlot``: two stacked plots on one linked time axis — "Allocator level" (allocated / CPU allocator
total, reserved on CUDA, live tensors dashed, predicted curves dash-dotted and named "predicted …") and the
"nvidia-smi level" (NVML device used + this process on CUDA; process RSS on CPU). Phases are shaded, layer
boundaries are light ticks, peaks carry markers with values, axes are in bytes (MiB/GiB), and a hover
read-out tells time, values, module and phase.

Big timelines (a million events) stay smooth: a memory level is a step function (it holds between events),
so each curve draws a per-pixel-column *step envelope* of what is in view (see ``step_envelope``): at most
four points per pixel column — the level entering the column, its max, its min and the level leaving it —
and the exact steps when fewer events than pixels are in view. Peaks are never lost, idle stretches are
flat (not ramps), and the cost of a redraw does not grow with the number of points drawn.

``CategoryPlot``: bytes per category (parameters, gradients, activations, …, untracked workspace, allocator
overhead, non-PyTorch) as stacked areas over time or as bars at each run's peak.

Exporters write PNG and SVG atomically. SVG goes through pyqtgraph's ``SVGExporter`` with a fix for
pyqtgraph issue #3495 applied only for the duration of our export call (see ``_svg_closepath_fix``).
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from vggexplorer.core.base.fileio import atomic_write_bytes, atomic_write_via
from vggexplorer.core.base.units import GiB, KiB, MiB, fmt_bytes
from vggexplorer.core.results.compare import category_levels_at, is_cuda, peak_time, run_label
from vggexplorer.core.results.result import CATEGORIES, PHASES, RunResult, Timeline

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


BACKGROUND = "w"
FOREGROUND = "k"

#: Colours of the curve kinds when one run is shown (several runs: one colour per run, a style per kind).
KIND_COLOURS: dict[str, str] = {
    "allocated": "#1f63b4",
    "reserved": "#e6750b",
    "tensors": "#2a9a2a",
    "predicted_allocated": "#8c3fc0",
    "predicted_reserved": "#c0399a",
    "device_used": "#6f6f6f",
    "process": "#c62828",
}
RUN_COLOURS: tuple[str, ...] = ("#1f63b4", "#d62728", "#2a9a2a", "#8c3fc0", "#e6750b", "#17a2b8", "#8c564b")
KIND_STYLES: dict[str, QtCore.Qt.PenStyle] = {
    "allocated": QtCore.Qt.PenStyle.SolidLine,
    "reserved": QtCore.Qt.PenStyle.DotLine,
    "tensors": QtCore.Qt.PenStyle.DashLine,
    "device_used": QtCore.Qt.PenStyle.DotLine,
    "process": QtCore.Qt.PenStyle.SolidLine,
}
PREDICTED_STYLE = QtCore.Qt.PenStyle.DashDotLine
#: The overlaid prediction's curves (one colour family, apart from the runs' colours).
PREDICTED_COLOURS: dict[str, str] = {"allocated": "#7b2fbe", "reserved": "#c0399a", "process": "#7b2fbe"}
PHASE_BRUSHES: dict[str, tuple[int, int, int, int]] = {
    "forward": (70, 130, 180, 30),
    "backward": (255, 140, 0, 32),
    "optimizer": (46, 139, 87, 30),
}
CATEGORY_COLOURS: dict[str, str] = {
    "parameters": "#4c72b0",
    "buffers": "#64b5cd",
    "inputs": "#8172b2",
    "activations": "#dd8452",
    "temporaries": "#ccb974",
    "gradients": "#55a868",
    "optimizer_state": "#937860",
    "outputs": "#da8bc3",
    "untracked_workspace": "#c44e52",
    "allocator_overhead": "#8c8c8c",
    "non_pytorch": "#bdbdbd",
}
MAX_PHASE_LABELS = 12


# --------------------------------------------------------------------------------------------------------
# Numbers → screen (pure numpy; tested without Qt)


def step_envelope(t: F64, y: npt.NDArray[Any], x0: float, x1: float, npix: int) -> tuple[F64, F64]:
    """Points that draw the step function ``y[i]`` (holding from ``t[i]`` to ``t[i+1]``) over ``[x0, x1]``.

    With at most ``2 * npix`` events in view the exact steps come back (two points per event). Otherwise
    each pixel column that holds events gives four points at the time of its first event: the level
    entering it, the column's max and min, and the level leaving it — so peaks survive and the line is
    horizontal between columns. ``t`` must be sorted. The event before ``x0`` and the one after ``x1`` are
    kept so the line reaches the edges.
    """
    n = len(t)
    if n == 0 or npix < 1:
        return np.zeros(0), np.zeros(0)
    if not x1 > x0:
        x0, x1 = float(t[0]), float(t[-1]) if t[-1] > t[0] else float(t[0]) + 1.0
    i0 = max(int(np.searchsorted(t, x0, side="right")) - 1, 0)
    i1 = min(int(np.searchsorted(t, x1, side="right")) + 1, n)
    ts, ys = t[i0:i1], y[i0:i1]
    m = len(ts)
    if m <= 2 * npix:
        xs = np.repeat(ts, 2)[1:]
        yv = np.repeat(ys, 2)[:-1].astype(np.float64)
        return xs.astype(np.float64, copy=False), yv
    edges = np.linspace(x0, x1, npix + 1)
    starts = np.searchsorted(ts, edges[:-1], side="left")
    starts[0] = 0
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:]
    ends[-1] = m
    keep = ends > starts
    s, e = starts[keep], ends[keep]
    mx = np.maximum.reduceat(ys, s)
    mn = np.minimum.reduceat(ys, s)
    last = ys[e - 1]
    prev = np.empty_like(last)
    prev[0] = ys[0]
    prev[1:] = last[:-1]
    xs = np.repeat(ts[s], 4).astype(np.float64, copy=False)
    yv = np.column_stack((prev, mx, mn, last)).astype(np.float64).ravel()
    return xs, yv


def level_at(t: F64, y: npt.NDArray[Any], x: float) -> float | None:
    """The step function's value at time ``x`` (None before the first event)."""
    i = int(np.searchsorted(t, x, side="right")) - 1
    return None if i < 0 or len(t) == 0 else float(y[i])


def bytes_unit(value: float) -> tuple[int, str]:
    a = abs(value)
    for size, name in ((GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")):
        if a >= size:
            return size, name
    return 1, "B"


# --------------------------------------------------------------------------------------------------------
# Graphics items


class BytesAxisItem(pg.AxisItem):
    """A value axis in bytes: ticks at round numbers of MiB or GiB (binary, like nvidia-smi), unit on each."""

    def __init__(self, orientation: str = "left", **kwargs: Any) -> None:
        super().__init__(orientation, **kwargs)
        self.enableAutoSIPrefix(False)

    def tickSpacing(self, minVal: float, maxVal: float, size: float) -> list[tuple[float, float]]:
        unit, _ = bytes_unit(max(abs(minVal), abs(maxVal)))
        levels = super().tickSpacing(minVal / unit, maxVal / unit, size)
        return [(sp * unit, off * unit) for sp, off in levels]

    def tickStrings(self, values: list[float], scale: float, spacing: float) -> list[str]:
        if not values:
            return []
        unit, name = bytes_unit(max(abs(v) for v in values))
        step = spacing / unit if spacing > 0 else 1.0
        decimals = max(0, min(3, -math.floor(math.log10(step)))) if step < 1 else 0
        return ["0" if v == 0 else f"{v / unit:.{decimals}f} {name}" for v in values]


class StepCurveItem(pg.PlotCurveItem):
    """A step curve over a (possibly huge) timeline that draws only its per-pixel envelope in view.

    ``set_series`` keeps the full arrays (no copy when already float64 time / int64 bytes); the drawn points
    are recomputed when the x range or the view's pixel width changes. ``dataBounds`` reports the full data,
    so auto-range sees the whole run, not just what is drawn.
    """

    def __init__(self, **opts: Any) -> None:
        super().__init__(skipFiniteCheck=True, connect="all", **opts)
        self._t: F64 = np.zeros(0)
        self._y: npt.NDArray[Any] = np.zeros(0, np.int64)
        self._bounds: tuple[tuple[float, float], tuple[float, float]] | None = None
        self._key: tuple[float, float, int, int] | None = None
        self.peak_index = -1

    @property
    def series(self) -> tuple[F64, npt.NDArray[Any]]:
        return self._t, self._y

    def set_series(self, t: npt.ArrayLike, y: npt.ArrayLike) -> None:
        self._t = np.asarray(t, dtype=np.float64)
        self._y = np.asarray(y)
        if len(self._t):
            self.peak_index = int(np.argmax(self._y))  # one pass gives the max and where it is
            self._bounds = (
                (float(self._t[0]), float(self._t[-1])),
                (0.0, float(self._y[self.peak_index])),  # memory levels are ≥ 0; a min() pass costs 1 ms/1M
            )
        else:
            self.peak_index = -1
            self._bounds = None
        self._key = None
        self.refresh(force=True)

    def _view_key(self) -> tuple[float, float, int] | None:
        vb = self.getViewBox()
        if not isinstance(vb, pg.ViewBox):
            return None
        (x0, x1), _ = vb.viewRange()
        return float(x0), float(x1), max(int(vb.width()), 1)

    def refresh(self, force: bool = False) -> None:
        vk = self._view_key()
        if vk is None:
            x0, x1, npix = (self._bounds[0][0], self._bounds[0][1], 2000) if self._bounds else (0.0, 1.0, 1)
        else:
            x0, x1, npix = vk
        key = (x0, x1, npix, id(self._t))
        if not force and key == self._key:
            return
        self._key = key
        xs, ys = step_envelope(self._t, self._y, x0, x1, npix)
        super().setData(x=xs, y=ys, skipFiniteCheck=True, connect="all")

    def viewRangeChanged(self, *args: object) -> None:
        super().viewRangeChanged()
        self.refresh()

    def viewTransformChanged(self) -> None:
        super().viewTransformChanged()
        self.refresh()

    def dataBounds(
        self, ax: int, frac: float = 1.0, orthoRange: Any = None
    ) -> tuple[float | None, float | None]:
        if self._bounds is None:
            return (None, None)
        lo, hi = self._bounds[ax]
        if ax == 1 and self.opts.get("fillLevel") is not None:
            lo, hi = min(lo, self.opts["fillLevel"]), max(hi, self.opts["fillLevel"])
        return (lo, hi)


# --------------------------------------------------------------------------------------------------------
# Words: what a run and each curve are


def _cfg(r: RunResult, *keys: str) -> Any:
    for k in keys:
        v = getattr(r.config, k) if k in ("backbone", "head_label", "preset") else getattr(r.config.run, k)
        if v not in (None, ""):
            return v
    return None


def device_description(r: RunResult) -> str:
    env = r.environment
    dev = env.device or _cfg(r, "device") or ("cuda" if is_cuda(r) else "cpu")
    name = env.device_name or env.cpu
    return f"{dev} {name}" if name and str(name) not in str(dev) else str(dev)


def describe_run(r: RunResult) -> str:
    """``fc at 224 · vgg11 · batch 8 · train · float32 · cuda:0 NVIDIA H100`` (+ predicted / status)."""
    parts = [run_label(r)]
    for keys, fmt in (
        ()
        if r.name
        else (
            (("backbone",), "{}"),
            (("batch",), "batch {}"),
            (("mode",), "{}"),
            (("dtype",), "{}"),
            (("optimizer",), "{}"),
        )
    ):
        v = _cfg(r, *keys)
        if v is not None:
            parts.append(fmt.format(v))
    parts.append(device_description(r))
    text = " · ".join(parts)
    if r.predicted:
        text += " · PREDICTED (allocator model, not measured)"
    if r.status != "ok":
        f = r.fault
        where = f" in {f.layer} ({f.phase})" if f and f.layer else ""
        text += f" · {r.status.upper()}{where}"
    return text


def curve_name(kind: str, r: RunResult, several: bool) -> str:
    """The legend name of a curve: what it measures, ``predicted …`` for a model replay."""
    cuda = is_cuda(r)
    names = {
        "allocated": "allocated (CUDA caching allocator)" if cuda else "CPU allocator total",
        "reserved": "reserved (CUDA caching allocator)",
        "tensors": "live tensors",
        "device_used": "NVML device used (whole GPU)",
        "process": "NVML this process" if cuda else "process RSS",
    }
    name = names[kind]
    if r.predicted and kind in ("allocated", "reserved", "tensors"):
        name = f"predicted {name}"
    return f"{run_label(r)}: {name}" if several else name


def measures_text(results: Sequence[RunResult]) -> str:
    """One line saying what each curve measures, from the runs' own provenance."""
    cuda = any(is_cuda(r) for r in results)
    cpu = any(not is_cuda(r) for r in results)
    bits = []
    if cuda:
        bits.append("allocated/reserved: CUDA caching-allocator counters at every allocation and free")
    if cpu:
        bits.append(
            "CPU allocator total: bytes the c10 CPU allocator has handed out (tensors, kernel buffers)"
        )
    bits.append("live tensors: bytes of live tensor storages")
    if any(r.predicted for r in results):
        bits.append("predicted: replayed through the caching-allocator model, not measured")
    sources = sorted({r.device.source for r in results if r.device.source})
    lower = "lower plot: " + ("NVML device used and this process" if cuda else "process RSS")
    if cuda and cpu:
        lower = "lower plot: NVML (CUDA runs), process RSS (CPU runs)"
    if sources:
        lower += f" ({'; '.join(sources)})"
    bits.append(lower)
    return " · ".join(bits)


def phase_intervals(r: RunResult) -> list[tuple[str, float, float]]:
    """(phase, t0, t1) of each whole-phase span (``module == ""``), else from the timeline's phase column."""
    out = [(s.phase, s.t0, s.t1) for s in r.spans if s.module == "" and s.phase in PHASE_BRUSHES]
    if out:
        return out
    tl = r.tensor if len(r.tensor) else r.allocator
    if not len(tl):
        return []
    change = np.flatnonzero(np.diff(tl.phase)) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [len(tl) - 1]))
    res = []
    for s, e in zip(starts, ends, strict=True):
        p = int(tl.phase[s])
        name = PHASES[p] if 0 <= p < len(PHASES) else ""
        if name in PHASE_BRUSHES:
            res.append((name, float(tl.t[s]), float(tl.t[e])))
    return res


def layer_boundaries(r: RunResult) -> F64:
    """Start times of the innermost module spans (a module whose path prefixes another's is skipped)."""
    mods = {s.module for s in r.spans if s.module}
    leaves = {m for m in mods if not any(o.startswith(m + ".") for o in mods)}
    return np.array(sorted(s.t0 for s in r.spans if s.module in leaves), dtype=np.float64)


# --------------------------------------------------------------------------------------------------------
# MemoryPlot


@dataclass
class _Curve:
    kind: str
    item: StepCurveItem
    plot: pg.PlotItem
    marker: pg.ScatterPlotItem | None = None
    label: pg.TextItem | None = None
    predicted: bool = False  # a curve of the overlaid prediction


def _pen(colour: str, style: QtCore.Qt.PenStyle, width: float) -> QtGui.QPen:
    pen = pg.mkPen(colour, width=width, style=style)
    pen.setCosmetic(True)
    return pen


def _style_plot(p: pg.PlotItem, title: str) -> None:
    p.setTitle(title, color=FOREGROUND, size="9pt", justify="left")
    for name in ("left", "bottom"):
        ax = p.getAxis(name)
        ax.setPen(pg.mkPen(FOREGROUND))
        ax.setTextPen(pg.mkPen(FOREGROUND))
    # y grid at major ticks only: the x grid and minor levels doubled the render time (measured 13 of 27 ms
    # for a 1600×1000 frame); phases and layer ticks already structure the time axis
    p.showGrid(x=False, y=True, alpha=0.18)
    p.getAxis("left").setStyle(maxTickLevel=0)
    p.getAxis("left").setWidth(70)


def _overlay_legend(p: pg.PlotItem) -> pg.LegendItem:
    """A compact legend drawn inside the plot's view box (top left, semi-transparent), so the curves keep the
    plot's height. Placed by position, not anchored (``offset=None``): an anchor keeps a connection to its
    parent's geometry signal that outlived closed widgets."""
    legend = pg.LegendItem(
        offset=None,
        labelTextColor=FOREGROUND,
        colCount=2,
        labelTextSize="8pt",
        verSpacing=-7,
        horSpacing=14,
        brush=(255, 255, 255, 205),
        pen=(190, 190, 190, 200),
    )
    legend.setParentItem(p.vb)
    legend.setPos(4, 2)
    legend.setZValue(50)
    legend.hide()
    return legend


def phase_spans(r: RunResult) -> list[tuple[str, float, float]]:
    """The run's whole-run phase spans (setup, forward, …) in order."""
    return [(s.phase, s.t0, s.t1) for s in r.spans if s.module == ""]


def first_forward_time(r: RunResult) -> float | None:
    """Run-clock time at which the first forward began (None when the run never got there)."""
    starts = [s.t0 for s in r.spans if s.phase == "forward"]
    if starts:
        return min(starts)
    fwd = PHASES.index("forward")
    tl = r.tensor if len(r.tensor) else r.allocator
    idx = np.flatnonzero(tl.phase == fwd) if len(tl) else np.zeros(0, np.int64)
    return float(tl.t[idx[0]]) if len(idx) else None


def run_offsets(results: Sequence[RunResult]) -> list[float]:
    """Shifts that line several runs up at the start of their first forward (set-up takes different times:
    building and initialising a model is not what a comparison is about); the last run keeps its clock, so
    its phases (the ones shaded) stay where they are. One run: no shift."""
    if len(results) < 2:
        return [0.0] * len(results)
    ref = first_forward_time(results[-1])
    if ref is None:
        return [0.0] * len(results)
    out = []
    for r in results:
        t = first_forward_time(r)
        out.append(0.0 if t is None else t - ref)
    return out


def aligned_times(t: F64, src: RunResult, ref: RunResult | None) -> tuple[F64, bool]:
    """``t`` (on ``src``'s clock) mapped piecewise-linearly onto ``ref``'s clock, phase boundary by phase
    boundary, when both runs went through the same sequence of phases (a prediction's clock is the fake
    trace's: its order of events is predicted, its durations are not). Otherwise ``t`` unchanged."""
    if ref is None or not len(t):
        return t, False
    a, b = phase_spans(src), phase_spans(ref)
    if [p for p, _, _ in a] != [p for p, _, _ in b]:  # e.g. one recorded set-up spans: the shaded phases
        a = [x for x in a if x[0] in PHASE_BRUSHES]
        b = [x for x in b if x[0] in PHASE_BRUSHES]
    if not a or [p for p, _, _ in a] != [p for p, _, _ in b]:
        return t, False
    xs = np.array([x for _, t0, t1 in a for x in (t0, t1)], dtype=np.float64)
    ys = np.array([x for _, t0, t1 in b for x in (t0, t1)], dtype=np.float64)
    xs, first = np.unique(xs, return_index=True)
    ys = np.maximum.accumulate(ys[first])
    if len(xs) < 2:
        return t, False
    return np.interp(t, xs, ys), True


def _short_gpu(name: str) -> str:
    for junk in ("NVIDIA ", "GeForce ", " (PREDICTED)"):
        name = name.replace(junk, "")
    return name.strip()


def prediction_gpu(r: RunResult) -> str:
    """``RTX 3060`` for a prediction on ``NVIDIA GeForce RTX 3060``."""
    prof = r.environment.gpu_profile
    name = prof.get("name") if isinstance(prof, dict) else None
    return _short_gpu(str(name or r.environment.device_name or "GPU"))


def _label_height(text_item: pg.TextItem) -> float:
    return float(text_item.textItem.boundingRect().height())


class PhaseBands(pg.GraphicsObject):
    """Every phase interval of a run as a shaded band over the plot's full height, in ONE item.

    One LinearRegionItem per interval cost ~1 ms each to create and paint: a 1,000-iteration run has 2,000
    intervals per plot. Here ``paint`` draws only the intervals in view and merges neighbours of the same
    phase closer than a pixel, so the cost follows the screen, not the run length.
    """

    def __init__(self) -> None:
        super().__init__()
        self.setZValue(-10)
        self._iv: list[tuple[str, float, float]] = []
        self._brushes = {ph: pg.mkBrush(c) for ph, c in PHASE_BRUSHES.items()}

    def set_intervals(self, intervals: Sequence[tuple[str, float, float]]) -> None:
        iv = [x for x in intervals if x[0] in self._brushes]
        if iv != self._iv:
            self.prepareGeometryChange()
            self._iv = iv
            self.update()

    @property
    def intervals(self) -> list[tuple[str, float, float]]:
        return list(self._iv)

    def boundingRect(self) -> QtCore.QRectF:
        vb = self.getViewBox()
        if vb is None or not self._iv:
            return QtCore.QRectF()
        r = vb.viewRect()
        x0 = min(a for _, a, _ in self._iv)
        x1 = max(b for _, _, b in self._iv)
        return QtCore.QRectF(x0, r.top(), max(x1 - x0, 0.0), r.height())

    def viewRangeChanged(self) -> None:
        self.prepareGeometryChange()
        self.update()

    def paint(self, painter: QtGui.QPainter, *args: Any) -> None:
        vb = self.getViewBox()
        if vb is None or not self._iv:
            return
        r = vb.viewRect()
        px = self.pixelWidth() or 0.0
        painter.setPen(QtCore.Qt.PenStyle.NoPen)
        run: list[Any] | None = None  # [phase, a, b] being merged
        for ph, a, b in self._iv:
            if b < r.left() or a > r.right():
                continue
            if run is not None and run[0] == ph and a - run[2] <= px:
                run[2] = b
                continue
            if run is not None:
                painter.fillRect(
                    QtCore.QRectF(run[1], r.top(), run[2] - run[1], r.height()), self._brushes[run[0]]
                )
            run = [ph, a, b]
        if run is not None:
            painter.fillRect(
                QtCore.QRectF(run[1], r.top(), run[2] - run[1], r.height()), self._brushes[run[0]]
            )


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
        _style_plot(self.top, "Allocator level")
        _style_plot(self.bottom, "nvidia-smi level")
        self.top_legend = _overlay_legend(self.top)
        self.bottom_legend = _overlay_legend(self.bottom)
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
                    kind, plot, _pen(colour, style, self._width(kind)), curve_name(kind, r, several), marker
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
                pen = _pen(PREDICTED_COLOURS[kind], PREDICTED_STYLE, 2.0 if self._wide else 1.5)
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
            lab.setFont(_small_font())
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
            _set_label(self._title, title, color=FOREGROUND)
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
            lines = [f"<span style='font-size:10pt; font-weight:bold'>{_esc(h)}</span>" for h in heads]
            lines += [f"<span style='font-size:8pt'>{_esc(b)}</span>" for b in tip.split("\n")]
            return "<br>".join(lines), tip
        if len(rs) == 1:
            head = describe_run(rs[0])
        elif rs:
            devices = list(dict.fromkeys(device_description(r) for r in rs))
            labels = [run_label(r) + (" (PREDICTED)" if r.predicted else "") for r in rs]
            head = " vs ".join(labels) + " · " + " / ".join(devices)
        else:
            head = ""
        parts = [f"<span style='font-size:10pt; font-weight:bold'>{_esc(head)}</span>"] if head else []
        if pred_bit:
            parts.append(f"<span style='font-size:9pt; color:#6a2c91'>{_esc(pred_bit)}</span>")
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
            i = int(np.searchsorted(tl.t, x + off, side="right")) - 1 if len(tl) else -1
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
        _set_label(self._readout, _esc(text), color=FOREGROUND, size="8pt")
        for line in self._cross.values():
            line.setPos(x)
            line.setVisible(bool(text))
        return text

    def clear_readout(self) -> None:
        _set_label(self._readout, "")
        for line in self._cross.values():
            line.hide()


def _set_label(label: pg.LabelItem, text: str, **opts: Any) -> None:
    """Set a caption without letting its text width become the layout's minimum width (a long title or
    hover read-out would otherwise widen the plots past the widget's right edge and cut them off)."""
    label.setText(text, **opts)
    label.setMinimumWidth(0)


def _small_font() -> QtGui.QFont:
    f = QtGui.QFont()
    f.setPointSizeF(8.0)
    return f


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --------------------------------------------------------------------------------------------------------
# CategoryPlot


def category_samples(r: RunResult, nbins: int = 1500) -> tuple[F64, dict[str, I64]]:
    """Times to draw the category stack at, and the bytes per category there.

    One time per bin of the run: the instant of the bin's highest allocator (else tensor) level, so the
    stack's top follows the envelope and the exact peak is among the times.
    """
    tl = r.allocator if len(r.allocator) else r.tensor
    if not len(tl):
        return np.zeros(0), {c: np.zeros(0, np.int64) for c in CATEGORIES}
    t, y = tl.t, tl.total
    if len(t) <= nbins:
        times = np.asarray(t, dtype=np.float64)
    else:
        edges = np.linspace(float(t[0]), float(t[-1]), nbins + 1)
        starts = np.searchsorted(t, edges[:-1], side="left")
        starts[0] = 0
        starts = np.unique(starts[starts < len(t)])
        mx = np.maximum.reduceat(y, starts)
        bin_of = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(t))))
        hit = np.flatnonzero(y == mx[bin_of])
        _, first = np.unique(bin_of[hit], return_index=True)
        times = np.asarray(t[hit[first]], dtype=np.float64)
    pk = peak_time(r)
    times = np.unique(np.append(times, pk))
    return times, category_levels_at(r, times)


class CategoryAxisItem(pg.AxisItem):
    """Category names at integer positions (the bars' rows); nothing between them."""

    def __init__(self, orientation: str = "left", **kwargs: Any) -> None:
        super().__init__(orientation, **kwargs)
        self._names: list[str] = []

    def set_names(self, names: Sequence[str]) -> None:
        self._names = list(names)
        self.setTicks([[(float(k), n) for k, n in enumerate(self._names)], []])


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
            _style_plot(p, "")
            p.setTitle(None)  # an empty title still takes a row
            p.setMenuEnabled(False)
        self.bars_plot.showGrid(x=True, y=False, alpha=0.18)
        self.bars_plot.getAxis("bottom").setStyle(maxTickLevel=0)
        self.bars_plot.getAxis("left").setStyle(maxTickLevel=0)
        self.bars_plot.getAxis("left").setWidth(150)
        self.bars_plot.invertY(True)
        self.bars_plot.setLabel("bottom", "bytes at the run's allocator peak", color=FOREGROUND)
        self.stacked_plot.setLabel("bottom", "time", units="s", color=FOREGROUND)
        self.bars_legend = _overlay_legend(self.bars_plot)
        self.stacked_legend = _overlay_legend(self.stacked_plot)
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
            _set_label(self._title, "")
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
        from vggexplorer.core.results.compare import categories_at_peak

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
        label_font = _small_font()
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
        _set_label(
            self._title,
            f"<span style='font-weight:bold'>Categories at the peak</span> — {_esc(desc)}",
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
        _set_label(
            self._title,
            f"<span style='font-weight:bold'>Categories over time (stacked)</span> — {_esc(describe_run(r))}",
            color=FOREGROUND,
            size="9pt",
        )
        self._title.setToolTip("Each time bin drawn at its highest allocator level.")


# --------------------------------------------------------------------------------------------------------
# Export


def ensure_qapp() -> QtWidgets.QApplication:
    """The running QApplication, or a new one; without a display, the offscreen platform (headless CLI)."""
    app = QtWidgets.QApplication.instance()
    if app is None:
        has_display = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
        if (
            not os.environ.get("QT_QPA_PLATFORM")
            and not has_display
            and sys.platform not in ("win32", "darwin")
        ):
            os.environ["QT_QPA_PLATFORM"] = "offscreen"
        app = pg.mkQApp("vggexplorer")
    assert isinstance(app, QtWidgets.QApplication)
    return app


@contextlib.contextmanager
def _offscreen_plot(
    results: Sequence[RunResult],
    width: int,
    height: int,
    x_range: tuple[float, float] | None = None,
    prediction: tuple[RunResult, str] | None = None,
) -> Iterator[MemoryPlot]:
    app = ensure_qapp()
    w = MemoryPlot(wide_lines=True)
    w.full_caption = True  # an export stands alone: each run and what each curve measures in the caption
    w.setAttribute(QtCore.Qt.WidgetAttribute.WA_DontShowOnScreen, True)
    w.resize(width, height)
    w.show()
    try:
        w.set_results(results)
        if prediction is not None:
            w.set_prediction(*prediction)
        if x_range is not None:
            w.top.setXRange(*x_range, padding=0)
        app.processEvents()
        for p in (w.top, w.bottom):  # envelopes for the final pixel width
            for item in p.items:
                if isinstance(item, StepCurveItem):
                    item.refresh()
        yield w
    finally:
        w.close()
        w.deleteLater()


def _prediction_of(plot: MemoryPlot) -> tuple[RunResult, str] | None:
    p = plot.prediction
    return (p, plot._prediction_label) if p is not None else None


def _as_results(target: Any) -> list[RunResult] | None:
    if isinstance(target, RunResult):
        return [target]
    if isinstance(target, list | tuple) and target and all(isinstance(r, RunResult) for r in target):
        return list(target)
    return None


def _grab_png(widget: QtWidgets.QWidget, path: Path) -> None:
    img = widget.grab().toImage()
    if not img.save(str(path), "PNG"):  # type: ignore[call-overload]  # stubs: bytes; runtime: str
        raise OSError(f"could not write PNG {path.name}")


def export_png(
    target: MemoryPlot | pg.GraphicsView | RunResult | Sequence[RunResult],
    path: Path | str,
    width: int = 1600,
    height: int = 1000,
) -> None:
    """Write a PNG of ``width``×``height`` pixels, atomically.

    ``target``: runs (drawn on a fresh offscreen MemoryPlot), a MemoryPlot (its runs and x range redrawn at
    that size, so the curves are computed for the export's pixels) or any pyqtgraph view (scaled render).
    """
    path = Path(path)
    results = _as_results(target)
    if results is None and isinstance(target, MemoryPlot):
        results = target.results
        xr = tuple(target.top.viewRange()[0])
        with _offscreen_plot(
            results, width, height, (float(xr[0]), float(xr[1])), _prediction_of(target)
        ) as w:
            atomic_write_via(path, lambda p: _grab_png(w, p))
        return
    if results is not None:
        with _offscreen_plot(results, width, height) as w:
            atomic_write_via(path, lambda p: _grab_png(w, p))
        return
    if isinstance(target, QtWidgets.QGraphicsView):
        view = target

        def write(p: Path) -> None:
            img = QtGui.QImage(width, height, QtGui.QImage.Format.Format_ARGB32)
            img.fill(QtGui.QColor("white"))
            painter = QtGui.QPainter(img)
            painter.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
            view.render(painter, QtCore.QRectF(0, 0, width, height))
            painter.end()
            if not img.save(str(p), "PNG"):  # type: ignore[call-overload]  # stubs: bytes; runtime: str
                raise OSError(f"could not write PNG {path.name}")

        atomic_write_via(path, write)
        return
    raise TypeError(f"cannot export {type(target).__name__} as PNG")


# ---- SVG: pyqtgraph issue #3495
#
# pyqtgraph 0.14.0 builds its SVG by letting QSvgGenerator paint each item and then rewriting every path's
# ``d`` attribute into scene coordinates (``correctCoordinates``). It splits ``d`` on spaces and expects
# every token to be ``x,y`` (with an optional command letter glued on). Qt ≥ 6.11's QSvgGenerator closes
# subpaths with a bare ``Z`` token, so the split gives one value: "ValueError: not enough values to unpack".
# Our fix wraps ``correctCoordinates`` for the duration of one export: it takes the ``Z`` tokens out of each
# path (remembering where), lets pyqtgraph transform the coordinates (one output token per input token),
# then puts the ``Z`` tokens back at the same places. Everything else (clipping, text, stroke widths) stays
# pyqtgraph's. We measured the alternative — painting the whole scene into one QSvgGenerator — and rsvg
# renders it wrong (no clip paths, transforms misapplied), which is why pyqtgraph does it per item.


def _svg_module() -> Any:
    return importlib.import_module("pyqtgraph.exporters.SVGExporter")


def _strip_closepath(node: Any) -> list[tuple[Any, list[int]]]:
    found: list[tuple[Any, list[int]]] = []
    for path in node.getElementsByTagName("path"):
        tokens = path.getAttribute("d").split()
        kept: list[str] = []
        closes: list[int] = []
        for tok in tokens:
            if tok in ("Z", "z"):
                closes.append(len(kept))
            elif tok[:1] in ("Z", "z") and len(tok) > 1:  # "Z" glued to the next command: "ZM1,2"
                closes.append(len(kept))
                kept.append(tok[1:])
            else:
                kept.append(tok)
        if closes:
            path.setAttribute("d", " ".join(kept))
            found.append((path, closes))
    return found


def _restore_closepath(found: list[tuple[Any, list[int]]]) -> None:
    for path, closes in found:
        tokens = path.getAttribute("d").split()
        for k in reversed(closes):
            tokens.insert(k, "Z")
        path.setAttribute("d", " ".join(tokens))


@contextlib.contextmanager
def _svg_closepath_fix() -> Iterator[None]:
    """Patch ``pyqtgraph.exporters.SVGExporter.correctCoordinates`` for one export (see above)."""
    mod = _svg_module()
    original: Callable[..., Any] = mod.correctCoordinates

    def correct(node: Any, defs: Any, item: Any, options: Any) -> Any:
        found = _strip_closepath(node)
        result = original(node, defs, item, options)
        _restore_closepath(found)
        return result

    mod.correctCoordinates = correct
    try:
        yield
    finally:
        mod.correctCoordinates = original


def svg_bytes(widget: pg.GraphicsView) -> bytes:
    """The SVG of a pyqtgraph view's whole scene (with the #3495 work-around)."""
    from pyqtgraph.exporters import SVGExporter

    with _svg_closepath_fix():
        data = SVGExporter(widget.scene()).export(toBytes=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    out = bytes(data)
    if not out.strip().endswith(b"</svg>"):
        raise OSError("the SVG exporter produced an incomplete document")
    return out


def export_svg(
    target: MemoryPlot | pg.GraphicsView | RunResult | Sequence[RunResult],
    path: Path | str,
    width: int = 1600,
    height: int = 1000,
) -> None:
    """Write an SVG (viewBox ``width``×``height``), atomically. Curves carry at most ~4 points per pixel
    column (the same step envelope as on screen), so paths stay small for any run length."""
    path = Path(path)
    results = _as_results(target)
    xr: tuple[float, float] | None = None
    pred: tuple[RunResult, str] | None = None
    if results is None and isinstance(target, MemoryPlot):
        results = target.results
        r0 = target.top.viewRange()[0]
        xr = (float(r0[0]), float(r0[1]))
        pred = _prediction_of(target)
    if results is not None:
        with _offscreen_plot(results, width, height, xr, pred) as w:
            w.clear_readout()
            data = svg_bytes(w)
    elif isinstance(target, pg.GraphicsView):
        data = svg_bytes(target)
    else:
        raise TypeError(f"cannot export {type(target).__name__} as SVG")
    atomic_write_bytes(path, data)


def export_run_plots(
    result: RunResult | Sequence[RunResult],
    png_path: Path | None,
    svg_path: Path | None,
    width: int = 1600,
    height: int = 1000,
) -> None:
    """The CLI's plots of one run (or several overlaid): PNG and/or SVG, headless, written atomically."""
    ensure_qapp()
    results = _as_results(result)
    if results is None:
        raise TypeError("export_run_plots needs a RunResult or a list of them")
    with _offscreen_plot(results, width, height) as w:
        w.clear_readout()
        if png_path is not None:
            atomic_write_via(Path(png_path), lambda p: _grab_png(w, p))
        if svg_path is not None:
            atomic_write_bytes(Path(svg_path), svg_bytes(w))
