"""What a run reports while it runs: :class:`Progress`, yielded by ``engine.run_iter``.

Its own module, free of torch and Qt, because it crosses the process boundary: a run's child process
pickles each Progress to the GUI process, which unpickles it without importing the engine (and torch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vggexplorer.core.results.result import RunResult


@dataclass(frozen=True)
class Progress:
    """What a run reports while it runs (yielded by ``run_iter``)."""

    fraction: float  # 0..1
    phase: str
    module: str
    iteration: int
    message: str
    #: new tensor-level rows since the previous Progress: columns t, delta, total, phase, module, iteration
    #: (``module`` indexes ``strings``); None when there are none.
    chunk: dict[str, np.ndarray] | None = None
    strings: tuple[str, ...] = ()
    #: set on the last Progress only: the finished (or partial) result
    result: RunResult | None = None
