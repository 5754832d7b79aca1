"""Predict what a GPU would show for a config, without the GPU: allocated, reserved, nvidia-smi, fit or OOM.

Pipeline (all on this machine's CPU, nothing computed):

1. ``faketrace.trace(config, "cuda")``: the engine's own step program on meta (or CPU fake) tensors, mapped to
   the tensors CUDA would allocate (rules and sources in ``faketrace``'s docstring).
2. The allocations a tensor trace cannot see, from the GPU profile (``gpus``), inserted where PyTorch makes
   them — **estimates** unless the profile is calibrated:

   - cuBLAS workspaces (``CublasHandlePool.cpp``): one per thread that runs a cuBLAS matmul
     (``addmm``/``mm``/``bmm``...), at its first one, right after that op's output, through the caching
     allocator, never freed. Handles are per thread (``getCurrentCUDABlasHandle``: ``thread_local``
     PoolWindow) and workspaces per (handle, stream); CUDA backward nodes run on autograd's device thread
     (torch/csrc/autograd/engine.cpp: ``Engine::start_device_threads`` / ``thread_main`` — the calling
     thread only runs CPU work), so a Linear head pays twice: once in the forward, once in the backward.
     A fully convolutional head makes no cuBLAS call at all, so it has none.
   - cuBLASLt workspace: none of its own by default (torch 2.13 unifies it with the cuBLAS one, see
     ``gpus``); with a profile that sets one, at the first ``addmm`` with a bias and more than one row per
     thread (PyTorch's Lt path, ``Blas.cpp`` ``useLtInterface``), after the cuBLAS workspace.
   - cuDNN convolution workspace: one transient block per convolution call — forward, and backward-data and
     backward-weight — allocated after the op's outputs and freed at once (``ConvWorkspacePolicy``).

3. Replay through ``CachingAllocatorModel`` with capacity = total memory − CUDA context − lazily loaded
   kernels (what cudaMalloc can still get). An ``AllocatorOOM`` is the predicted "out of memory at layer X in
   phase Y". nvidia-smi's per-process number = context + kernels (from the first forward op) + reserved.

The result is a :class:`~vggexplorer.core.results.result.RunResult` with ``predicted=True`` (tensor timeline +
allocator timeline with reserved + device samples for the process curve), plus the verdict. Its time axis is
the fake trace's own clock (the order of events is predicted, their durations are not).

``max_batch`` searches the largest batch that fits. A trace's event sequence does not depend on the batch
size (same ops, same storages); each storage's size is affine in the batch (only the batch dimension
changes). So two traces at batches N and N+1 with identical structure give every event's size at any batch
exactly; candidates during the search are replays only (searched down from a bound the live tensors set,
see ``Predictor.max_batch``), and the answer is confirmed with a real trace at max + 1 — if it disagrees
with the derived sizes, the search falls back to real traces throughout.

Speed: a ``Predictor`` keeps traces and batch models per config (an LRU of 32); the GUI holds one. With
``disk_cache=True`` verified batch models are stored on disk (``predict_cache``) for later processes.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from vggexplorer.core.allocator.caching import AllocatorOOM, Block, CachingAllocatorModel
from vggexplorer.core.predict import cache as predict_cache
from vggexplorer.core.predict.faketrace import FakeTrace, ModuleGeometry, Row, trace
from vggexplorer.core.predict.gpus import GpuProfile, torch_version_string
from vggexplorer.core.results.meta import RunEnvironment, RunMeta
from vggexplorer.core.results.result import (
    CATEGORIES,
    PHASES,
    DeviceSamples,
    Fault,
    RunResult,
    Summary,
    Timeline,
)

__all__ = [
    "MAX_BATCH",
    "OomAt",
    "Prediction",
    "Predictor",
    "max_batch",
    "predict",
]

MAX_BATCH = 1 << 16
_SCAN = 16  # batches tried one by one below the tensor bound in the max-batch search
_CAT = {c: i for i, c in enumerate(CATEGORIES)}
_PHASE = {p: i for i, p in enumerate(PHASES)}
_MATMUL_OPS = frozenset({"addmm", "mm", "bmm", "addmv", "mv", "baddbmm", "addbmm", "matmul", "addr", "dot"})
_WS = _CAT["untracked_workspace"]

#: labels carried by every predicted result (DESIGN: a predicted curve is always labelled as predicted)
PREDICTED_NOTES = (
    "PREDICTED, not measured: tensor events from a trace on meta/fake tensors mapped to CUDA; allocator "
    "replayed through a model of PyTorch's CUDA caching allocator (native backend, one stream, default "
    "settings).",
    "Time axis: the fake trace's clock (event order is predicted; durations are not).",
)


@dataclass(frozen=True)
class OomAt:
    """Where the predicted run runs out of memory."""

    layer: str
    phase: str
    iteration: int
    requested_bytes: int
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "phase": self.phase,
            "iteration": self.iteration,
            "requested_bytes": self.requested_bytes,
            "message": self.message,
        }


@dataclass
class Prediction:
    """A predicted run for one config on one GPU profile."""

    config: Any
    gpu: GpuProfile
    result: RunResult
    fits: bool
    oom_at: OomAt | None
    peak_allocated_bytes: int
    peak_reserved_bytes: int
    peak_process_bytes: int
    peak_tensor_bytes: int
    workspace_bytes: dict[str, int] = field(default_factory=dict)  # cublas, cublaslt, conv_peak
    rules: dict[str, int] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    max_batch: int | None = None
    derived: bool = False  # event sizes derived from the batch model (not traced at this batch)
    allocator: CachingAllocatorModel | None = field(default=None, repr=False)  # final allocator state

    def to_dict(self) -> dict[str, Any]:
        return {
            "predicted": {
                "peak_allocated_bytes": self.peak_allocated_bytes,
                "peak_reserved_bytes": self.peak_reserved_bytes,
                "peak_process_bytes": self.peak_process_bytes,
                "peak_tensor_bytes": self.peak_tensor_bytes,
                "workspace_bytes": dict(self.workspace_bytes),
            },
            "fits": self.fits,
            "oom_at": self.oom_at.to_dict() if self.oom_at is not None else None,
            "max_batch": self.max_batch,
            "gpu": self.gpu.summary_dict(),
            "config": self.config.to_dict(),
            "cuda_mapping_rules": dict(self.rules),
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
            "estimated": self.gpu.estimated,
        }


# ---------------------------------------------------------------------------------------------- replay


@dataclass
class _Replay:
    t: list[float]
    delta: list[int]
    allocated: list[int]
    reserved: list[int]
    process: list[int]
    phase: list[int]
    category: list[int]
    op: list[int]
    module: list[int]
    iteration: list[int]
    oom: OomAt | None
    ws: dict[str, int]
    model: CachingAllocatorModel
    n_tensor_rows: int  # tensor rows replayed (all of them unless OOM)


def _base(s: str) -> str:
    return s.split(".")[0]


def _replay(
    ft: FakeTrace,
    rows: list[Row],
    gpu: GpuProfile,
    *,
    record: bool,
    history: bool = False,
    batch: int | None = None,
) -> _Replay:
    """Replay tensor rows (+ the profile's invisible allocations) through the allocator model.

    ``batch``: the batch size ``rows`` are for (rows derived from a batch model carry another trace's
    geometry; workspace sizes scale with the batch). Default: the trace's own.
    """
    cfg = ft.config
    n_batch = cfg.batch if batch is None else batch
    strings = ft.strings
    model = CachingAllocatorModel(capacity=gpu.allocator_capacity_bytes, record_history=history)
    conv_itemsize = 4 if cfg.dtype == "float32" else 2
    policy = gpu.conv_workspace
    geom = ft.geometry
    blocks: dict[int, Block] = {}
    ws0 = {"cublas": 0, "cublas_backward": 0, "cublaslt": 0, "conv_peak": 0}
    out = _Replay([], [], [], [], [], [], [], [], [], [], None, ws0, model, 0)
    context = gpu.cuda_context_bytes
    kernels_loaded = False
    # threads (main, autograd's device thread) that already hold a cuBLAS / cuBLASLt workspace
    cublas_done: set[bool] = set()
    lt_done: set[bool] = set()
    fwd, bwd = _PHASE["forward"], _PHASE["backward"]
    n = len(rows)
    base_op = [_base(s) for s in strings]

    def emit(r: Row, delta: int, cat: int) -> None:
        if not record:
            return
        out.t.append(r.t)
        out.delta.append(delta)
        out.allocated.append(model.allocated_bytes)
        out.reserved.append(model.reserved_bytes)
        out.process.append(context + (gpu.lazy_kernels_bytes if kernels_loaded else 0) + model.reserved_bytes)
        out.phase.append(r.phase)
        out.category.append(cat)
        out.op.append(r.op)
        out.module.append(r.module)
        out.iteration.append(r.iteration)

    def oom(r: Row, e: AllocatorOOM, what: str) -> None:
        layer = strings[r.module] if 0 <= r.module < len(strings) else ""
        out.oom = OomAt(layer, PHASES[r.phase], r.iteration, e.requested, f"{what}: {e}")

    def transient(r: Row, size: int, tag: str) -> bool:
        if size <= 0:
            return True
        try:
            b = model.malloc(size, tag=tag)
        except AllocatorOOM as e:
            oom(r, e, f"cuDNN workspace (estimate) of {size:,} B")
            return False
        out.ws["conv_peak"] = max(out.ws["conv_peak"], size)
        emit(r, size, _WS)
        model.free(b)
        emit(r, -size, _WS)
        return True

    def kept(r: Row, size: int, tag: str, key: str) -> bool:
        try:
            model.malloc(size, tag=tag)
        except AllocatorOOM as e:
            oom(r, e, f"{tag} of {size:,} B")
            return False
        out.ws[key] = size
        emit(r, size, _WS)
        return True

    for k in range(n):
        r = rows[k]
        if not kernels_loaded and r.phase == fwd:
            kernels_loaded = True
        d = r.delta
        if d > 0:
            old = blocks.get(r.sid)
            try:
                if old is not None:  # in-place growth (resize_): CUDA reallocates the whole storage
                    new_size = old.requested_size + d
                    blocks[r.sid] = model.malloc(new_size, tag=k)
                    model.free(old)
                else:
                    blocks[r.sid] = model.malloc(d, tag=k)
            except AllocatorOOM as e:
                oom(r, e, f"tensor of {d:,} B")
                return out
            emit(r, d, r.category)
        elif d < 0:
            b = blocks.pop(r.sid, None)
            if b is not None:
                model.free(b)
            emit(r, d, r.category)
        out.n_tensor_rows = k + 1
        # invisible allocations after the op's outputs (look ahead: the op's last output row)
        if d <= 0:
            continue
        nxt = rows[k + 1] if k + 1 < n else None
        last_of_op = nxt is None or not (nxt.delta > 0 and nxt.op == r.op and nxt.module == r.module)
        if not last_of_op:
            continue
        op = base_op[r.op] if 0 <= r.op < len(base_op) else ""
        if op in _MATMUL_OPS:
            on_bwd_thread = r.phase == bwd  # CUDA backward nodes run on autograd's device thread
            suffix = "_backward" if on_bwd_thread else ""
            if on_bwd_thread not in cublas_done:
                cublas_done.add(on_bwd_thread)
                what = "cuBLAS workspace of autograd's device thread" if on_bwd_thread else "cuBLAS workspace"
                if not kept(r, gpu.cublas_workspace_bytes, f"{what} (profile)", "cublas" + suffix):
                    return out
            lt = gpu.cublaslt_workspace_bytes
            if on_bwd_thread not in lt_done and op == "addmm" and n_batch > 1 and lt > 0:
                lt_done.add(on_bwd_thread)
                key = "cublaslt" + suffix
                if not kept(r, lt, "cuBLASLt workspace (profile)", key):
                    return out
        elif op in ("convolution", "convolution_backward") and r.phase in (fwd, bwd):
            g = geom.get(strings[r.module] if 0 <= r.module < len(strings) else "")
            if g is None or g.type != "Conv2d":
                continue
            per_sample = g.input_numel // g.input_shape[0] if g.input_shape and g.input_shape[0] else 0
            size = policy.workspace(per_sample * n_batch * conv_itemsize, g.kernel)
            calls = 1
            if op == "convolution_backward":
                # backward-data (when the input needs a gradient) and backward-weight, one after the other
                n_out = 1
                j = k - 1
                while j >= 0 and rows[j].delta > 0 and rows[j].op == r.op and rows[j].module == r.module:
                    n_out += 1
                    j -= 1
                calls = 2 if n_out >= 3 else 1
            for _ in range(calls):
                if not transient(r, size, "cuDNN conv workspace (estimate)"):
                    return out
    return out


# ---------------------------------------------------------------------------------------------- batch model


@dataclass
class _BatchModel:
    """Every event's size as ``a + b × batch`` (exact when the structure does not depend on the batch).

    ``confirmed``: batches where a real trace gave exactly these rows (the two it was fitted from, then
    every trace that matched); ``verified`` once a third one did.
    """

    template: FakeTrace
    a: np.ndarray
    b: np.ndarray
    verified: bool = False
    broken: bool = False
    confirmed: set[int] = field(default_factory=set)

    def rows_at(self, batch: int) -> list[Row]:
        d = self.a + self.b * batch
        return [
            Row(r.t, int(x), r.sid, r.phase, r.op, r.module, r.iteration, r.category)
            for r, x in zip(self.template.rows, d.tolist(), strict=True)
        ]

    def matches(self, ft: FakeTrace) -> bool:
        rows = self.rows_at(ft.config.batch)
        return len(rows) == len(ft.rows) and all(
            _same(x, y) and x.delta == y.delta for x, y in zip(rows, ft.rows, strict=True)
        )


def _same(x: Row, y: Row) -> bool:
    return (x.sid, x.phase, x.op, x.module, x.iteration, x.category) == (
        y.sid,
        y.phase,
        y.op,
        y.module,
        y.iteration,
        y.category,
    )


def _fit(t1: FakeTrace, t2: FakeTrace) -> _BatchModel | None:
    n1, n2 = t1.config.batch, t2.config.batch
    if (
        n1 == n2
        or len(t1.rows) != len(t2.rows)
        or t1.strings[: len(t2.strings)] != t2.strings[: len(t1.strings)]
    ):
        return None
    if not all(_same(x, y) for x, y in zip(t1.rows, t2.rows, strict=True)):
        return None
    d1 = np.fromiter((r.delta for r in t1.rows), np.int64, len(t1.rows))
    d2 = np.fromiter((r.delta for r in t2.rows), np.int64, len(t2.rows))
    diff = d2 - d1
    if np.any(diff % (n2 - n1)):
        return None
    b = diff // (n2 - n1)
    a = d1 - b * n1
    return _BatchModel(t1, a, b, confirmed={n1, n2})


def _key(config: Any) -> Any:
    return replace(config, batch=1, device="cpu", allocator_level=False, sample_hz=0.0)


def _to_cached(bm: _BatchModel) -> predict_cache.CachedModel:
    ft = bm.template
    rows = ft.rows
    cols: dict[str, Any] = {
        "a": bm.a,
        "b": bm.b,
        "delta": [r.delta for r in rows],
        "sid": [r.sid for r in rows],
        "phase": [r.phase for r in rows],
        "op": [r.op for r in rows],
        "module": [r.module for r in rows],
        "iteration": [r.iteration for r in rows],
        "category": [r.category for r in rows],
    }
    meta = {
        "strings": list(ft.strings),
        "spans": predict_cache.spans_to_json(ft.spans),
        "geometry": [
            [
                g.name,
                g.type,
                list(g.input_shape),
                list(g.output_shape),
                list(g.kernel),
                [list(p) for p in g.params],
            ]
            for g in ft.geometry.values()
        ],
        "layer_types": dict(ft.layer_types),
        "output_shape": None if ft.output_shape is None else list(ft.output_shape),
        "param_bytes": ft.param_bytes,
        "rules": dict(ft.rules),
        "trace_s": ft.trace_s,
        "confirmed": sorted(bm.confirmed),
    }
    return predict_cache.CachedModel(
        ft.config.batch,
        np.fromiter((r.t for r in rows), np.float64, len(rows)),
        {k: np.asarray(v, np.int64) for k, v in cols.items()},
        meta,
    )


def _value(v: Any) -> Any:
    return tuple(_value(x) for x in v) if isinstance(v, list) else v


def _from_cached(config: Any, cm: predict_cache.CachedModel) -> _BatchModel | None:
    m = cm.meta
    try:
        c = {k: v.tolist() for k, v in cm.columns.items()}
        rows = [
            Row(t, d, sid, ph, op, mod, it, cat)
            for t, d, sid, ph, op, mod, it, cat in zip(
                cm.t.tolist(),
                c["delta"],
                c["sid"],
                c["phase"],
                c["op"],
                c["module"],
                c["iteration"],
                c["category"],
                strict=True,
            )
        ]
        geometry = {
            str(g[0]): ModuleGeometry(
                str(g[0]),
                str(g[1]),
                tuple(int(x) for x in g[2]),
                tuple(int(x) for x in g[3]),
                (int(g[4][0]), int(g[4][1])),
                tuple((str(k), _value(v)) for k, v in g[5]),
            )
            for g in m["geometry"]
        }
        out = m["output_shape"]
        ft = FakeTrace(
            config=replace(config, batch=cm.template_batch),
            flavour="cuda",
            rows=rows,
            strings=[str(x) for x in m["strings"]],
            spans=predict_cache.spans_from_json(m["spans"]),
            geometry=geometry,
            layer_types={str(k): str(v) for k, v in m["layer_types"].items()},
            output_shape=None if out is None else tuple(int(x) for x in out),
            param_bytes=int(m["param_bytes"]),
            trace_s=float(m["trace_s"]),
            rules={str(k): int(v) for k, v in m["rules"].items()},
        )
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    return _BatchModel(ft, cm.columns["a"], cm.columns["b"], verified=True, confirmed=cm.confirmed)


# ---------------------------------------------------------------------------------------------- API


class Predictor:
    """Predictions with a cache of traces and batch models (hold one per GUI/CLI session).

    ``disk_cache=True``: verified batch models are also stored on disk and read back by later processes
    (``predict_cache``), so a config predicted before is answered without tracing, or importing torch.
    """

    def __init__(self, max_entries: int = 32, *, disk_cache: bool = False) -> None:
        self.max_entries = max_entries
        self.disk_cache = disk_cache
        self._traces: OrderedDict[Any, FakeTrace] = OrderedDict()
        self._models: OrderedDict[Any, _BatchModel] = OrderedDict()
        self._looked_up: set[Any] = set()  # keys already looked up on disk
        self.traces_run = 0
        self.disk_hits = 0

    def _remember(self, cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > self.max_entries:
            cache.popitem(last=False)

    def _model(self, config: Any) -> _BatchModel | None:
        """The batch model for ``config``'s structure: in memory, else from the disk cache."""
        key = _key(config)
        bm = self._models.get(key)
        if bm is None and self.disk_cache and key not in self._looked_up:
            self._looked_up.add(key)
            cm = predict_cache.load(config)
            bm = _from_cached(config, cm) if cm is not None else None
            if bm is not None:
                self.disk_hits += 1
                self._remember(self._models, key, bm)
        return bm

    def _store(self, bm: _BatchModel) -> None:
        if self.disk_cache and bm.verified and not bm.broken and bm.template.status == "ok":
            predict_cache.save(bm.template.config, _to_cached(bm))

    def is_confirmed(self, config: Any) -> bool:
        """A real trace at ``config``'s batch gave exactly the batch model's rows (no new trace needed)."""
        bm = self._model(config)
        return bm is not None and not bm.broken and config.batch in bm.confirmed

    def trace(self, config: Any) -> FakeTrace:
        """The CUDA-mapped trace of ``config`` (cached)."""
        key = replace(config, device="cpu", allocator_level=False, sample_hz=0.0)
        ft = self._traces.get(key)
        if ft is None:
            ft = trace(config, "cuda")
            self.traces_run += 1
            self._remember(self._traces, key, ft)
            self._learn(ft)
        else:
            self._traces.move_to_end(key)
        return ft

    def _learn(self, ft: FakeTrace) -> None:
        if ft.status != "ok":
            return
        key = _key(ft.config)
        bm = self._model(ft.config)
        batch = ft.config.batch
        if bm is None:
            for other_key, other in self._traces.items():
                if _key(other_key) == key and other.config.batch != batch and other.status == "ok":
                    fitted = _fit(other, ft)
                    if fitted is not None:
                        self._remember(self._models, key, fitted)
                    return
        elif not bm.broken and batch not in bm.confirmed:
            if bm.matches(ft):
                bm.verified = True
                bm.confirmed.add(batch)
                self._store(bm)
            else:
                bm.broken = True

    def _batch_model(self, config: Any) -> _BatchModel | None:
        bm = self._model(config)
        if bm is None:
            # a second trace one batch away fits the model
            other = config.batch + 1 if config.batch < MAX_BATCH else config.batch - 1
            self.trace(config)
            self.trace(replace(config, batch=other))
            bm = self._models.get(_key(config))
        return None if bm is None or bm.broken else bm

    def predict(
        self, config: Any, gpu: GpuProfile, *, history: bool = False, derived_ok: bool = False
    ) -> Prediction:
        """Predict ``config`` on ``gpu`` (``derived_ok``: sizes from the batch model, not a new trace)."""
        t0 = time.perf_counter()
        rows: list[Row]
        derived = False
        key = replace(config, device="cpu", allocator_level=False, sample_hz=0.0)
        bm = self._model(config) if derived_ok and key not in self._traces else None
        if bm is not None and not bm.broken:
            ft = bm.template
            rows = bm.rows_at(config.batch)
            derived = True
        else:
            ft = self.trace(config)
            rows = ft.rows
        t1 = time.perf_counter()
        rep = _replay(ft, rows, gpu, record=True, history=history, batch=config.batch)
        t2 = time.perf_counter()
        pred = _prediction(config, ft, rows, gpu, rep, derived)
        if derived and bm is not None and config.batch in bm.confirmed:
            pred.result.notes.append(
                f"a trace at batch {config.batch} gave exactly these event sizes"
                + (" (batch model read from the on-disk cache)" if self.disk_hits else "")
            )
        t3 = time.perf_counter()
        pred.timings_ms = {
            "trace": (ft.trace_s * 1000.0) if not derived and t1 - t0 > 1e-3 else 0.0,
            "trace_or_cache": (t1 - t0) * 1000.0,
            "replay": (t2 - t1) * 1000.0,
            "result": (t3 - t2) * 1000.0,
            "total": (t3 - t0) * 1000.0,
        }
        pred.allocator = rep.model
        return pred

    def fits(self, config: Any, gpu: GpuProfile, *, derived_ok: bool = True) -> bool:
        """Only the verdict (no curves): the fast path of the batch search."""
        bm = self._model(config) if derived_ok else None
        if bm is not None and not bm.broken:
            rep = _replay(bm.template, bm.rows_at(config.batch), gpu, record=False, batch=config.batch)
            return rep.oom is None and bm.template.status == "ok"
        ft = self.trace(config)
        if ft.status != "ok":
            return False
        return _replay(ft, ft.rows, gpu, record=False).oom is None

    def max_batch(self, config: Any, gpu: GpuProfile, *, limit: int = MAX_BATCH) -> int:
        """Largest batch that fits on ``gpu`` (0 if batch 1 does not).

        Candidates are replays of the batch model, searched down from a bound no batch can reach (the live
        tensors alone exceed the allocator's capacity): one by one for the first ``_SCAN`` batches below it
        (exact: the first that fits is the largest), then galloping down and by bisection (which assumes the
        verdict is monotonic in the batch; fragmentation can make it not quite so). Without a batch model:
        exponentially up from 1, then bisection. The answer
        is confirmed with a real trace at ``best + 1`` (at ``best`` when that is the limit): a third batch,
        beyond the two the model was fitted from, where the model must give exactly the traced rows and the
        same verdict; if it does not, the search is redone with real traces. A batch where a trace already
        gave exactly the model's rows needs no new trace: its replay is the same.
        """
        bm = self._batch_model(config)
        use_model = bm is not None
        for _attempt in range(2):
            best = self._search(config, gpu, limit, derived_ok=use_model)
            if not use_model:
                return best
            ok = True
            b = best + 1 if best < limit else best
            model = self._models.get(_key(config))
            if 1 <= b <= limit and not (model is not None and not model.broken and b in model.confirmed):
                ft = self.trace(replace(config, batch=b))
                real = ft.status == "ok" and _replay(ft, ft.rows, gpu, record=False, batch=b).oom is None
                ok = real == (b == best)
            model = self._models.get(_key(config))
            if ok and model is not None and not model.broken:
                return best
            use_model = False
        return best

    def _search(self, config: Any, gpu: GpuProfile, limit: int, *, derived_ok: bool) -> int:
        def fits(b: int) -> bool:
            return self.fits(replace(config, batch=b), gpu, derived_ok=derived_ok)

        if not fits(1):
            return 0
        bm = self._model(config) if derived_ok else None
        if bm is not None and not bm.broken:
            # No batch from ``hi`` on fits. Below it the verdict need not be monotonic (fragmentation can
            # make batch N + k fit where N does not), so the batches just below are tried one by one: the
            # first that fits is then the largest there is. Past _SCAN of them: gallop down, then bisect.
            lo, hi = 1, _tensor_bound(bm, gpu.allocator_capacity_bytes, limit)
            for _ in range(_SCAN):
                if hi - 1 <= lo:
                    break
                if fits(hi - 1):
                    return hi - 1
                hi -= 1
            step = 2
            while hi - step > lo:
                if fits(hi - step):
                    lo = hi - step
                    break
                hi -= step
                step *= 2
        else:
            lo, hi = 1, 2
            while hi <= limit and fits(hi):
                lo, hi = hi, hi * 2
            hi = min(hi, limit + 1)
        # fits(lo), not fits(hi) (or hi beyond the limit). Inside the bracket the verdict need not be
        # monotonic either: bisect only while the bracket is wide, then try its batches from the top down —
        # the first that fits is the largest in the bracket.
        while hi - lo > 2 * _SCAN:
            mid = (lo + hi) // 2
            if fits(mid):
                lo = mid
            else:
                hi = mid
        for b in range(hi - 1, lo, -1):
            if fits(b):
                return b
        return lo


def _tensor_bound(bm: _BatchModel, capacity: int, limit: int) -> int:
    """The smallest batch whose live tensors alone exceed ``capacity`` at some event (``limit + 1`` if none).

    The allocator model holds at least the live tensors' bytes at every event and at most ``capacity``, so
    no batch from there on fits. Each event's live total is affine in the batch with a slope ≥ 0, so the
    peak is nondecreasing in the batch: bisection.
    """

    def peak(batch: int) -> int:
        return int(np.cumsum(bm.a + bm.b * batch).max(initial=0))

    if peak(limit) <= capacity:
        return limit + 1
    lo, hi = 0, limit  # peak(lo) <= capacity (or lo = 0), peak(hi) > capacity
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if peak(mid) > capacity:
            hi = mid
        else:
            lo = mid
    return hi


def _prediction(
    config: Any, ft: FakeTrace, rows: list[Row], gpu: GpuProfile, rep: _Replay, derived: bool
) -> Prediction:
    strings = list(ft.strings)
    n = len(rows)
    # tensor timeline: the mapped rows (up to the OOM, like a measured run that stopped there)
    m = rep.n_tensor_rows if rep.oom is not None else n
    trows = rows[:m]
    delta = np.fromiter((r.delta for r in trows), np.int64, m)
    tensor = Timeline(
        t=np.fromiter((r.t for r in trows), np.float64, m),
        delta=delta,
        total=np.cumsum(delta),
        phase=np.fromiter((r.phase for r in trows), np.int8, m),
        category=np.fromiter((r.category for r in trows), np.int8, m),
        op=np.fromiter((r.op for r in trows), np.int32, m),
        module=np.fromiter((r.module for r in trows), np.int32, m),
        iteration=np.fromiter((r.iteration for r in trows), np.int32, m),
    )
    tensor.storage = np.fromiter((r.sid for r in trows), np.int32, m)
    alloc_total = np.asarray(rep.allocated, np.int64)
    reserved = np.asarray(rep.reserved, np.int64)
    allocator = Timeline(
        t=np.asarray(rep.t, np.float64),
        delta=np.asarray(rep.delta, np.int64),
        total=alloc_total,
        phase=np.asarray(rep.phase, np.int8),
        category=np.asarray(rep.category, np.int8),
        op=np.asarray(rep.op, np.int32),
        module=np.asarray(rep.module, np.int32),
        iteration=np.asarray(rep.iteration, np.int32),
        reserved=reserved,
        active=alloc_total.copy(),  # one stream, no record_stream: active == allocated
    )
    process = np.asarray(rep.process, np.int64)
    device = DeviceSamples(
        t=allocator.t.copy(),
        process=process,
        device_used=None,
        source=f"PREDICTED nvidia-smi process memory on {gpu.name}: CUDA context + kernels + reserved",
        achieved_hz=0.0,
    )
    peak_alloc = rep.model.peak_allocated_bytes
    peak_res = rep.model.peak_reserved_bytes
    peak_proc = int(process.max()) if len(process) else gpu.cuda_context_bytes
    peak_tensor = int(tensor.total.max()) if m else 0
    pi = int(alloc_total.argmax()) if len(alloc_total) else -1
    fault = None
    status = "ok"
    if rep.oom is not None:
        status = "oom"
        fault = Fault("oom", "PREDICTED " + rep.oom.message, rep.oom.layer, rep.oom.phase, rep.oom.iteration)
    elif ft.status != "ok":
        status = "error"
        fault = ft.fault
    summary = Summary(
        peak_allocated_bytes=peak_alloc,
        peak_tensor_bytes=peak_tensor,
        peak_reserved_bytes=peak_res,
        peak_device_bytes=peak_proc,
        param_bytes=ft.param_bytes,
        output_shape=_output_shape(ft, config.batch),
        peak_time_s=float(allocator.t[pi]) if pi >= 0 else 0.0,
        peak_phase=PHASES[int(allocator.phase[pi])] if pi >= 0 else "",
        peak_module=strings[int(allocator.module[pi])]
        if pi >= 0 and 0 <= allocator.module[pi] < len(strings)
        else "",
    )
    meta = RunMeta(config, device=f"predicted:{gpu.name}")
    environment = RunEnvironment(
        predicted=True,
        device=f"predicted:{gpu.name}",
        device_name=f"{gpu.name} (PREDICTED)",
        device_total_bytes=gpu.total_memory_bytes,
        gpu_profile=gpu.summary_dict(),
        cuda_mapping_rules=dict(ft.rules),
        torch=torch_version_string(),
    )
    notes = list(PREDICTED_NOTES)
    conv_state = "measured" if gpu.conv_workspace.measured else "estimate"
    notes.append(
        f"GPU profile {gpu.name}: {'ESTIMATED (not calibrated)' if gpu.estimated else 'calibrated'}; "
        f"cuBLAS {rep.ws['cublas']:,} B, cuBLASLt {rep.ws['cublaslt']:,} B, largest cuDNN workspace "
        f"{rep.ws['conv_peak']:,} B ({conv_state}); CUDA context "
        f"{gpu.cuda_context_bytes:,} B + kernels {gpu.lazy_kernels_bytes:,} B outside the allocator."
    )
    if derived:
        notes.append(
            "event sizes derived from the batch model (two traces at other batch sizes; exact when "
            "the event structure does not depend on the batch)"
        )
    result = RunResult(
        config=meta,
        environment=environment,
        summary=summary,
        strings=strings,
        tensor=tensor,
        allocator=allocator,
        device=device,
        spans=list(ft.spans),
        layers=[],
        status=status,  # type: ignore[arg-type]
        fault=fault,
        predicted=True,
        name=f"PREDICTED {config.label()} on {gpu.name}",
        notes=notes,
    )
    if ft.execution is not None and not derived:
        try:
            from vggexplorer.core.run.attribution import layer_stats

            result.layers = layer_stats(ft.execution, result)
        except Exception as e:  # the layer table is a nicety; the curves stand without it
            result.notes.append(f"layer table not available for the prediction: {type(e).__name__}: {e}")
    return Prediction(
        config=config,
        gpu=gpu,
        result=result,
        fits=rep.oom is None and ft.status == "ok",
        oom_at=rep.oom,
        peak_allocated_bytes=peak_alloc,
        peak_reserved_bytes=peak_res,
        peak_process_bytes=peak_proc,
        peak_tensor_bytes=peak_tensor,
        workspace_bytes=dict(rep.ws),
        rules=dict(ft.rules),
        derived=derived,
    )


def _output_shape(ft: FakeTrace, batch: int) -> tuple[int, ...] | None:
    s = ft.output_shape
    if s is None:
        return None
    return (batch, *s[1:]) if len(s) else s


def predict(
    config: Any,
    gpu: GpuProfile,
    *,
    predictor: Predictor | None = None,
    with_max_batch: bool = False,
    history: bool = False,
) -> Prediction:
    """Predict ``config`` (an engine ``RunConfig``) on ``gpu``; optionally the largest batch that fits too."""
    p = predictor if predictor is not None else Predictor()
    pred = p.predict(config, gpu, history=history)
    if with_max_batch:
        t = time.perf_counter()
        pred.max_batch = p.max_batch(config, gpu)
        pred.timings_ms["max_batch"] = (time.perf_counter() - t) * 1000.0
    return pred


def max_batch(
    config: Any, gpu: GpuProfile, *, predictor: Predictor | None = None, limit: int = MAX_BATCH
) -> int:
    """Largest batch size that fits ``config`` on ``gpu`` (0 when batch 1 does not)."""
    p = predictor if predictor is not None else Predictor()
    return p.max_batch(config, gpu, limit=limit)


def conv_workspace_sizes(config: Any, gpu: GpuProfile) -> dict[str, int]:
    """Per conv module: the (estimated) cuDNN workspace of one call — for reports."""
    from vggexplorer.core.predict.faketrace import module_geometry

    itemsize = 4 if config.dtype == "float32" else 2
    return {
        name: gpu.conv_workspace.workspace(g.input_numel * itemsize, g.kernel)
        for name, g in module_geometry(config).items()
        if g.type == "Conv2d"
    }


# ---------------------------------------------------------------------------------------------- calibrate


class CalibrationError(RuntimeError):
    """Calibration needs a CUDA GPU (and NVML for the context size)."""


def backward_grad_for(y: Any) -> Any:
    """A contiguous, materialised output gradient for ``y.backward(grad)`` (allocated by the caller's clock).

    ``y.sum().backward()`` passes ``grad.expand(y.shape)`` (stride 0, tools/autograd/derivatives.yaml ``sum``)
    to ``y``'s backward; convolution backward makes it contiguous, allocating a y-sized copy while it runs.
    """
    import torch

    return torch.ones_like(y, memory_format=torch.contiguous_format)


def calibrate(device: int = 0, *, save: bool = True) -> GpuProfile:
    """Measure, on the GPU at hand, what the trace cannot see; save it as a calibrated profile.

    One short run in this process (call it in a fresh process, before anything else touched CUDA):

    - CUDA context: NVML process used − ``memory_reserved`` after CUDA init and a 1-element tensor.
    - cuBLAS (and cuBLASLt) workspace: ``memory_allocated`` growth at the first ``mm`` (first ``addmm`` with a
      bias and 4 rows) minus the output blocks.
    - cuDNN convolution workspaces: ``max_memory_allocated`` during VGG-like convolutions (3×3 and a 7×7 with
      4096 outputs, forward and backward) minus the tensors alive around the call; the largest ratio to the
      input bytes becomes ``conv_workspace.fraction_of_input`` (cap: the largest workspace seen × 2).
    - lazily loaded kernels: NVML process used − context − reserved after those calls.

    Saved to ``user_profile_dir()/<name>.json`` with ``estimated: false``.
    """
    import re

    import torch

    from vggexplorer.core.devices import nvml
    from vggexplorer.core.predict.gpus import ConvWorkspacePolicy, user_profile_dir

    if not torch.cuda.is_available():
        raise CalibrationError("calibration needs a CUDA GPU: torch.cuda.is_available() is False here")
    dev = torch.device("cuda", device)
    props = torch.cuda.get_device_properties(dev)
    nv, why = nvml.device_for_torch(dev)

    def process_used() -> int | None:
        if nv is None:
            return None
        pm = nvml.process_memory(nv.handle)
        return None if nvml.is_na(pm.used) else int(pm.used)

    torch.cuda.synchronize(dev)
    one = torch.empty(1, device=dev)
    torch.cuda.synchronize(dev)
    used0 = process_used()
    reserved0 = torch.cuda.memory_reserved(dev)
    context = (used0 - reserved0) if used0 is not None else None

    def alloc_growth(fn: Any) -> int:
        torch.cuda.synchronize(dev)
        before = torch.cuda.memory_allocated(dev)
        out = fn()
        torch.cuda.synchronize(dev)
        grown = torch.cuda.memory_allocated(dev) - before
        out_bytes = sum(
            ((t.untyped_storage().nbytes() + 511) // 512) * 512
            for t in (out if isinstance(out, tuple) else (out,))
        )
        del out
        return max(grown - out_bytes, 0)

    a = torch.randn(4, 8, device=dev)
    w = torch.randn(8, 8, device=dev)
    bias = torch.randn(8, device=dev)
    cublas = alloc_growth(lambda: a @ w)
    cublaslt = alloc_growth(lambda: torch.addmm(bias, a, w))

    fractions: list[float] = []
    biggest = 0
    torch.backends.cudnn.benchmark = False
    for n, cin, cout, hw, k in ((8, 64, 64, 112, 3), (8, 256, 256, 56, 3), (4, 512, 4096, 12, 7)):
        x = torch.randn(n, cin, hw, hw, device=dev, requires_grad=True)
        conv = torch.nn.Conv2d(cin, cout, k).to(dev)
        torch.cuda.synchronize(dev)
        base = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        y = conv(x)
        torch.cuda.synchronize(dev)
        fwd_ws = torch.cuda.max_memory_allocated(dev) - torch.cuda.memory_allocated(dev)
        # the output gradient exists before the window: y.sum().backward() would hand convolution_backward
        # an expanded stride-0 gradient (tools/autograd/derivatives.yaml, ``sum``: ``grad.expand(...)``),
        # which cuDNN's backward copies contiguous inside the window — a y-sized block counted as workspace
        grad = backward_grad_for(y)
        torch.cuda.synchronize(dev)
        base = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        y.backward(grad)
        torch.cuda.synchronize(dev)
        bwd_ws = torch.cuda.max_memory_allocated(dev) - max(torch.cuda.memory_allocated(dev), base)
        ws = max(fwd_ws, bwd_ws, 0)
        in_bytes = x.numel() * x.element_size()
        fractions.append(ws / in_bytes)
        biggest = max(biggest, ws)
        del x, conv, y, grad
    # autograd's device thread gets its own cuBLAS workspace at its first matmul (handles are per thread,
    # CublasHandlePool.cpp ``getCurrentCUDABlasHandle``): measured as the growth of a backward through an mm
    # minus the gradient it returns; the predictor inserts one of ``cublas_workspace`` size per thread
    a2 = torch.randn(4, 8, device=dev, requires_grad=True)
    out2 = a2 @ w
    g2 = backward_grad_for(out2)
    torch.cuda.synchronize(dev)
    before_bwd = torch.cuda.memory_allocated(dev)
    out2.backward(g2)
    torch.cuda.synchronize(dev)
    grad_block = ((a2.grad.untyped_storage().nbytes() + 511) // 512) * 512 if a2.grad is not None else 0
    cublas_bwd = max(torch.cuda.memory_allocated(dev) - before_bwd - grad_block, 0)
    del a2, out2, g2
    torch.cuda.synchronize(dev)
    used1 = process_used()
    kernels = (used1 - (context or 0) - torch.cuda.memory_reserved(dev)) if used1 is not None else None
    del one
    cc = (int(props.major), int(props.minor))
    sources = [
        f"calibrated on this machine with torch {torch.__version__}, CUDA {torch.version.cuda}, "
        f"cuDNN {torch.backends.cudnn.version()} by vggexplorer calibrate",
    ]
    if context is None:
        sources.append(f"CUDA context not measured ({why}); default estimate kept")
    if cublas_bwd != cublas:
        sources.append(
            f"cuBLAS workspace of autograd's device thread measured {cublas_bwd:,} B, main thread "
            f"{cublas:,} B: the predictor uses the main thread's size for both"
        )
    profile = GpuProfile(
        name=str(props.name),
        total_memory_bytes=int(props.total_memory),
        compute_capability=cc,
        cuda_context_bytes=int(context) if context is not None and context > 0 else 400 * 1024 * 1024,
        lazy_kernels_bytes=int(kernels) if kernels is not None and kernels > 0 else 0,
        cublas_workspace=int(cublas),
        cublaslt_workspace=int(cublaslt),
        conv_workspace=ConvWorkspacePolicy(max(fractions, default=0.0), max(2 * biggest, 1), True, True),
        aliases=(),
        estimated=context is None,
        sources=tuple(sources),
    )
    if save:
        slug = re.sub(r"[^a-z0-9]+", "-", profile.name.lower()).strip("-") or "gpu"
        path = user_profile_dir() / f"{slug}.json"
        profile.save(path)
        profile = replace(profile, path=str(path))
    return profile
