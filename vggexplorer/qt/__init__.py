"""Everything that needs Qt, and nothing else: widgets, Qt models over the core, workers, plots.

``main_window`` composes the views (``actions``: menus; ``file_actions``: open, save, export;
``run_controller``: the run in flight); ``head/`` is the head editor, ``plots/`` the memory and category
plots and their exporters; ``runs`` (the runs list and compare panel) and ``run_controls`` are views of the
core's ``SessionModel``; ``layer_table``, ``predict_panel`` (the prediction strip and the Qt side of the
prediction service), ``message_bar``, ``settings`` (QSettings) and ``worker`` (QObject workers that drive
the core's generators off the GUI thread). Nothing here imports torch or NVML: runs and predictions happen
in child processes started through ``core.run.child``.
"""

from vggexplorer._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {"main_window": ["MainWindow"]})
