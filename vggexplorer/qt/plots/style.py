"""How the plots look: colours per curve kind, run, phase and category, pen styles, fonts, and the helpers
that give every plot the same axes, legend and captions."""

from __future__ import annotations

from typing import Any

import pyqtgraph as pg
from PySide6 import QtCore, QtGui

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
#: One brush per shaded phase (``core.results.analysis.SHADED_PHASES``).
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


def make_pen(colour: str, style: QtCore.Qt.PenStyle, width: float) -> QtGui.QPen:
    pen = pg.mkPen(colour, width=width, style=style)
    pen.setCosmetic(True)
    return pen


def style_plot(p: pg.PlotItem, title: str) -> None:
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


def overlay_legend(p: pg.PlotItem) -> pg.LegendItem:
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


def set_label(label: pg.LabelItem, text: str, **opts: Any) -> None:
    """Set a caption without letting its text width become the layout's minimum width (a long title or
    hover read-out would otherwise widen the plots past the widget's right edge and cut them off)."""
    label.setText(text, **opts)
    label.setMinimumWidth(0)


def small_font() -> QtGui.QFont:
    f = QtGui.QFont()
    f.setPointSizeF(8.0)
    return f


def esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
