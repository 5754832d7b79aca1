"""Tensor-level tracer: every tensor storage the run allocates and frees, with op, module, phase.

How it works
------------
``Tracer`` is a context manager that enters, in the calling thread, a ``TorchDispatchMode`` and a
``torch.utils.module_tracker.ModuleTracker`` (subclassed to keep the current *leaf* module and to record
spans). The dispatch mode sees the outputs of every aten op; a storage seen for the first time is an
allocation of ``storage.nbytes()`` bytes, and a ``weakref`` on the storage's Python object reports its free
(PyTorch keeps a storage's Python object alive as long as the C++ storage lives, so the callback fires
exactly when the storage is released, in whichever thread releases it). A storage that grows in place
(``resize_``) is a further allocation of the difference. Storages that exist before the tracer starts are
registered with :meth:`Tracer.register`.

The same code runs under ``torch._subclasses.fake_tensor.FakeTensorMode`` with CPU fake tensors: enter the
fake mode *first* (outer) and the tracer inside it, so the tracer sees each op before the fake mode computes
its output metadata. Storage identity is ``UntypedStorage._cdata`` (the C++ StorageImpl address), which fake
(meta) storages have too; data pointers are only recorded for real tensors.

Categories are given after the fact by the run loop (``mark``/``classify_*``): parameters, buffers and
inputs after setup; at the end of the forward, what the forward allocated and is still alive is an
activation (saved for backward) and the model output is an output; gradients are the storages that became a
parameter's ``.grad``; optimizer state what the optimizer holds; everything else is a temporary.

The tracer is also where the run is interrupted cooperatively: at every op and every module boundary it
checks the cancel flag (raising :class:`Cancelled`) and an optional injected allocation failure
(:class:`FailAt`, a test hook that raises the same error the CPU/CUDA allocator raises).

Public API::

    tracer = Tracer(t0=time.perf_counter(), cuda_device=None, cancel=None, fail_at=None,
                    on_boundary=None, record_ptr=True)
    tracer.set_model(model)                 # leaf-module names (optional, before entering)
    with tracer:                            # enters the dispatch mode and the module tracker
        tracer.set_phase("forward", iteration=0)
        ...
        tracer.mark(tensor, "parameters")   # category of a live tensor's storage
        tracer.classify_live("forward", 0, "activations", exclude=...)
    tracer.tensor_timeline() -> Timeline    # rows in time order, categories resolved
    tracer.spans, tracer.strings
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.module_tracker import ModuleTracker

from vggexplorer.core.results.result import CATEGORIES, PHASES, Span, Timeline
from vggexplorer.core.run import metafast

__all__ = ["Cancelled", "FailAt", "Tracer", "injected_oom_error", "is_oom_error"]

_CAT = {c: i for i, c in enumerate(CATEGORIES)}
_PHASE = {p: i for i, p in enumerate(PHASES)}
UNRESOLVED = -1


class Cancelled(Exception):
    """Raised inside the traced code when the cancel flag is set (caught by the run loop)."""


@dataclass(frozen=True)
class FailAt:
    """Test hook: raise an allocation failure at the first op in ``module`` during ``phase``.

    ``module`` is a module path (``features.3``, ``classifier.0``) or "" for code outside any module (the
    loss, the optimizer); ``iteration`` None means the first iteration where it matches.
    """

    module: str
    phase: str = "forward"
    iteration: int | None = None


def injected_oom_error(device_type: str, where: str) -> BaseException:
    """The error the allocator raises, for the injection hook (message marks it as injected)."""
    if device_type == "cuda":
        return torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 1.00 GiB (injected at {where})")
    return RuntimeError(
        "DefaultCPUAllocator: can't allocate memory: you tried to allocate 1073741824 bytes. "
        f"Error code 12 (Cannot allocate memory) (injected at {where})"
    )


#: Library status names that mean "could not allocate device memory". cuBLAS: ``cublasCreate`` /
#: ``cublasSetWorkspace`` fail with CUBLAS_STATUS_ALLOC_FAILED, which ``TORCH_CUDABLAS_CHECK``
#: (aten/src/ATen/cuda/CUDABlas.h, names from ``_cublasGetErrorEnum`` in CUDABlas.cpp) raises as a
#: RuntimeError "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `...`". cuDNN: ``AT_CUDNN_CHECK``
#: (aten/src/ATen/cudnn/Exceptions.h) raises "cuDNN error: CUDNN_STATUS_ALLOC_FAILED"
#: (``cudnnGetErrorString``) when a handle or plan cannot get memory. Neither is an OutOfMemoryError.
_LIBRARY_ALLOC_FAILED = ("CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED")


def is_oom_error(e: BaseException) -> bool:
    """CUDA OOM (``torch.OutOfMemoryError``), cuBLAS/cuDNN allocation failures, or CPU allocation failures."""
    if isinstance(e, torch.OutOfMemoryError):
        return True
    if isinstance(e, RuntimeError | MemoryError):
        msg = str(e)
        return (
            isinstance(e, MemoryError)
            or "DefaultCPUAllocator" in msg
            or "not enough memory" in msg
            or "can't allocate memory" in msg
            or "out of memory" in msg.lower()
            or any(s in msg for s in _LIBRARY_ALLOC_FAILED)
        )
    return False


class _Ref(weakref.ref):  # type: ignore[type-arg,unused-ignore]
    __slots__ = ("key", "nbytes", "sid")

    key: int
    nbytes: int
    sid: int


class _Mode(TorchDispatchMode):
    def __init__(self, tracer: Tracer) -> None:
        super().__init__()
        self.tracer = tracer

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        tr = self.tracer
        if tr._armed:
            tr._check(func)
        tr._op = func  # frees inside the op are the op's; frees between ops have no op
        if tr.meta_shortcuts:  # fake traces on meta tensors: skip Python meta kernels (see metafast)
            handled, out = metafast.shortcut(func, args, kwargs or {})
            if not handled:
                out = func(*args, **(kwargs or {}))
        else:
            out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor):
            tr._see(out)
        elif isinstance(out, tuple | list):
            for o in out:
                if isinstance(o, torch.Tensor):
                    tr._see(o)
        tr._op = None
        return out


class _Tracker(ModuleTracker):
    """ModuleTracker that also tells the tracer which module runs (forward or backward)."""

    def __init__(self, tracer: Tracer) -> None:
        super().__init__()
        self._tracer = tracer

    def _get_append_fn(self, name: str, is_bw: bool) -> Callable[..., None]:
        base = super()._get_append_fn(name, is_bw)
        enter = self._tracer._enter_module

        def fn(*args: Any) -> None:
            base(*args)
            enter(name, is_bw)

        return fn

    def _fw_post_hook(self, mod: Any, input: Any, output: Any) -> None:
        super()._fw_post_hook(mod, input, output)
        if isinstance(output, torch.Tensor):
            self._tracer.outputs[_strip_root(self._get_mod_name(mod))] = (
                tuple(output.shape),
                output.numel() * output.element_size(),
            )

    def _get_pop_fn(self, name: str, is_bw: bool) -> Callable[..., None]:
        base = super()._get_pop_fn(name, is_bw)
        leave = self._tracer._leave_module

        def fn(*args: Any) -> None:
            base(*args)
            leave(name, is_bw)

        return fn


def _strip_root(fqn: str) -> str:
    """``VGGWithHead.features.3`` → ``features.3``; the root itself → ""."""
    i = fqn.find(".")
    return "" if i < 0 else fqn[i + 1 :]


class Tracer:
    """Records one row per storage allocation/free; see the module docstring."""

    def __init__(
        self,
        t0: float | None = None,
        *,
        cuda_device: int | None = None,
        cancel: threading.Event | None = None,
        fail_at: FailAt | None = None,
        on_boundary: Callable[[str, str, bool], None] | None = None,
        record_ptr: bool = True,
        meta_shortcuts: bool = False,
    ) -> None:
        self.t0 = time.perf_counter() if t0 is None else t0
        #: ops on meta tensors may take ``metafast``'s shortcuts (fake traces only)
        self.meta_shortcuts = meta_shortcuts
        self.cuda_device = cuda_device
        self.cancel = cancel
        self.fail_at = fail_at
        self.on_boundary = on_boundary
        self.record_ptr = record_ptr
        self._armed = cancel is not None or fail_at is not None
        self.device_type = "cuda" if cuda_device is not None else "cpu"
        #: CUDA: read the caching allocator's counters at every event (allocator level without the history)
        self.read_counters = cuda_device is not None
        # string table (ops, modules), shared with the result
        self.strings: list[str] = []
        self._str_index: dict[str, int] = {}
        self._op_index: dict[Any, int] = {}
        # rows (columns as lists; converted once at the end)
        self.t: list[float] = []
        self.delta: list[int] = []
        self.sid: list[int] = []
        self.phase_col: list[int] = []
        self.op_col: list[int] = []
        self.module_col: list[int] = []
        self.iter_col: list[int] = []
        self.cuda_alloc: list[int] = []
        self.cuda_reserved: list[int] = []
        self.cuda_active: list[int] = []
        # per storage id
        self.sid_nbytes: list[int] = []
        self.sid_phase: list[int] = []
        self.sid_iter: list[int] = []
        self.sid_module: list[int] = []
        self.sid_cat: list[int] = []
        self.sid_ptr: list[int] = []
        self.sid_alloc_row: list[int] = []
        self.sid_free_row: list[int] = []
        self._live: dict[int, _Ref] = {}
        self.total = 0
        self.peak = 0
        # context
        self.phase = "setup"
        self.iteration = -1
        self._phase_i = _PHASE["setup"]
        self._module_i = -1
        self._op: Any = None
        self._leaf_stack: list[str] = []
        self._other_stack: list[str] = []
        self._leaves: set[str] | None = None
        self._open_spans: dict[tuple[str, bool], float] = {}
        self.spans: list[Span] = []
        #: module path -> (output shape, output bytes) of its latest forward
        self.outputs: dict[str, tuple[tuple[int, ...], int]] = {}
        # context changes (time, phase, module, iteration): joins allocator events to module/phase
        self.ctx_t: list[float] = []
        self.ctx_phase: list[int] = []
        self.ctx_module: list[int] = []
        self.ctx_iter: list[int] = []
        self._mode: _Mode | None = None
        self._tracker: _Tracker | None = None
        self._closed = False
        self._failed = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ strings
    def intern(self, s: str) -> int:
        i = self._str_index.get(s)
        if i is None:
            i = len(self.strings)
            self.strings.append(s)
            self._str_index[s] = i
        return i

    def _op_i(self) -> int:
        op = self._op
        if op is None:
            return -1
        i = self._op_index.get(op)
        if i is None:
            name = str(op)
            if name.startswith("aten."):
                name = name[5:]
            i = self._op_index[op] = self.intern(name)
        return i

    # ------------------------------------------------------------------ context
    def set_model(self, model: torch.nn.Module) -> None:
        """Tell the tracer which modules are leaves (rows are attributed to the innermost leaf)."""
        self._leaves = {n for n, m in model.named_modules() if n and not any(True for _ in m.children())}

    def set_phase(self, phase: str, iteration: int | None = None) -> None:
        """Start ``phase`` (one of ``PHASES``) of ``iteration`` (-1 = setup); closes the open spans."""
        if phase == self.phase and (iteration is None or iteration == self.iteration):
            return
        now = time.perf_counter() - self.t0
        # close spans left open (e.g. features.0's backward: its input needs no grad, so no pop hook)
        for (name, bw), start in list(self._open_spans.items()):
            self.spans.append(Span(name, "backward" if bw else "forward", start, now, self.iteration))
        self._open_spans.clear()
        self._close_phase_span(now)
        self._leaf_stack.clear()
        self._other_stack.clear()
        self._module_i = -1
        self._op = None
        self.phase = phase
        self._phase_i = _PHASE[phase]
        if iteration is not None:
            self.iteration = iteration
        self._phase_start = now
        self._ctx(now)
        if self._armed:
            self._check(None)

    _phase_start = 0.0

    def _ctx(self, now: float) -> None:
        self.ctx_t.append(now)
        self.ctx_phase.append(self._phase_i)
        self.ctx_module.append(self._module_i)
        self.ctx_iter.append(self.iteration)

    def _close_phase_span(self, now: float) -> None:
        self.spans.append(Span("", self.phase, self._phase_start, now, self.iteration))

    def finish(self) -> None:
        """Close the last phase span (called by the run loop at the end)."""
        now = time.perf_counter() - self.t0
        for (name, bw), start in list(self._open_spans.items()):
            self.spans.append(Span(name, "backward" if bw else "forward", start, now, self.iteration))
        self._open_spans.clear()
        self._close_phase_span(now)
        self._phase_start = now

    def _current_module(self) -> str:
        if self._leaf_stack:
            return self._leaf_stack[-1]
        if self._other_stack:
            return self._other_stack[-1]
        return ""

    def _enter_module(self, fqn: str, is_bw: bool) -> None:
        name = _strip_root(fqn)
        now = time.perf_counter() - self.t0
        if name:
            self._open_spans[(name, is_bw)] = now
        leaves = self._leaves
        stack = self._leaf_stack if (leaves is None or name in leaves) and name else self._other_stack
        stack.append(name)
        self._module_i = self.intern(self._current_module())
        self._ctx(now)
        if self.on_boundary is not None:
            self.on_boundary(name, "backward" if is_bw else "forward", True)
        if self._armed:
            self._check(None)

    def _leave_module(self, fqn: str, is_bw: bool) -> None:
        name = _strip_root(fqn)
        now = time.perf_counter() - self.t0
        start = self._open_spans.pop((name, is_bw), None)
        if start is not None and name:
            self.spans.append(Span(name, "backward" if is_bw else "forward", start, now, self.iteration))
        for stack in (self._leaf_stack, self._other_stack):
            for k in range(len(stack) - 1, -1, -1):
                if stack[k] == name:
                    del stack[k]
                    break
        self._module_i = self.intern(self._current_module())
        self._ctx(now)
        if self.on_boundary is not None:
            self.on_boundary(name, "backward" if is_bw else "forward", False)
        if self._armed:
            self._check(None)

    def _check(self, func: Any) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("cancelled")
        fa = self.fail_at
        if (
            fa is not None
            and not self._failed
            and func is not None
            and fa.phase == self.phase
            and (fa.iteration is None or fa.iteration == self.iteration)
            and fa.module == self._current_module()
        ):
            self._failed = True
            raise injected_oom_error(self.device_type, f"{fa.module or '-'} {fa.phase}")

    # ------------------------------------------------------------------ events
    def _cuda_counters(self) -> None:
        if not self.read_counters:
            return
        try:
            s = torch.cuda.memory_stats(self.cuda_device)
            self.cuda_alloc.append(int(s.get("allocated_bytes.all.current", 0)))
            self.cuda_reserved.append(int(s.get("reserved_bytes.all.current", 0)))
            self.cuda_active.append(int(s.get("active_bytes.all.current", 0)))
        except Exception:
            self.cuda_alloc.append(self.cuda_alloc[-1] if self.cuda_alloc else 0)
            self.cuda_reserved.append(self.cuda_reserved[-1] if self.cuda_reserved else 0)
            self.cuda_active.append(self.cuda_active[-1] if self.cuda_active else 0)

    def _row(self, delta: int, sid: int) -> None:
        self.t.append(time.perf_counter() - self.t0)
        self.delta.append(delta)
        self.sid.append(sid)
        self.phase_col.append(self._phase_i)
        self.op_col.append(self._op_i())
        self.module_col.append(self._module_i)
        self.iter_col.append(self.iteration)
        self.total += delta
        if self.total > self.peak:
            self.peak = self.total
        if self.cuda_device is not None:
            self._cuda_counters()

    def _see(self, t: torch.Tensor) -> None:
        st = t.untyped_storage()
        if self.cuda_device is not None and st.device.type != "cuda":
            # a CUDA run's tensor level counts device memory only: CPU storages (Adam's ``step`` counters,
            # torch/optim/adam.py ``_init_group``: a CPU scalar unless capturable/fused) are not on the GPU
            return
        key = st._cdata
        ref = self._live.get(key)
        if ref is not None:
            n = st.nbytes()
            if n != ref.nbytes:  # grown/shrunk in place (resize_)
                d = n - ref.nbytes
                ref.nbytes = n
                self.sid_nbytes[ref.sid] += d
                self._row(d, ref.sid)
            return
        self._new(st, key, UNRESOLVED)

    def _new(self, st: torch.UntypedStorage, key: int, cat: int) -> int:
        n = st.nbytes()
        sid = len(self.sid_nbytes)
        ref = _Ref(st, self._on_free)
        ref.key, ref.nbytes, ref.sid = key, n, sid
        self._live[key] = ref
        self.sid_nbytes.append(n)
        self.sid_phase.append(self._phase_i)
        self.sid_iter.append(self.iteration)
        self.sid_module.append(self._module_i)
        self.sid_cat.append(cat)
        ptr = 0
        if self.record_ptr:
            try:
                ptr = st.data_ptr()
            except Exception:
                ptr = 0
        self.sid_ptr.append(ptr)
        self.sid_alloc_row.append(len(self.t))
        self.sid_free_row.append(-1)
        self._row(n, sid)
        return sid

    def _on_free(self, ref: _Ref) -> None:
        if self._closed:
            return
        if self._live.get(ref.key) is ref:
            del self._live[ref.key]
        self.sid_free_row[ref.sid] = len(self.t)
        self._row(-ref.nbytes, ref.sid)

    # ------------------------------------------------------------------ categories
    def storage_id(self, t: torch.Tensor) -> int | None:
        ref = self._live.get(t.untyped_storage()._cdata)
        return None if ref is None else ref.sid

    def register(self, tensor: torch.Tensor, category: str) -> int:
        """A storage that existed before tracing (or was not seen): an allocation now, with its category."""
        st = tensor.untyped_storage()
        key = st._cdata
        ref = self._live.get(key)
        if ref is not None:
            self.sid_cat[ref.sid] = _CAT[category]
            return ref.sid
        return self._new(st, key, _CAT[category])

    def mark(self, tensors: Iterable[torch.Tensor | None], category: str, *, overwrite: bool = True) -> int:
        """Give the live storages of ``tensors`` a category; returns their bytes (each storage once)."""
        c = _CAT[category]
        seen: set[int] = set()
        total = 0
        for t in tensors:
            if t is None:
                continue
            ref = self._live.get(t.untyped_storage()._cdata)
            if ref is None or ref.sid in seen:
                continue
            seen.add(ref.sid)
            if overwrite or self.sid_cat[ref.sid] == UNRESOLVED:
                self.sid_cat[ref.sid] = c
            total += ref.nbytes
        return total

    def classify_live(self, phase: str, iteration: int, category: str) -> None:
        """Live, unclassified storages allocated in ``phase`` of ``iteration`` get ``category``."""
        p, c = _PHASE[phase], _CAT[category]
        for ref in self._live.values():
            s = ref.sid
            if self.sid_cat[s] == UNRESOLVED and self.sid_phase[s] == p and self.sid_iter[s] == iteration:
                self.sid_cat[s] = c

    def live_bytes(self) -> int:
        return sum(r.nbytes for r in self._live.values())

    # ------------------------------------------------------------------ enter / exit
    def __enter__(self) -> Tracer:
        self._closed = False
        self._mode = _Mode(self)
        self._tracker = _Tracker(self)
        self._tracker.__enter__()
        try:
            self._mode.__enter__()
        except BaseException:
            self._tracker.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._mode is not None:
                self._mode.__exit__(None, None, None)
        finally:
            self._mode = None
            if self._tracker is not None:
                self._tracker.__exit__(None, None, None)
            self._tracker = None

    def close(self) -> None:
        """Stop recording frees (call before dropping the model, so teardown adds no rows)."""
        self._closed = True
        self._live.clear()

    # ------------------------------------------------------------------ result
    def resolved_categories(self) -> np.ndarray:
        cats = np.asarray(self.sid_cat, dtype=np.int8)
        cats[cats == UNRESOLVED] = _CAT["temporaries"]
        return cats

    def tensor_timeline(self) -> Timeline:
        n = len(self.t)
        sid = np.asarray(self.sid[:n], dtype=np.int32)
        delta = np.asarray(self.delta[:n], dtype=np.int64)
        cats = self.resolved_categories()
        return Timeline(
            t=np.asarray(self.t[:n], dtype=np.float64),
            delta=delta,
            total=np.cumsum(delta),
            phase=np.asarray(self.phase_col[:n], dtype=np.int8),
            category=cats[sid] if n else np.zeros(0, np.int8),
            op=np.asarray(self.op_col[:n], dtype=np.int32),
            module=np.asarray(self.module_col[:n], dtype=np.int32),
            iteration=np.asarray(self.iter_col[:n], dtype=np.int32),
            storage=sid,
        )

    def cuda_counter_timeline(self) -> Timeline | None:
        """Allocator level on CUDA from the counters read at each tensor event (fallback to the trace)."""
        if self.cuda_device is None or not self.cuda_alloc:
            return None
        n = min(len(self.t), len(self.cuda_alloc))
        total = np.asarray(self.cuda_alloc[:n], dtype=np.int64)
        delta = np.diff(total, prepend=total[:1] if n else total)
        return Timeline(
            t=np.asarray(self.t[:n], dtype=np.float64),
            delta=delta,
            total=total,
            phase=np.asarray(self.phase_col[:n], dtype=np.int8),
            category=np.zeros(n, np.int8),
            op=np.asarray(self.op_col[:n], dtype=np.int32),
            module=np.asarray(self.module_col[:n], dtype=np.int32),
            iteration=np.asarray(self.iter_col[:n], dtype=np.int32),
            reserved=np.asarray(self.cuda_reserved[:n], dtype=np.int64),
            active=np.asarray(self.cuda_active[:n], dtype=np.int64),
        )

    def chunk(self, start: int) -> tuple[int, dict[str, Any]]:
        """Rows from ``start`` as small arrays for live plots; returns (next start, columns)."""
        n = len(self.t)
        end_total = self.total
        d = np.asarray(self.delta[start:n], dtype=np.int64)
        c = np.cumsum(d)
        cols: dict[str, Any] = {
            "t": np.asarray(self.t[start:n], dtype=np.float64),
            "delta": d,
            "total": end_total - (c[-1] if len(c) else 0) + c,
            "phase": np.asarray(self.phase_col[start:n], dtype=np.int8),
            "module": np.asarray(self.module_col[start:n], dtype=np.int32),
            "iteration": np.asarray(self.iter_col[start:n], dtype=np.int32),
        }
        return n, cols
