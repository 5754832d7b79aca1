"""Live partial results: :class:`EngineAccumulator` folds a run's Progress chunks into a growing RunResult.

Qt-free: the GUI's worker thread feeds it (see ``vggexplorer.qt.worker.Accumulator``) and hands each
snapshot to the live plots.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from vggexplorer.core.results.meta import RunEnvironment, RunMeta


class EngineAccumulator:
    """Folds the engine's ``Progress`` chunks (new tensor-level rows) into a growing partial ``RunResult``
    for live plots. Runs on the worker thread; each ``snapshot`` is a new object for the GUI thread.

    The last Progress of a run carries the finished result: from then on ``snapshot`` returns that.
    """

    COLUMNS = ("t", "delta", "total", "phase", "module", "iteration")
    DTYPES: ClassVar[dict[str, Any]] = {
        "t": np.float64,
        "delta": np.int64,
        "total": np.int64,
        "phase": np.int8,
        "module": np.int32,
        "iteration": np.int32,
    }

    def __init__(self, name: str, config: RunMeta, environment: RunEnvironment | None = None) -> None:
        self.name = name
        self.config = config
        self.environment = environment or RunEnvironment()
        self._parts: dict[str, list[np.ndarray]] = {c: [] for c in self.COLUMNS}
        self._strings: tuple[str, ...] = ()
        self._final: Any = None

    def feed(self, progress: Any) -> bool:
        final = getattr(progress, "result", None)
        if final is not None:
            self._final = final
            return True
        strings = getattr(progress, "strings", ())
        if strings:
            self._strings = tuple(strings)
        chunk = getattr(progress, "chunk", None)
        if not chunk:
            return False
        for c in self.COLUMNS:
            col = chunk.get(c)
            if col is None:
                return False
        for c in self.COLUMNS:
            self._parts[c].append(np.asarray(chunk[c], dtype=self.DTYPES[c]))
        return True

    def snapshot(self) -> Any:
        if self._final is not None:
            return self._final
        from vggexplorer.core.results.result import DeviceSamples, RunResult, Summary, Timeline

        cols: dict[str, np.ndarray] = {}
        for c in self.COLUMNS:
            parts = self._parts[c]
            arr = np.concatenate(parts) if parts else np.zeros(0, self.DTYPES[c])
            self._parts[c] = [arr]  # the next snapshot concatenates old + new only once
            cols[c] = arr
        n = len(cols["t"])
        tl = Timeline(
            t=cols["t"],
            delta=cols["delta"],
            total=cols["total"],
            phase=cols["phase"],
            category=np.zeros(n, np.int8),
            op=np.full(n, -1, np.int32),
            module=cols["module"],
            iteration=cols["iteration"],
        )
        peak = tl.peak
        summary = Summary(peak, peak, None, None, 0, None)
        return RunResult(
            config=self.config,
            environment=self.environment,
            summary=summary,
            strings=list(self._strings),
            tensor=tl,
            allocator=Timeline(),
            device=DeviceSamples(),
            spans=[],
            layers=[],
            name=self.name,
            notes=["live: tensor level only until the run ends"],
        )
