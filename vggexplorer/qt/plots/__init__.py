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

from vggexplorer._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "category_plot": ["CategoryPlot"],
        "export": ["ensure_qapp", "export_png", "export_run_plots", "export_svg", "svg_bytes"],
        "items": ["BytesAxisItem", "CategoryAxisItem", "PhaseBands", "StepCurveItem"],
        "memory_plot": ["MemoryPlot"],
    },
)
