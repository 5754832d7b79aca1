"""``execute``: the step program once, traced, in the calling thread — measured or fake.

``execute(config, fake=True)`` runs it without memory or arithmetic (meta tensors, or CPU fake tensors under
``FakeTensorMode`` for autocast and channels_last: :func:`fake_device`); the tensor-level timeline of a fake
run equals the measured CPU one event for event, byte for byte. Faults (OOM, cancel, errors) become the
:class:`Execution`'s status and :class:`Fault`; every reference is dropped and the tracer left in ``finally``.
Also: which device a config runs on (:func:`resolve_device`) and creating the CUDA context up front.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from vggexplorer.core.model.config import (
    ConfigError,
    RunConfig,
    device_dtype_problem,
)
from vggexplorer.core.results.result import (
    Fault,
    Status,
)
from vggexplorer.core.run.hygiene import _drain_autograd, _give_back_memory
from vggexplorer.core.run.program import LayerInfo, _collect_layers, _program, _State
from vggexplorer.core.run.tracer import Cancelled, FailAt, Tracer, is_oom_error


def resolve_device(device: str) -> torch.device:
    """``auto`` → cuda if available else cpu; checks that a CUDA device exists."""
    if device == "auto":
        return (
            torch.device("cuda", torch.cuda.current_device())
            if torch.cuda.is_available()
            else torch.device("cpu")
        )
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r}: CUDA is not available on this machine (use --device cpu)")
        idx = dev.index if dev.index is not None else torch.cuda.current_device()
        if idx >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) present")
        dev = torch.device("cuda", idx)
    return dev


def fake_device(config: RunConfig) -> str:
    """Where ``execute(fake=True)`` runs ``config``: meta tensors, or CPU fake tensors (FakeTensorMode).

    Both allocate nothing and compute nothing. Meta tensors skip FakeTensorMode's per-op Python work (about
    half the cost of a trace) and, for float32 contiguous runs, give the same events as the CPU at the level
    the tracer sees (``tests/test_engine.py`` checks the fake trace against the measured CPU timeline for
    every preset and mode). Autocast does not reach meta tensors, and meta kernels lay some channels_last
    outputs out differently (the CPU copies the flattened map, meta does not), so float16/bfloat16 and
    channels_last runs use CPU fake tensors.
    """
    return "meta" if config.dtype == "float32" and not config.channels_last else "cpu"


@dataclass
class Execution:
    """What ``execute`` returns: the tracer with its rows, the outcome and facts about the model."""

    config: RunConfig
    device: torch.device
    fake: bool
    tracer: Tracer
    t0: float
    wall0_ns: int
    status: Status = "ok"
    fault: Fault | None = None
    output_shape: tuple[int, ...] | None = None
    param_bytes: int = 0
    layers: list[LayerInfo] = field(default_factory=list)
    t_end: float = 0.0
    error: BaseException | None = None


def execute(
    config: RunConfig,
    *,
    fake: bool = False,
    device: torch.device | str | None = None,
    cancel: threading.Event | None = None,
    fail_at: FailAt | None = None,
    on_boundary: Callable[[str, str, bool], None] | None = None,
    on_iteration: Callable[[int], None] | None = None,
    on_started: Callable[[Tracer], None] | None = None,
    on_before_release: Callable[[Tracer], None] | None = None,
    t0: float | None = None,
    optimizer_options: Mapping[str, Any] | None = None,
) -> Execution:
    """Run the step program once in the calling thread, traced; see the module docstring.

    ``fake=True`` runs it without memory or arithmetic: on meta tensors for float32, else under
    ``FakeTensorMode`` on CPU fake tensors (see :func:`fake_device`; ``device`` overrides).
    ``on_boundary(module, phase, entering)`` is called at every module boundary, ``on_iteration(i)`` after
    each iteration, ``on_started(tracer)`` once the tracer is active and ``on_before_release(tracer)``
    after the program ended and before its references are dropped (the allocator-level source stops
    there). ``optimizer_options`` override the optimizer's
    param-group defaults (the predictor traces CUDA's ``foreach=True``). Errors other than OOM and cancel
    propagate after the tracer has been left and the references dropped.
    """
    dev = _execution_device(config, device, fake)
    if fake and dev.type not in ("cpu", "meta"):
        raise ConfigError(
            "fake execution runs on CPU fake tensors or meta tensors only (map CUDA differences)"
        )
    if fake and dev.type == "meta" and fake_device(config) != "meta":
        raise ConfigError("autocast and channels_last runs are traced on CPU fake tensors, not meta")
    if not fake and (problem := device_dtype_problem(dev.type, config.dtype)):
        raise ConfigError(problem)
    _check_shapes(config)
    start = time.perf_counter() if t0 is None else t0
    wall0 = time.time_ns() - int((time.perf_counter() - start) * 1e9)
    tracer = Tracer(
        start,
        cuda_device=dev.index if dev.type == "cuda" and not fake else None,
        cancel=cancel,
        fail_at=fail_at,
        on_boundary=on_boundary,
        record_ptr=not fake,
        meta_shortcuts=fake and dev.type == "meta",
    )
    ex = Execution(config, dev, fake, tracer, start, wall0)
    st = _State()
    prev_bench = torch.backends.cudnn.benchmark
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = config.cudnn_benchmark
    stack = contextlib.ExitStack()
    try:
        if fake and dev.type == "cpu":
            from torch._subclasses.fake_tensor import FakeTensorMode

            stack.enter_context(FakeTensorMode())
        stack.enter_context(tracer)
        if on_started is not None:
            on_started(tracer)
        try:
            _program(config, dev, tracer, st, on_iteration, optimizer_options)
        except Cancelled:
            ex.status = "cancelled"
            ex.fault = Fault(
                "cancelled", "cancelled by the user", tracer._current_module(), tracer.phase, tracer.iteration
            )
        except Exception as e:
            if not is_oom_error(e):
                ex.status = "error"
                ex.error = e
                ex.fault = Fault(
                    "error",
                    f"{type(e).__name__}: {e}"[:2000],
                    tracer._current_module(),
                    tracer.phase,
                    tracer.iteration,
                )
            else:
                ex.status = "oom"
                ex.fault = Fault(
                    "oom",
                    str(e).split("\n")[0][:2000],
                    tracer._current_module(),
                    tracer.phase,
                    tracer.iteration,
                )
            e.__traceback__ = None
        finally:
            tracer.finish()
            ex.t_end = time.perf_counter() - start
            if st.model is not None:
                ex.layers = _collect_layers(st.model, config)
                ex.param_bytes = sum(p.untyped_storage().nbytes() for p in st.model.parameters())
            ex.output_shape = st.output_shape
            if on_before_release is not None:
                on_before_release(tracer)
    finally:
        try:
            stack.close()  # leaves the tracer (dispatch mode + module tracker) and the fake mode
        finally:
            tracer.close()
            st.clear()
            torch.backends.cudnn.benchmark = prev_bench
            if not fake:
                if ex.status != "ok":
                    _drain_autograd()
                _give_back_memory(dev, empty_cuda_cache=ex.status != "ok")
    if ex.error is not None:
        err = ex.error
        ex.error = None
        raise err
    return ex


def _execution_device(config: RunConfig, device: torch.device | str | None, fake: bool) -> torch.device:
    """Where ``execute`` runs. ``cuda`` without an index is the current CUDA device (like ``resolve_device``):
    the tracer reads that device's counters, and a CUDA tracer with no index would act as on CPU."""
    if device is None:
        return torch.device(fake_device(config)) if fake else resolve_device(config.device)
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = resolve_device("cuda")
    return dev


def ensure_cuda_context(dev: torch.device) -> bool:
    """Create the CUDA primary context of ``dev`` now (before NVML sampling starts); True when it exists.

    NVML lists a process among a GPU's compute processes only once it holds a context there
    (``nvmlDeviceGetComputeRunningProcesses``), and PyTorch creates the context lazily, at the first CUDA
    call that needs it. ``torch.cuda.synchronize`` calls ``cudaDeviceSynchronize``, a runtime call that
    needs a context, so the runtime creates the primary context (CUDA Runtime API, "Initialization": the
    primary context is created on the first runtime call that requires one).
    ``torch._C._cuda_hasPrimaryContext`` checks it (bound in CUDA builds by torch/csrc/cuda/Module.cpp, listed
    in torch/_dynamo/trace_rules.py; it asks ``CUDAHooksInterface::hasPrimaryContext``, ATen/detail).
    """
    idx = dev.index if dev.index is not None else torch.cuda.current_device()
    has = getattr(torch._C, "_cuda_hasPrimaryContext", None)
    if has is not None and has(idx):
        return True
    torch.cuda.synchronize(torch.device("cuda", idx))
    return bool(has(idx)) if has is not None else True


#: said in every CUDA run's notes (the layer table and the plot's layer spans come from host-side hooks)
CUDA_SPAN_NOTE = (
    "Layer spans on CUDA are host enqueue times: a module's span ends when its kernels were queued, not "
    "when the GPU finished them (kernels run asynchronously); allocator events are host-side too."
)


def _check_shapes(config: RunConfig) -> None:
    from vggexplorer.core.model.shapes import infer_shapes

    report = infer_shapes(config.head, 1, config.input_hw, check_meta=False)
    if report.issue is not None:
        raise ConfigError(str(report.issue))
