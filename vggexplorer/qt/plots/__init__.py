"""Plots: the Qt half of showing a run's memory. ``memory_plot`` (``MemoryPlot``: allocator level above,
nvidia-smi or RSS level below, on one time axis, several runs and a prediction overlaid), ``category_plot``
(``CategoryPlot``: bytes per category as bars at the peak or stacked over time), ``export`` (PNG and SVG,
headless for the CLI, written atomically), ``items`` (the graphics items they draw with: bytes axis, step
curve drawn as its per-pixel envelope, phase bands) and ``style`` (colours, pens, fonts). What the plots
compute and say about a run — step functions, categories at a time, phases, alignment, labels — is Qt-free
and lives in ``core.results.analysis`` and ``core.results.wording``.

Names are re-exported lazily: importing this package imports neither pyqtgraph nor PySide6 (nor torch)
until one of them is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vggexplorer.qt.plots.category_plot import CategoryPlot
    from vggexplorer.qt.plots.export import (
        ensure_qapp,
        export_png,
        export_run_plots,
        export_svg,
        svg_bytes,
    )
    from vggexplorer.qt.plots.items import BytesAxisItem, CategoryAxisItem, PhaseBands, StepCurveItem
    from vggexplorer.qt.plots.memory_plot import MemoryPlot

_EXPORTS: dict[str, str] = {
    "MemoryPlot": "memory_plot",
    "CategoryPlot": "category_plot",
    "BytesAxisItem": "items",
    "CategoryAxisItem": "items",
    "PhaseBands": "items",
    "StepCurveItem": "items",
    "ensure_qapp": "export",
    "export_png": "export",
    "export_run_plots": "export",
    "export_svg": "export",
    "svg_bytes": "export",
}

__all__ = [
    "BytesAxisItem",
    "CategoryAxisItem",
    "CategoryPlot",
    "MemoryPlot",
    "PhaseBands",
    "StepCurveItem",
    "ensure_qapp",
    "export_png",
    "export_run_plots",
    "export_svg",
    "svg_bytes",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
