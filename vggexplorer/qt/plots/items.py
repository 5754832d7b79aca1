"""The plots' graphics items: a bytes axis, a step curve that draws only its per-pixel envelope, the phase
bands of a run in one item, and the category-name axis of the bar chart.

A memory level is a step function (it holds between events), so ``StepCurveItem`` draws a per-pixel-column
*step envelope* of what is in view (``core.results.analysis.step_envelope``): at most four points per pixel
column, and the exact steps when fewer events than pixels are in view. Peaks are never lost, idle stretches
are flat (not ramps), and the cost of a redraw does not grow with the number of points drawn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyqtgraph as pg
from PySide6 import QtCore, QtGui

from vggexplorer.core.base.units import GiB, KiB, MiB
from vggexplorer.core.results.analysis import step_envelope
from vggexplorer.qt.plots.style import PHASE_BRUSHES

F64 = npt.NDArray[np.float64]


def bytes_unit(value: float) -> tuple[int, str]:
    a = abs(value)
    for size, name in ((GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")):
        if a >= size:
            return size, name
    return 1, "B"


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


class CategoryAxisItem(pg.AxisItem):
    """Category names at integer positions (the bars' rows); nothing between them."""

    def __init__(self, orientation: str = "left", **kwargs: Any) -> None:
        super().__init__(orientation, **kwargs)
        self._names: list[str] = []

    def set_names(self, names: Sequence[str]) -> None:
        self._names = list(names)
        self.setTicks([[(float(k), n) for k, n in enumerate(self._names)], []])
