"""MemoryPlot / CategoryPlot / exporters, with synthetic RunResults (CPU, CUDA-like, predicted) and a real
tiny CPU run when the engine is importable."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PySide6 import QtCore, QtGui

from vggexplorer.core.base.units import fmt_bytes
from vggexplorer.core.results.analysis import categories_at_peak
from vggexplorer.core.results.result import RunResult
from vggexplorer.core.results.synthetic import synthetic_run
from vggexplorer.qt.plots import export as plot_export
from vggexplorer.qt.plots.category_plot import CategoryPlot
from vggexplorer.qt.plots.export import export_png, export_run_plots, export_svg
from vggexplorer.qt.plots.items import StepCurveItem
from vggexplorer.qt.plots.memory_plot import MemoryPlot


@pytest.fixture(scope="module")
def cpu_run() -> RunResult:
    return synthetic_run(head="fc", input_hw=224, batch=4)


@pytest.fixture(scope="module")
def cuda_run() -> RunResult:
    return synthetic_run(head="fcn", input_hw=384, batch=4, cuda=True, workspace_bytes=64 * 2**20)


@pytest.fixture(scope="module")
def predicted_run() -> RunResult:
    return synthetic_run(head="fcn", input_hw=384, batch=4, cuda=True, predicted=True)


def _plot(qtbot: Any, results: list[RunResult], w: int = 1000, h: int = 700) -> MemoryPlot:
    plot = MemoryPlot()
    qtbot.addWidget(plot)
    plot.resize(w, h)
    plot.show()
    qtbot.waitExposed(plot)
    plot.set_results(results)
    return plot


# ---- MemoryPlot


def test_cpu_run_curves_hold_the_data_and_say_cpu(qtbot: Any, cpu_run: RunResult) -> None:
    p = _plot(qtbot, [cpu_run])
    curves = p.curves()
    assert set(curves) == {"allocated", "tensors", "process"}
    t, y = curves["allocated"].series
    assert t is cpu_run.allocator.t and y is cpu_run.allocator.total  # no copy of a big timeline
    names = {k: c.name() for k, c in curves.items()}
    assert names == {"allocated": "CPU allocator total", "tensors": "live tensors", "process": "process RSS"}
    assert "GPU" not in " ".join(names.values()) and "NVML" not in " ".join(names.values())
    assert "CPU allocator" in p.top.titleLabel.text and "RSS" in p.bottom.titleLabel.text
    # phases shaded, layer ticks drawn, peak labelled with its value
    for bands in p._bands.values():  # fwd, bwd, optimizer shaded in both plots
        assert [ph for ph, _, _ in bands.intervals] == ["forward", "backward", "optimizer"]
    assert len(p._ticks["top"].getData()[0]) == 2 * len([s for s in cpu_run.spans if s.module])
    peak = next(c for c in p._curves[0] if c.kind == "allocated")
    assert peak.label is not None and peak.label.textItem.toPlainText() == (
        f"peak {fmt_bytes(cpu_run.allocator.peak)}"
    )


def test_cuda_run_has_reserved_and_nvml(qtbot: Any, cuda_run: RunResult) -> None:
    p = _plot(qtbot, [cuda_run])
    curves = p.curves()
    assert set(curves) == {"allocated", "reserved", "tensors", "device_used", "process"}
    assert curves["reserved"].series[1] is cuda_run.allocator.reserved
    assert curves["device_used"].name() == "NVML device used (whole GPU)"
    assert curves["process"].name() == "NVML this process"
    assert "nvidia-smi" in p.bottom.titleLabel.text


def test_predicted_curves_are_labelled_and_styled_apart(
    qtbot: Any, cuda_run: RunResult, predicted_run: RunResult
) -> None:
    p = _plot(qtbot, [cuda_run, predicted_run])
    measured, predicted = p.curves(0), p.curves(1)
    assert all("predicted" not in c.name() for c in measured.values())
    for kind in ("allocated", "reserved", "tensors"):
        assert "predicted" in predicted[kind].name()
        assert predicted[kind].opts["pen"].style() == QtCore.Qt.PenStyle.DashDotLine
        assert measured[kind].opts["pen"].style() != QtCore.Qt.PenStyle.DashDotLine
    assert "PREDICTED" in p._title.text
    assert "predicted" in p.top.titleLabel.text


def test_hover_readout_names_time_phase_module_and_values(qtbot: Any, cpu_run: RunResult) -> None:
    p = _plot(qtbot, [cpu_run])
    span = next(s for s in cpu_run.spans if s.module == "features.3" and s.phase == "forward")
    x = span.t0 + 0.0035  # inside the layer, after its activation was allocated
    text = p.readout(x)
    i = int(np.searchsorted(cpu_run.allocator.t, x, side="right")) - 1
    assert f"t = {x:.4f} s" in text and "forward" in text and "features.3" in text
    assert f"CPU allocator {fmt_bytes(int(cpu_run.allocator.total[i]))}" in text
    assert "RSS" in text
    # the mouse path: a move over the top plot updates the read-out label and the crosshair
    centre = p.top.vb.mapViewToScene(QtCore.QPointF(x, 1.0))
    p._mouse_moved((centre,))
    assert "features.3" in p._readout.text
    assert p._cross["top"].isVisible() and abs(p._cross["top"].value() - x) < 1e-3


def test_live_update_reuses_curves(qtbot: Any, cpu_run: RunResult) -> None:
    p = _plot(qtbot, [cpu_run])
    before = p.curves()["allocated"]
    bigger = synthetic_run(head="fc", input_hw=224, batch=4, extra_events=2000)
    p.append_partial(bigger)
    assert p.curves()["allocated"] is before  # setData on the existing item, nothing rebuilt
    assert before.series[0] is bigger.allocator.t


def test_million_points_redraw(qtbot: Any) -> None:
    big = synthetic_run(head="fcn", input_hw=384, batch=8, extra_events=1_000_000)
    assert len(big.allocator) > 1_000_000
    p = _plot(qtbot, [big], 1600, 1000)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        p.set_results([big])
        p.grab()
        times.append(time.perf_counter() - t0)
    drawn = p.curves()["allocated"].getData()[0]
    assert len(drawn) <= 4 * 1600 + 8  # the envelope, not a million points
    print(f"\n1M-event run: set_results + grab at 1600×1000, median {1000 * float(np.median(times)):.1f} ms")


# ---- CategoryPlot


def test_category_bars_show_bytes_at_the_peak(qtbot: Any, cpu_run: RunResult, cuda_run: RunResult) -> None:
    w = CategoryPlot()
    qtbot.addWidget(w)
    w.set_results([cpu_run, cuda_run])
    at = categories_at_peak(cuda_run)
    assert w.values[(1, "parameters")] == at["parameters"]
    assert w.values[(1, "allocator_overhead")] == at["allocator_overhead"]
    w.set_mode("stacked")
    assert w.mode == "stacked" and w.values[(0, "parameters")] == categories_at_peak(cpu_run)["parameters"]
    with pytest.raises(ValueError, match="mode must be one of"):
        w.set_mode("pie")


# ---- export


def _png_stats(path: Path) -> tuple[int, int, int]:
    img = QtGui.QImage(str(path))
    assert not img.isNull(), f"{path} is not a readable image"
    w, h = img.width(), img.height()
    ptr = img.convertToFormat(QtGui.QImage.Format.Format_RGB32).constBits()
    arr = np.frombuffer(ptr, np.uint8).reshape(h, w, 4)
    plot_area = arr[h // 4 : h * 3 // 4, w // 8 : w * 7 // 8, :3]
    non_white = int((plot_area.min(axis=2) < 200).sum())
    return w, h, non_white


def test_export_png_of_runs_and_of_a_widget(qtbot: Any, tmp_path: Path, cpu_run: RunResult) -> None:
    out = tmp_path / "m.png"
    export_png(cpu_run, out, width=1200, height=800)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    w, h, ink = _png_stats(out)
    assert (w, h) == (1200, 800) and ink > 2000
    p = _plot(qtbot, [cpu_run])
    out2 = tmp_path / "w.png"
    export_png(p, out2)
    assert _png_stats(out2)[:2] == (1600, 1000)


def test_export_svg_is_valid_and_renders(tmp_path: Path, cpu_run: RunResult, cuda_run: RunResult) -> None:
    out = tmp_path / "m.svg"
    export_svg([cpu_run, cuda_run], out)
    root = ET.parse(out).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    paths = root.findall(f".//{ns}path")
    lines = root.findall(f".//{ns}polyline")
    assert paths and len(lines) > 20  # Qt writes curves as polylines, fills and markers as paths
    longest = max(len(e.get("d", "") or e.get("points", "")) for e in [*paths, *lines])
    assert longest < 400_000  # downsampled to the export's pixels, not a million points
    text = out.read_text()
    assert "CPU allocator total" in text and "NVML this process" in text and "peak" in text
    mod = importlib.import_module("pyqtgraph.exporters.SVGExporter")
    assert mod.correctCoordinates.__name__ == "correctCoordinates"  # our patch is gone again
    rsvg = shutil.which("rsvg-convert")
    if rsvg is None:
        pytest.skip("rsvg-convert is not installed (Debian: librsvg2-bin); the SVG parsed as XML only")
    png = tmp_path / "m_svg.png"
    subprocess.run([rsvg, str(out), "-o", str(png)], check=True, timeout=60)
    w, h, ink = _png_stats(png)
    assert (w, h) == (1600, 1000) and ink > 2000


def test_closepath_tokens_survive_the_coordinate_rewrite() -> None:
    from xml.dom import minidom

    doc = minidom.parseString('<g><path d="M0,0 L10,0 L10,10 Z M20,20 L30,30 Z"/></g>')
    found = plot_export._strip_closepath(doc.documentElement)
    path = doc.getElementsByTagName("path")[0]
    assert path.getAttribute("d") == "M0,0 L10,0 L10,10 M20,20 L30,30"  # what pyqtgraph can parse
    path.setAttribute("d", "M1,1 L11,1 L11,11 M21,21 L31,31 ")  # pyqtgraph's rewrite: one token per token
    plot_export._restore_closepath(found)
    assert path.getAttribute("d") == "M1,1 L11,1 L11,11 Z M21,21 L31,31 Z"


def test_failed_export_keeps_the_old_file(tmp_path: Path, cpu_run: RunResult, monkeypatch: Any) -> None:
    out = tmp_path / "m.svg"
    out.write_text("old")

    def boom(widget: object) -> bytes:
        raise RuntimeError("exporter failed")

    monkeypatch.setattr(plot_export, "svg_bytes", boom)
    with pytest.raises(RuntimeError):
        export_run_plots(cpu_run, None, out)
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.svg"]  # no temp file left behind


def test_export_run_plots_writes_both(tmp_path: Path, cuda_run: RunResult) -> None:
    export_run_plots(cuda_run, tmp_path / "a.png", tmp_path / "a.svg")
    assert _png_stats(tmp_path / "a.png")[:2] == (1600, 1000)
    ET.parse(tmp_path / "a.svg")


def test_real_tiny_cpu_run_plots(qtbot: Any, tmp_path: Path) -> None:
    engine = pytest.importorskip("vggexplorer.core.run.engine")
    from vggexplorer.core.model.config import RunConfig
    from vggexplorer.core.model.head import preset

    r = engine.run(RunConfig(head=preset("gap"), device="cpu", batch=1, input_hw=(64, 64), sample_hz=200))
    assert r.status == "ok"
    p = _plot(qtbot, [r])
    assert {"allocated", "tensors", "process"} <= set(p.curves())
    assert any(isinstance(i, StepCurveItem) for i in p.top.items)
    mid = float(r.tensor.t[len(r.tensor) // 2])
    assert "t = " in p.readout(mid) and "CPU allocator" in p.readout(mid)
    export_run_plots(r, tmp_path / "r.png", tmp_path / "r.svg")
    assert _png_stats(tmp_path / "r.png")[2] > 1000
    ET.parse(tmp_path / "r.svg")


def test_every_shaded_phase_has_a_brush() -> None:
    from vggexplorer.core.results.analysis import SHADED_PHASES
    from vggexplorer.qt.plots.style import PHASE_BRUSHES

    assert tuple(PHASE_BRUSHES) == SHADED_PHASES


def test_package_re_exports_its_public_names() -> None:
    import vggexplorer.qt.plots as plots

    assert plots.MemoryPlot is MemoryPlot and plots.CategoryPlot is CategoryPlot
    assert plots.export_svg is export_svg and plots.StepCurveItem is StepCurveItem
    assert set(plots.__all__) <= set(dir(plots))
    with pytest.raises(AttributeError):
        _ = plots.no_such_name
