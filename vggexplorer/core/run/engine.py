"""The measurement engine: one run = one generator over a :class:`RunConfig`.

API (stable; the GUI worker, the CLI, the tests and the predictor use it)::

    config = RunConfig(head=preset("fcn"), device="cpu", batch=2, input_hw=(384, 384), mode="train")
    gen = run_iter(config, cancel=threading.Event())   # Generator[Progress, None, RunResult]
    for progress in gen: ...                            # or: result = run(config)
    result = <StopIteration.value>

    # the very same step code, without a run around it (real, or fake: meta / FakeTensorMode on CPU):
    ex: Execution = execute(config, fake=True)          # in the calling thread
    result = ex.tensor_result()                         # RunResult with the tensor timeline only

``execute`` is the one function that does setup (seed, model, inputs, optimizer) + forward + loss +
backward + optimizer + zero_grad for every iteration, under a :class:`~vggexplorer.core.run.tracer.Tracer` it
enters in the calling thread (with ``fake=True``: on meta tensors, or CPU fake tensors under a
``FakeTensorMode`` for autocast dtypes, see :func:`fake_device`; either way the tensor-level timeline of a
fake run equals the measured CPU one event for event, byte for byte).

``run_iter`` runs ``execute`` on a worker thread it owns (the tracer's dispatch mode and module tracker are
entered *in that thread* and always left in ``finally``), together with the allocator-level source and the
device sampler, and relays :class:`Progress` (at every layer boundary, with the new tensor-level rows as a
chunk for live plots). Closing the generator cancels the run and joins the thread.

Loss: cross-entropy against random (seeded) class targets. A head that outputs a score map
(N×C×h×w, e.g. ``fcn`` at 384 gives 6×6) is scored on the spatially averaged logits (``mean`` over h, w),
the usual way to train a fully convolutional classifier on whole images.

Allocator level:
- CPU: ``torch.profiler`` with ``profile_memory=True`` (and nothing else). Its allocation events carry the
  c10 CPU allocator's running total (tensors *and* kernel-internal buffers such as oneDNN's re-laid-out
  weights), a pointer and a timestamp (CLOCK_REALTIME ns, mapped to the run clock). The model is built
  inside the profiled region, so the level starts at 0 like the tensor level. Each event gets module,
  phase and iteration from the tracer's context at its time and a category from the tensor storage it
  became (matched by pointer and size), else ``untracked_workspace``.
- CUDA: ``torch.cuda.memory._record_memory_history`` (every alloc/free/segment event, exact), replayed into
  allocated/reserved/active running totals anchored at the counters read at the start; without it the
  counters (``memory_stats``) read at every tensor event.

Faults: CUDA OOM and CPU allocation failures end the run with status ``"oom"`` and a :class:`Fault` saying
where (module, phase, iteration); the timelines up to that point are kept; references are dropped, ``gc``
runs and the CUDA cache is emptied, so the next run works. Cancel (the ``cancel`` event) takes effect at
the next op or module boundary: status ``"cancelled"``, partial timelines kept. Test hook:
``fail_at=FailAt(module, phase)`` raises the allocator's own error at the first op of that module in that
phase.
"""

from __future__ import annotations

import contextlib
import gc
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vggexplorer.core.model.backbone import build_model
from vggexplorer.core.model.config import (
    DTYPES,
    MODES,
    OPTIMIZERS,
    ZERO_GRAD,
    ConfigError,
    RunConfig,
    device_dtype_problem,
)
from vggexplorer.core.model.head import HeadSpec
from vggexplorer.core.results.result import (
    CATEGORIES,
    PHASES,
    DeviceSamples,
    Fault,
    RunResult,
    Status,
    Timeline,
)
from vggexplorer.core.run.progress import Progress
from vggexplorer.core.run.tracer import Cancelled, FailAt, Tracer, is_oom_error

__all__ = [
    "DTYPES",
    "MODES",
    "OPTIMIZERS",
    "ZERO_GRAD",
    "ConfigError",
    "Execution",
    "FailAt",
    "Progress",
    "RunConfig",
    "execute",
    "resolve_device",
    "run",
    "run_iter",
]

_CAT = {c: i for i, c in enumerate(CATEGORIES)}
_PHASE = {p: i for i, p in enumerate(PHASES)}


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
class _State:
    """References the program holds, so that a fault can drop them all at once."""

    model: torch.nn.Module | None = None
    optimizer: torch.optim.Optimizer | None = None
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    out: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    output_shape: tuple[int, ...] | None = None

    def clear(self) -> None:
        self.model = self.optimizer = self.x = self.y = self.out = self.loss = None


@dataclass
class LayerInfo:
    """Static facts about a leaf module, collected while the model is alive."""

    name: str
    type: str
    head_index: int
    param_bytes: int
    grad_bytes: int
    output_shape: tuple[int, ...] = ()
    output_bytes: int = 0


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

    def tensor_result(self, *, name: str = "") -> RunResult:
        """A RunResult with the tensor level only (allocator level empty): the fake/predicted path."""
        from vggexplorer.core.run.attribution import build_result

        return build_result(self, allocator=None, device_samples=DeviceSamples(), environment={}, name=name)


# ---------------------------------------------------------------------------------------------- program


def _loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy; a score map N×C×h×w is averaged over h, w first (see the module docstring)."""
    logits = out.mean(dim=(2, 3)) if out.dim() == 4 else out.flatten(1) if out.dim() > 2 else out
    return torch.nn.functional.cross_entropy(logits.float(), y)


def _make_optimizer(cfg: RunConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr)
    return torch.optim.AdamW(params, lr=cfg.lr)


def _num_classes(spec: HeadSpec) -> int:
    for lay in reversed(spec.layers):
        kw = lay.kwargs
        if lay.type == "Linear":
            return int(kw["out_features"])
        if lay.type == "Conv2d":
            return int(kw["out_channels"])
    return 512


def _leaf_order(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if n and not any(True for _ in m.children())]


def _program(
    cfg: RunConfig,
    dev: torch.device,
    tr: Tracer,
    st: _State,
    on_iteration: Callable[[int], None] | None,
    optimizer_options: Mapping[str, Any] | None = None,
) -> None:
    tr.set_phase("setup", -1)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.head, device=dev, init=True)
    if cfg.channels_last:  # like model.to(memory_format=...), which FakeTensorMode cannot do ("swap")
        with torch.no_grad():
            for prm in model.parameters():
                if prm.dim() == 4:
                    prm.data = prm.data.contiguous(memory_format=torch.channels_last)
    st.model = model
    tr.set_model(model)
    params = list(model.parameters())
    tr.mark(params, "parameters")
    tr.mark(model.buffers(), "buffers")
    n, (h, w) = cfg.batch, cfg.input_hw
    x = torch.randn(n, 3, h, w, device=dev)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, _num_classes(cfg.head), (n,), device=dev)
    st.x, st.y = x, y
    tr.mark([x, y], "inputs")
    model.train(cfg.train)
    if cfg.mode == "train-step":
        st.optimizer = _make_optimizer(cfg, params)
        if optimizer_options:  # e.g. foreach=True: what the optimizer would default to for CUDA params
            for group in st.optimizer.param_groups:
                group.update(optimizer_options)
            st.optimizer.defaults.update(optimizer_options)
    amp: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if cfg.dtype != "float32":
        amp = torch.autocast(device_type=dev.type, dtype=getattr(torch, cfg.dtype))
    for i in range(cfg.warmup + cfg.iterations):
        if cfg.train and cfg.zero_grad == "before-forward":
            tr.set_phase("zero_grad", i)
            if st.optimizer is not None:
                st.optimizer.zero_grad(set_to_none=cfg.set_to_none)
            else:
                model.zero_grad(set_to_none=cfg.set_to_none)
        tr.set_phase("forward", i)
        grad: contextlib.AbstractContextManager[Any] = (
            contextlib.nullcontext() if cfg.train else torch.no_grad()
        )
        with grad, amp:
            st.out = model(x)
        st.output_shape = tuple(st.out.shape)
        tr.mark([st.out], "outputs")
        tr.classify_live("forward", i, "activations")
        if cfg.train:
            tr.set_phase("loss", i)
            with amp:
                st.loss = _loss(st.out, y)
            tr.mark([st.loss], "outputs")
            tr.classify_live("loss", i, "activations")
            tr.set_phase("backward", i)
            st.loss.backward()
            tr.mark((p.grad for p in params), "gradients")
            if st.optimizer is not None:
                tr.set_phase("optimizer", i)
                st.optimizer.step()
                tr.mark(_optimizer_tensors(st.optimizer), "optimizer_state")
                if cfg.zero_grad == "after-step":
                    tr.set_phase("zero_grad", i)
                    st.optimizer.zero_grad(set_to_none=cfg.set_to_none)
            elif cfg.zero_grad == "after-step":
                tr.set_phase("zero_grad", i)
                model.zero_grad(set_to_none=cfg.set_to_none)
        # the iteration's output and loss are dropped before the next one starts
        tr.set_phase("idle", i)
        st.out = st.loss = None
        if on_iteration is not None:
            on_iteration(i)


def _optimizer_tensors(opt: torch.optim.Optimizer) -> Iterator[torch.Tensor]:
    for s in opt.state.values():
        for v in s.values():
            if isinstance(v, torch.Tensor):
                yield v


def _collect_layers(model: torch.nn.Module, cfg: RunConfig) -> list[LayerInfo]:
    from vggexplorer.core.model.backbone import head_module_names

    head_names = {name: i for i, name in enumerate(head_module_names(cfg.head))}
    out: list[LayerInfo] = []
    for name, m in _leaf_order(model):
        pb = sum(p.untyped_storage().nbytes() for p in m.parameters(recurse=False))
        gb = sum(p.grad.untyped_storage().nbytes() for p in m.parameters(recurse=False) if p.grad is not None)
        out.append(LayerInfo(name, type(m).__name__, head_names.get(name, -1), pb, gb))
    return out


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


# ---------------------------------------------------------------------------------------------- the run


_DONE = object()


def run_iter(
    config: RunConfig, cancel: threading.Event | None = None, *, fail_at: FailAt | None = None
) -> Generator[Progress, None, RunResult]:
    """Run ``config`` on a worker thread; yield Progress; return the RunResult (status ok/oom/cancelled).

    Bad configs raise :class:`ConfigError` before anything runs; unexpected errors are re-raised here after
    the worker has cleaned up. Closing the generator early cancels the run and waits for the worker.
    """
    dev = resolve_device(config.device)
    if problem := device_dtype_problem(dev.type, config.dtype):
        raise ConfigError(problem)
    _check_shapes(config)
    if dev.type == "cpu" and config.allocator_level and not _off_main_thread():
        from vggexplorer.core.run.quiet import prime_profiler

        prime_profiler()  # keeps kineto's known start-up messages off stderr (see core/quiet.py)
    stop = threading.Event()
    q: queue.SimpleQueue[Any] = queue.SimpleQueue()
    box: dict[str, Any] = {}
    worker = threading.Thread(
        target=_worker, args=(config, dev, cancel, stop, fail_at, q, box), name="vggexplorer-run", daemon=True
    )
    worker.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                break
            yield item
    finally:
        stop.set()
        worker.join()
    if "error" in box:
        raise box["error"]
    result: RunResult = box["result"]
    return result


def run(
    config: RunConfig, cancel: threading.Event | None = None, *, fail_at: FailAt | None = None
) -> RunResult:
    """Drive ``run_iter`` to the end and return its result."""
    gen = run_iter(config, cancel, fail_at=fail_at)
    while True:
        try:
            next(gen)
        except StopIteration as s:
            res: RunResult = s.value
            return res


class _Any:
    """An Event-like that is set when any of its events is."""

    def __init__(self, *events: threading.Event | None) -> None:
        self.events = [e for e in events if e is not None]

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


def _worker(
    config: RunConfig,
    dev: torch.device,
    cancel: threading.Event | None,
    stop: threading.Event,
    fail_at: FailAt | None,
    q: queue.SimpleQueue[Any],
    box: dict[str, Any],
) -> None:
    from vggexplorer.core.run.attribution import build_result

    try:
        gc.collect()
        t0 = time.perf_counter()
        n_iter = config.warmup + config.iterations
        leaves: dict[str, int] = {}
        sent: dict[str, Any] = {"row": 0, "frac": 0.0}
        tracer_box: dict[str, Tracer] = {}
        source: AllocatorSource | None = None
        sampler: Any = None
        notes: list[str] = []

        def progress(phase: str, module: str, frac: float, msg: str) -> None:
            tr = tracer_box.get("t")
            chunk = None
            strings: tuple[str, ...] = ()
            if tr is not None:
                start, cols = sent["row"], None
                nxt, cols = tr.chunk(start)
                sent["row"] = nxt
                chunk = cols if nxt > start else None
                strings = tuple(tr.strings)
            it = tr.iteration if tr is not None else -1
            frac = sent["frac"] = max(min(max(frac, 0.0), 1.0), sent["frac"])
            q.put(Progress(frac, phase, module, it, msg, chunk, strings))

        def frac_at(phase: str, module: str, iteration: int) -> float:
            per = 1.0 / max(n_iter, 1)
            k = leaves.get(module, 0) / max(len(leaves), 1)
            within = {"forward": 0.45 * k, "backward": 0.5 + 0.45 * (1 - k)}.get(phase, 0.0)
            return 0.02 + 0.96 * per * (max(iteration, 0) + within)

        def on_boundary(module: str, phase: str, entering: bool) -> None:
            tr = tracer_box["t"]
            if not leaves and tr._leaves:
                leaves.update({n: i for i, n in enumerate(sorted(tr._leaves, key=_module_sort_key))})
            if entering and module in leaves:
                progress(
                    phase,
                    module,
                    frac_at(phase, module, tr.iteration),
                    f"iteration {tr.iteration + 1}/{n_iter} · {phase} · {module}",
                )

        def on_iteration(i: int) -> None:
            progress("idle", "", 0.02 + 0.96 * (i + 1) / max(n_iter, 1), f"iteration {i + 1}/{n_iter} done")

        def on_started(tr: Tracer) -> None:
            nonlocal source, sampler
            tracer_box["t"] = tr
            progress("setup", "", 0.0, f"setting up {config.label()} on {dev}")
            if dev.type == "cuda":
                notes.append(CUDA_SPAN_NOTE)
            if config.sample_hz > 0:
                sampler = start_device_sampler(dev, t0, config.sample_hz, notes)
            if config.allocator_level:
                source = start_allocator_source(dev, t0, ex_wall0(t0))
            # CUDA counters at every tensor event cost ~0.1 ms each (memory_stats builds a dict): only as
            # the fallback when the memory history is not recording
            tr.read_counters = not (isinstance(source, CudaHistorySource) and source.recording)

        def on_before_release(tr: Tracer) -> None:
            if source is not None:
                source.stop()

        ex = None
        try:
            ex = execute(
                config,
                device=dev,
                cancel=_Any(cancel, stop),  # type: ignore[arg-type]
                fail_at=fail_at,
                on_boundary=on_boundary,
                on_iteration=on_iteration,
                on_started=on_started,
                on_before_release=on_before_release,
                t0=t0,
            )
        finally:
            samples = DeviceSamples()
            if sampler is not None:
                samples = sampler.stop()
            if source is not None:
                source.stop()
        allocator, trace = source.timeline(ex.tracer) if source is not None else (None, None)
        if source is not None:
            notes.extend(source.notes)
        env = _environment(dev)
        result = build_result(ex, allocator=allocator, device_samples=samples, environment=env)
        result.allocator_trace = trace
        result.notes.extend(notes)
        box["result"] = result
        q.put(
            Progress(
                1.0,
                "idle",
                "",
                ex.tracer.iteration,
                _final_message(result),
                None,
                tuple(result.strings),
                result,
            )
        )
    except BaseException as e:
        box["error"] = e
    finally:
        q.put(_DONE)


def start_device_sampler(dev: torch.device, t0: float, rate_hz: float, notes: list[str]) -> Any:
    """The device sampler for a run, started; None (with a note) when it cannot start.

    On CUDA the context is created first: until it exists NVML lists no compute process for this PID, so
    the "this process" series would begin with failed reads (see ``ensure_cuda_context``).
    """
    try:
        from vggexplorer.core.run.sampler import DeviceSampler

        if dev.type == "cuda" and not ensure_cuda_context(dev):
            notes.append("CUDA context not created before sampling: the process series may start late")
        return DeviceSampler(dev, t0, rate_hz).start()
    except Exception as e:
        notes.append(f"device sampler not available: {e}")
        return None


def _off_main_thread() -> bool:
    """Priming the profiler takes ~1.7 s once per process: never do it on a GUI's main thread (the GUI
    runs the engine in a child process, where this is the main thread and nothing else waits)."""
    return threading.current_thread() is not threading.main_thread()


def _drain_autograd() -> None:
    """After a fault or cancel inside backward, the autograd engine keeps the aborted graph (activations,
    gradients) queued in this thread until the next backward here; one tiny backward releases it."""
    with torch.enable_grad():
        torch.ones((), requires_grad=True).mul(2).backward()


def _give_back_memory(dev: torch.device, *, empty_cuda_cache: bool) -> None:
    """Return what the run freed, so that the next run starts from the same baseline.

    glibc keeps freed heap memory mapped (0–120 MiB measured here, growing over hundreds of runs) unless
    ``malloc_trim(0)`` is called; after a fault the CUDA cache is emptied as well.
    """
    gc.collect()
    if empty_cuda_cache and dev.type == "cuda":
        torch.cuda.empty_cache()
    _malloc_trim()


def _malloc_trim() -> None:
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl): nothing to trim
        pass


def _module_sort_key(name: str) -> tuple[int, int]:
    top = {"features": 0, "avgpool": 1, "flatten": 2, "classifier": 3}
    parts = name.split(".")
    return top.get(parts[0], 4), int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def _final_message(r: RunResult) -> str:
    from vggexplorer.core.results.wording import run_summary

    return run_summary(r, outcome=True, full=False, sep=", ")


def _environment(dev: torch.device) -> dict[str, Any]:
    try:
        from vggexplorer.core.devices.environment import collect_environment

        env: dict[str, Any] = dict(collect_environment(dev))
        return env
    except ImportError:
        pass
    import platform

    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(dev),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        env["device_name"] = p.name
        env["device_total_bytes"] = int(p.total_memory)
    else:
        env["device_name"] = platform.processor() or platform.machine()
    return env


def ex_wall0(t0: float) -> int:
    """CLOCK_REALTIME (ns) at run-clock 0: profiler and allocator-trace timestamps are wall-clock ns."""
    return time.time_ns() - int((time.perf_counter() - t0) * 1e9)


# ------------------------------------------------------------------------------------- allocator level


@dataclass
class _Block:
    t: float
    delta: int
    total: int
    ptr: int
    op: str
    reserved: int = 0
    active: int = 0


class AllocatorSource:
    """Allocator-level events of one run (CPU profiler or CUDA memory history); see the module docstring."""

    def __init__(self, dev: torch.device, t0: float, wall0_ns: int) -> None:
        self.dev = dev
        self.t0 = t0
        self.wall0_ns = wall0_ns
        self.notes: list[str] = []
        self.events: list[_Block] = []
        self.trace: list[dict[str, Any]] | None = None
        self._stopped = False

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._stop()

    def _stop(self) -> None:
        raise NotImplementedError

    def timeline(self, tracer: Tracer) -> tuple[Timeline | None, list[dict[str, Any]] | None]:
        if not self.events:
            return None, self.trace
        return _allocator_timeline(self.events, tracer, cuda=self.dev.type == "cuda"), self.trace


class CpuProfilerSource(AllocatorSource):
    """The c10 CPU allocator's running total from ``torch.profiler`` memory events (profile_memory only)."""

    def __init__(self, dev: torch.device, t0: float, wall0_ns: int) -> None:
        super().__init__(dev, t0, wall0_ns)
        from torch.profiler import ProfilerActivity, profile

        self._prof: Any = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        self._prof.__enter__()

    def _stop(self) -> None:
        from torch._C._profiler import _EventType

        prof = self._prof
        try:
            prof.__exit__(None, None, None)
            tree = prof.profiler.kineto_results.experimental_event_tree()
        except Exception as e:
            self.notes.append(f"CPU allocator level not available (profiler: {e})")
            return
        raw: list[tuple[int, int, int, int, int, str]] = []
        alloc_tag = _EventType.Allocation
        stack = list(tree)
        while stack:
            node = stack.pop()
            if node.tag == alloc_tag:
                ef = node.extra_fields
                if ef.device.type == "cpu":
                    parent = node.parent
                    op = parent.name if parent is not None else ""
                    raw.append((node.start_time_ns, ef.id, ef.ptr, ef.alloc_size, ef.total_allocated, op))
            stack.extend(node.children)
        self._prof = None
        raw.sort(key=lambda r: (r[0], r[1]))
        if not raw:
            return
        # the c10 counter only counts while profiling and survives across sessions: take it relative to
        # its value just before our first event (the run builds its model inside the profiled region)
        offset = raw[0][4] - raw[0][3]
        w0 = self.wall0_ns
        self.events = [
            _Block((ns - w0) / 1e9, size, total - offset, ptr, op[6:] if op.startswith("aten::") else op)
            for ns, _, ptr, size, total, op in raw
        ]


class CudaHistorySource(AllocatorSource):
    """CUDA: ``_record_memory_history`` replayed into allocated/reserved/active totals (exact events).

    Sizes. ``alloc``, ``free_requested`` and ``free_completed`` trace entries carry the *requested* size,
    while ``allocated_bytes`` / ``active_bytes`` move by the block's size (c10/cuda/CUDACachingAllocator.cpp,
    ``DeviceCachingAllocator::malloc``: ``record_trace(TraceEntry::ALLOC, ..., orig_size, ...)`` next to
    ``allocated_bytes.increase(block->size)``; ``DeviceCachingAllocator::free``:
    ``allocated_bytes.decrease(block->size)`` and ``record_trace(TraceEntry::FREE_REQUESTED, ...,
    block->requested_size, ...)``). The block size is the request rounded to 512 B, or a whole unsplit free
    block (``should_split``). So the replay keeps the allocator's block layout: the segments and blocks at
    the first kept entry are reconstructed backwards from the snapshot's final ``segments``
    (``snapshot._reconstruct_initial_state``), then every entry is applied forwards at its real address
    (``_BlockLayout``), which gives each block's size.

    Anchoring. The totals are anchored at the *end*, at ``memory_stats()`` read right after ``_snapshot()``
    (nothing allocates between the two: the run has ended and the device is synchronised). When the history
    is complete, the replay then also starts at the counters read at the start; a difference is reported in
    the notes. When the ring buffer overflowed (``max_entries``: the oldest entries are overwritten,
    torch/cuda/memory.py ``_record_memory_history`` docstring, "Buffer behavior"), the trace starts mid-run
    and only the end anchor is right: the notes say so.

    Frames. Recorded with ``context=None``: the engine keeps no stack frames, and collecting a Python
    traceback per allocation (``context="alloc", stacks="python"``) costs time for nothing
    (torch/cuda/memory.py ``_record_memory_history``: ``context=None`` "Do not record any tracebacks").
    """

    #: ring buffer size of the memory history; a trace with this many entries has (probably) wrapped
    max_entries = 2_000_000

    def __init__(self, dev: torch.device, t0: float, wall0_ns: int) -> None:
        super().__init__(dev, t0, wall0_ns)
        torch.cuda.synchronize(dev)
        self.base = _cuda_counters(dev)
        #: counters read right after the snapshot (allocated, reserved, active, peak allocated)
        self.end: tuple[int, int, int] | None = None
        self.end_peak: int | None = None
        self.overflowed = False
        self.recording = False
        try:
            torch.cuda.memory._record_memory_history(
                "all", context=None, stacks="python", max_entries=self.max_entries, device=dev,
                clear_history=True,
            )  # fmt: skip
            self.recording = True
        except Exception as e:
            self.notes.append(f"CUDA memory history not available ({e}); allocator level from counters")

    def _stop(self) -> None:
        if not self.recording:
            return
        try:
            torch.cuda.synchronize(self.dev)
            snap = torch.cuda.memory._snapshot(self.dev)
            s = torch.cuda.memory_stats(self.dev)
            self.end = _counters_of(s)
            self.end_peak = int(s.get("allocated_bytes.all.peak", 0))
        except Exception as e:
            self.notes.append(self._unreadable_note(e))
            return
        finally:
            with contextlib.suppress(Exception):
                torch.cuda.memory._record_memory_history(enabled=None, device=self.dev)
        self._replay(snap)

    def _unreadable_note(self, e: BaseException) -> str:
        """Say what the allocator level is when the history cannot be read (no counter series then)."""
        end = ""
        with contextlib.suppress(Exception):
            s = torch.cuda.memory_stats(self.dev)
            self.end = _counters_of(s)
            self.end_peak = int(s.get("allocated_bytes.all.peak", 0))
            end = (
                f"; memory_stats at the end: allocated {self.end[0]:,} B, reserved {self.end[1]:,} B, "
                f"peak allocated {self.end_peak:,} B"
            )
        return (
            f"CUDA memory history could not be read ({e}): no allocator-level series for this run "
            f"(counters were not read during the run){end}"
        )

    def _replay(self, snap: Any) -> None:
        from vggexplorer.core.allocator.snapshot import SnapshotError, parse_snapshot

        idx = self.dev.index or 0
        try:
            parsed = parse_snapshot(snap, name="memory history")
        except SnapshotError as e:
            self.notes.append(f"CUDA memory history unreadable ({e}); no allocator-level series")
            return
        entries = parsed.trace(idx) if idx < len(parsed.device_traces) else ()
        segments = [s for s in parsed.segments if s.device == idx]
        layout = _BlockLayout(segments, entries)
        if layout.issues:
            self.notes.append(
                "CUDA allocator replay: block layout inconsistent at "
                f"{len(layout.issues)} entries (first: {layout.issues[0]}); those use 512-B rounded sizes"
            )
        w0 = self.wall0_ns
        rows: list[tuple[float, int, int, int, int]] = []  # t, d_allocated, d_reserved, d_active, addr
        trace: list[dict[str, Any]] = []
        for entry, (da, dr, dact) in zip(entries, layout.deltas, strict=True):
            t = ((entry.time_us or 0) * 1000 - w0) / 1e9
            trace.append(
                {
                    "action": entry.action,
                    "addr": entry.addr,
                    "size": entry.size,
                    "stream": entry.stream,
                    "time_s": t,
                }
            )
            if entry.action in _COUNTED_ACTIONS:
                rows.append((t, da, dr, dact, entry.addr))
        self.trace = trace
        self.overflowed = len(entries) >= self.max_entries
        sums = (sum(r[1] for r in rows), sum(r[2] for r in rows), sum(r[3] for r in rows))
        if self.end is not None:
            # anchored at the end: base = end counters - what the kept entries changed
            base = tuple(e - d for e, d in zip(self.end, sums, strict=True))
        else:
            base = self.base
        if self.overflowed:
            self.notes.append(
                f"CUDA memory history overflowed its ring buffer ({len(entries):,} entries = max_entries): "
                "the trace starts mid-run, so the allocator level before its first entry is missing; "
                "totals are anchored at the memory_stats() read at the end"
            )
        elif base != self.base:
            names = ("allocated", "reserved", "active")
            diff = ", ".join(
                f"{n} {b - s:+,} B" for n, b, s in zip(names, base, self.base, strict=True) if b != s
            )
            self.notes.append(
                "CUDA allocator replay differs from memory_stats() (end-anchored start minus counters at the "
                f"start: {diff}); totals are anchored at the end"
            )
        alloc, reserved, active = base
        out: list[_Block] = []
        for t, da, dr, dact, addr in rows:
            alloc += da
            reserved += dr
            active += dact
            out.append(_Block(t, da, alloc, addr, "", reserved, active))
        self.events = out

    def timeline(self, tracer: Tracer) -> tuple[Timeline | None, list[dict[str, Any]] | None]:
        if self.events:
            return super().timeline(tracer)
        return tracer.cuda_counter_timeline(), self.trace


#: trace actions that move a counter (others — oom, snapshot — are kept in the trace only)
_COUNTED_ACTIONS = frozenset(
    {
        "alloc",
        "free_requested",
        "free_completed",
        "segment_alloc",
        "segment_free",
        "segment_map",
        "segment_unmap",
    }
)


def _counters_of(s: Mapping[str, Any]) -> tuple[int, int, int]:
    return (
        int(s.get("allocated_bytes.all.current", 0)),
        int(s.get("reserved_bytes.all.current", 0)),
        int(s.get("active_bytes.all.current", 0)),
    )


def _cuda_counters(dev: torch.device) -> tuple[int, int, int]:
    return _counters_of(torch.cuda.memory_stats(dev))


class _BlockLayout:
    """The caching allocator's blocks, replayed forwards through a memory-history trace at real addresses.

    ``deltas[i]`` = (allocated, reserved, active) change of entry ``i`` in *block* bytes. Rules
    (c10/cuda/CUDACachingAllocator.cpp): ``round_size`` (512 B multiples); ``should_split`` — a small-pool
    block splits when the remainder is >= 512 B (kMinBlockSize), a large-pool block when it is > 1 MiB
    (kSmallSize), else the whole free block is allocated; ``free_block`` merges with free neighbours.
    ``allocated_bytes`` moves at ``alloc`` / ``free_requested``, ``active_bytes`` at ``alloc`` /
    ``free_completed`` (``free_block``), ``reserved_bytes`` at segment events. A 2 MiB segment is a small-pool
    segment (kSmallBuffer; large-pool segments are >= 10 MiB). Expandable segments (segment_map/unmap) move
    reserved only; their blocks are not modelled (512-B rounding is used there).
    """

    def __init__(self, segments: list[Any], entries: tuple[Any, ...]) -> None:
        from vggexplorer.core.allocator.caching import MIN_BLOCK_SIZE, SMALL_BUFFER, SMALL_SIZE, round_size
        from vggexplorer.core.allocator.snapshot_replay import (
            ReplayReport,
            _RBlock,
            _reconstruct_initial_state,
            _RSeg,
        )

        report = ReplayReport(device=0, events=len(entries), final_segments=len(segments))
        state = _reconstruct_initial_state(segments, entries, report)
        self.issues: list[str] = list(report.reconstruction_issues)
        self.deltas: list[tuple[int, int, int]] = []
        for i, e in enumerate(entries):
            a = e.action
            d = (0, 0, 0)
            if a == "alloc":
                size = round_size(e.size)
                seg = state.find(e.addr)
                j = state.block_index(seg, e.addr) if seg is not None else -1
                b = seg.blocks[j] if seg is not None and j >= 0 else None
                if seg is None or b is None or b.addr != e.addr or b.allocated or b.size < size:
                    self.issues.append(f"entry {i}: alloc at {e.addr:#x} finds no free block there")
                else:
                    rest = b.size - size
                    split = rest >= MIN_BLOCK_SIZE if seg.is_small else rest > SMALL_SIZE
                    if split:
                        seg.blocks.insert(j + 1, _RBlock(e.addr + size, rest, False, 0))
                        b.size = size
                    size = b.size
                    b.allocated = True
                    b.requested = e.size
                d = (size, 0, size)
            elif a in ("free_requested", "free_completed"):
                seg = state.find(e.addr)
                j = state.block_index(seg, e.addr) if seg is not None else -1
                b = seg.blocks[j] if seg is not None and j >= 0 else None
                known = seg is not None and b is not None and b.addr == e.addr and b.allocated
                if not known:
                    self.issues.append(f"entry {i}: {a} at {e.addr:#x} finds no allocated block there")
                size = b.size if known and b is not None else round_size(e.size)
                if a == "free_requested":
                    d = (-size, 0, 0)
                else:
                    if known and seg is not None and b is not None:
                        b.allocated = False
                        state.coalesce(seg, j)
                    d = (0, 0, -size)
            elif a == "segment_alloc":
                seg_new = _RSeg(e.addr, e.size, e.size == SMALL_BUFFER, [_RBlock(e.addr, e.size, False, 0)])
                if not state.add(seg_new):
                    self.issues.append(f"entry {i}: segment_alloc {e.addr:#x} overlaps a known segment")
                d = (0, e.size, 0)
            elif a == "segment_free":
                if e.addr in state.segs:
                    state.remove(e.addr)
                d = (0, -e.size, 0)
            elif a == "segment_map":
                d = (0, e.size, 0)
            elif a == "segment_unmap":
                d = (0, -e.size, 0)
            self.deltas.append(d)


def start_allocator_source(dev: torch.device, t0: float, wall0_ns: int) -> AllocatorSource | None:
    if dev.type == "cuda":
        return CudaHistorySource(dev, t0, wall0_ns)
    if dev.type == "cpu":
        return CpuProfilerSource(dev, t0, wall0_ns)
    return None


def _allocator_timeline(events: list[_Block], tracer: Tracer, *, cuda: bool) -> Timeline:
    """Columns from allocator events; module/phase/iteration from the tracer's context at each event's time,
    category from the tensor storage the block became (pointer, and size on CPU), else untracked workspace."""
    n = len(events)
    t = np.fromiter((e.t for e in events), np.float64, n)
    # keep time monotone (clock mapping jitter) so that plots and searches behave
    t = np.maximum.accumulate(t) if n else t
    ctx_t = np.asarray(tracer.ctx_t, np.float64)
    k = np.searchsorted(ctx_t, t, side="right") - 1 if len(ctx_t) else np.full(n, -1)
    k = np.clip(k, 0, None)
    have = len(ctx_t) > 0
    phase = np.asarray(tracer.ctx_phase, np.int8)[k] if have else np.zeros(n, np.int8)
    module = np.asarray(tracer.ctx_module, np.int32)[k] if have else np.full(n, -1, np.int32)
    iteration = np.asarray(tracer.ctx_iter, np.int32)[k] if have else np.full(n, -1, np.int32)
    op = np.asarray([tracer.intern(e.op) if e.op else -1 for e in events], np.int32)
    category = _match_categories(events, tracer, size_must_match=not cuda)
    tl = Timeline(
        t=t,
        delta=np.fromiter((e.delta for e in events), np.int64, n),
        total=np.fromiter((e.total for e in events), np.int64, n),
        phase=phase,
        category=category,
        op=op,
        module=module,
        iteration=iteration,
    )
    if cuda:
        tl.reserved = np.fromiter((e.reserved for e in events), np.int64, n)
        tl.active = np.fromiter((e.active for e in events), np.int64, n)
        # free_completed / segment rows change no allocated bytes; keep them (reserved moves there)
    return tl


def _match_categories(events: list[_Block], tracer: Tracer, *, size_must_match: bool) -> np.ndarray:
    """Category per allocator event: the tensor storage the block became, else untracked workspace.

    A tracer storage (pointer p, seen at time t after its op) is the latest allocator block at p allocated
    up to t (+ a small allowance for the clock mapping), with the same size on CPU (CUDA rounds sizes).
    """
    from bisect import bisect_right

    cats = tracer.resolved_categories()
    out = np.full(len(events), _CAT["untracked_workspace"], np.int8)
    allocs: dict[int, tuple[list[float], list[int]]] = {}
    for i, e in enumerate(events):
        if e.delta > 0:
            ts, idx = allocs.setdefault(e.ptr, ([], []))
            ts.append(e.t)
            idx.append(i)
    eps = 2e-4
    for sid, ptr in enumerate(tracer.sid_ptr):
        hit = allocs.get(ptr) if ptr else None
        if hit is None:
            continue
        ts, idx = hit
        tt = tracer.t[tracer.sid_alloc_row[sid]]
        k = bisect_right(ts, tt + eps) - 1
        while k >= 0 and size_must_match and events[idx[k]].delta != tracer.sid_nbytes[sid]:
            k -= 1
        if k >= 0:
            out[idx[k]] = cats[sid]
    # frees carry the category of their allocation
    last: dict[int, int] = {}
    for i, e in enumerate(events):
        if e.delta > 0:
            last[e.ptr] = int(out[i])
        elif e.delta < 0 and e.ptr in last:
            out[i] = last.pop(e.ptr)
    return out
