"""What a run produces: the data contract shared by the engine, the predictor, plots, the GUI and files.

Everything here is plain data (numpy arrays, str, int) that can cross threads and does not keep a model
alive. Timelines are columnar (one numpy array per column, not a dict per point) so a million events stay
compact in memory and in ``run.json``.

Meanings (fixed; every view agrees on them):

- ``tensor`` timeline — tensor level: bytes of all live tensor storages the run holds, one row per storage
  allocation or free, with op, module and phase. Exact, from the storages themselves.
- ``allocator`` timeline — allocator level: on CUDA the caching allocator's allocated bytes (``reserved``
  filled with reserved bytes, ``active`` with active bytes); on CPU the c10 CPU allocator's running total
  (tensors and kernel-internal buffers). ``reserved``/``active`` are None on CPU.
- ``device`` samples — "nvidia-smi level": NVML device used and this process's used memory on CUDA; on CPU
  ``process`` is the process RSS and ``device_used`` is None.
- Allocator − tensor = untracked workspace; reserved − allocated = allocator overhead;
  process − reserved = non-PyTorch (CUDA context, kernels, libraries).

All times are seconds on one clock: ``time.perf_counter() - t0`` where ``t0`` is the run's start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from vggexplorer.core.results.meta import RunEnvironment, RunMeta

RUN_FORMAT = "vggexplorer.run/2"
#: The previous format: still read, its legacy keys mapped (see ``meta``).
RUN_FORMAT_V1 = "vggexplorer.run/1"

PHASES: tuple[str, ...] = ("setup", "forward", "loss", "backward", "optimizer", "zero_grad", "idle")
CATEGORIES: tuple[str, ...] = (
    "parameters",
    "buffers",
    "inputs",
    "activations",  # saved for backward (alive after the forward of their layer)
    "temporaries",  # freed before the layer's forward ended, or during backward
    "gradients",
    "optimizer_state",
    "outputs",  # the model output / loss kept by the caller
    "untracked_workspace",  # allocator − tracked tensors (derived, not a row category)
    "allocator_overhead",  # reserved − allocated (CUDA, derived)
    "non_pytorch",  # NVML process − reserved (CUDA context, kernels; derived)
)
#: Categories that rows of the tensor timeline can carry; the rest are derived differences.
ROW_CATEGORIES = CATEGORIES[:8]

Status = Literal["ok", "oom", "cancelled", "error"]

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]
I8 = npt.NDArray[np.int8]


def _i64(x: Any = ()) -> I64:
    return np.asarray(x, dtype=np.int64)


@dataclass
class Timeline:
    """One row per allocation (``delta`` > 0) or free (``delta`` < 0), in time order.

    ``total`` is the level after the event. ``phase``, ``category`` index ``PHASES``/``CATEGORIES``;
    ``op`` and ``module`` index ``strings`` (the owning result's string table; -1 = unknown).
    ``reserved``/``active`` are only set for the CUDA allocator timeline.
    """

    t: F64 = field(default_factory=lambda: np.zeros(0, np.float64))
    delta: I64 = field(default_factory=_i64)
    total: I64 = field(default_factory=_i64)
    phase: I8 = field(default_factory=lambda: np.zeros(0, np.int8))
    category: I8 = field(default_factory=lambda: np.zeros(0, np.int8))
    op: I32 = field(default_factory=lambda: np.zeros(0, np.int32))
    module: I32 = field(default_factory=lambda: np.zeros(0, np.int32))
    iteration: I32 = field(default_factory=lambda: np.zeros(0, np.int32))
    reserved: I64 | None = None
    active: I64 | None = None
    #: Tensor timeline: a storage id per row (an allocation and its free share it); None elsewhere.
    storage: I32 | None = None

    def __len__(self) -> int:
        return int(self.t.shape[0])

    @property
    def peak(self) -> int:
        return int(self.total.max()) if len(self) else 0

    @property
    def peak_index(self) -> int:
        return int(self.total.argmax()) if len(self) else -1


@dataclass
class DeviceSamples:
    """Background samples on the run clock. Bytes; None where not available on this device."""

    t: F64 = field(default_factory=lambda: np.zeros(0, np.float64))
    process: I64 = field(default_factory=_i64)  # NVML process used (CUDA) or RSS (CPU)
    device_used: I64 | None = None  # NVML device used (CUDA)
    driver_reserved: I64 | None = None  # NVML v2 "reserved" (driver/firmware), CUDA
    source: str = ""  # e.g. "NVML process used memory, GPU-xxxx" or "RSS (/proc/self/statm)"
    achieved_hz: float = 0.0  # rate of the time column (device series on CUDA, RSS on CPU)
    #: rate at which ``process`` was read (CUDA: lower than the device series; the last read value is held
    #: on the ticks in between); 0 = every tick (``achieved_hz``), e.g. run files written before this field
    process_hz: float = 0.0

    def __len__(self) -> int:
        return int(self.t.shape[0])


@dataclass(frozen=True)
class Span:
    """A module's forward or backward (or a whole phase when ``module`` is ""), on the run clock."""

    module: str
    phase: str
    t0: float
    t1: float
    iteration: int


@dataclass(frozen=True)
class LayerStats:
    """One row of the per-layer table (torchinfo-like, plain data)."""

    name: str  # module path: features.3, avgpool, classifier.0 ...
    type: str
    head_index: int  # -1 for backbone layers
    output_shape: tuple[int, ...]
    output_bytes: int
    saved_bytes: int  # bytes this layer's forward left alive for backward
    param_bytes: int
    grad_bytes: int
    peak_forward_bytes: int  # tensor-level peak during the layer's forward
    peak_backward_bytes: int
    peak_forward_allocator_bytes: int
    peak_backward_allocator_bytes: int
    forward_s: float
    backward_s: float


@dataclass(frozen=True)
class Fault:
    kind: Literal["oom", "cancelled", "error"]
    message: str
    layer: str  # module path or ""
    phase: str
    iteration: int


@dataclass(frozen=True)
class Summary:
    peak_allocated_bytes: int  # allocator level
    peak_tensor_bytes: int  # tensor level
    peak_reserved_bytes: int | None  # CUDA only
    peak_device_bytes: int | None  # NVML process used (CUDA) / RSS (CPU)
    param_bytes: int
    output_shape: tuple[int, ...] | None
    peak_time_s: float = 0.0
    peak_phase: str = ""
    peak_module: str = ""


@dataclass
class RunResult:
    """A finished (or partial: cancelled, OOM, error) run, measured or predicted."""

    config: RunMeta
    environment: RunEnvironment
    summary: Summary
    strings: list[str]
    tensor: Timeline
    allocator: Timeline
    device: DeviceSamples
    spans: list[Span]
    layers: list[LayerStats]
    status: Status = "ok"
    fault: Fault | None = None
    predicted: bool = False  # True for a replay through the allocator model: always labelled so
    name: str = ""
    notes: list[str] = field(default_factory=list)
    #: CUDA only: the allocator trace from ``torch.cuda.memory._record_memory_history`` as plain event
    #: dicts (action, addr, size, stream, time_s on the run clock) for snapshot export; None elsewhere.
    allocator_trace: list[dict[str, Any]] | None = None

    def string(self, i: int) -> str:
        return self.strings[i] if 0 <= i < len(self.strings) else ""
