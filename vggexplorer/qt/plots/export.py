"""Exports of the memory plot, headless or from the GUI: PNG and SVG, written atomically.

``ensure_qapp`` gives the CLI a QApplication (offscreen without a display); ``export_png`` /
``export_svg`` draw runs (or a shown MemoryPlot's runs and x range) on a fresh offscreen MemoryPlot at the
export's size; ``export_run_plots`` writes the CLI's plots. SVG goes through pyqtgraph's ``SVGExporter``
with a fix for pyqtgraph issue #3495 applied only for the duration of our export call
(see ``_svg_closepath_fix``).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from vggexplorer.core.base.fileio import atomic_write_bytes, atomic_write_via
from vggexplorer.core.results.result import RunResult
from vggexplorer.qt.plots.items import StepCurveItem
from vggexplorer.qt.plots.memory_plot import MemoryPlot


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
    return (p, plot.prediction_label) if p is not None else None


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
