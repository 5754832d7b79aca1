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
``disk_cache=True`` verified batch models are stored on disk (:mod:`.cache`) for later processes.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from vggexplorer.core.allocator.caching import CachingAllocatorModel
from vggexplorer.core.predict import cache as predict_cache
from vggexplorer.core.predict.batch_model import (
    BatchModel,
    fit_batch_model,
    from_cached,
    model_key,
    tensor_bound,
    to_cached,
)
from vggexplorer.core.predict.faketrace import FakeTrace, Row, trace
from vggexplorer.core.predict.gpus import GpuProfile, torch_version_string
from vggexplorer.core.predict.replay import OomAt, Replay, replay_rows
from vggexplorer.core.results.meta import RunEnvironment, RunMeta
from vggexplorer.core.results.result import (
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

#: labels carried by every predicted result (DESIGN: a predicted curve is always labelled as predicted)
PREDICTED_NOTES = (
    "PREDICTED, not measured: tensor events from a trace on meta/fake tensors mapped to CUDA; allocator "
    "replayed through a model of PyTorch's CUDA caching allocator (native backend, one stream, default "
    "settings).",
    "Time axis: the fake trace's clock (event order is predicted; durations are not).",
)


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


class Predictor:
    """Predictions with a cache of traces and batch models (hold one per GUI/CLI session).

    ``disk_cache=True``: verified batch models are also stored on disk and read back by later processes
    (``predict_cache``), so a config predicted before is answered without tracing, or importing torch.
    """

    def __init__(self, max_entries: int = 32, *, disk_cache: bool = False) -> None:
        self.max_entries = max_entries
        self.disk_cache = disk_cache
        self._traces: OrderedDict[Any, FakeTrace] = OrderedDict()
        self._models: OrderedDict[Any, BatchModel] = OrderedDict()
        self._looked_up: set[Any] = set()  # keys already looked up on disk
        self.traces_run = 0
        self.disk_hits = 0

    def _remember(self, cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > self.max_entries:
            cache.popitem(last=False)

    def _model(self, config: Any) -> BatchModel | None:
        """The batch model for ``config``'s structure: in memory, else from the disk cache."""
        key = model_key(config)
        bm = self._models.get(key)
        if bm is None and self.disk_cache and key not in self._looked_up:
            self._looked_up.add(key)
            cm = predict_cache.load(config)
            bm = from_cached(config, cm) if cm is not None else None
            if bm is not None:
                self.disk_hits += 1
                self._remember(self._models, key, bm)
        return bm

    def _store(self, bm: BatchModel) -> None:
        if self.disk_cache and bm.verified and not bm.broken and bm.template.status == "ok":
            predict_cache.save(bm.template.config, to_cached(bm))

    def is_confirmed(self, config: Any) -> bool:
        """A real trace at ``config``'s batch gave exactly the batch model's rows (no new trace needed)."""
        bm = self._model(config)
        return bm is not None and not bm.broken and config.batch in bm.confirmed

    def trace(self, config: Any) -> FakeTrace:
        """The CUDA-mapped trace of ``config`` (cached)."""
        key = config.trace_key()
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
        key = model_key(ft.config)
        bm = self._model(ft.config)
        batch = ft.config.batch
        if bm is None:
            for other_key, other in self._traces.items():
                if model_key(other_key) == key and other.config.batch != batch and other.status == "ok":
                    fitted = fit_batch_model(other, ft)
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

    def _batch_model(self, config: Any) -> BatchModel | None:
        bm = self._model(config)
        if bm is None:
            # a second trace one batch away fits the model
            other = config.batch + 1 if config.batch < MAX_BATCH else config.batch - 1
            self.trace(config)
            self.trace(replace(config, batch=other))
            bm = self._models.get(model_key(config))
        return None if bm is None or bm.broken else bm

    def predict(
        self, config: Any, gpu: GpuProfile, *, history: bool = False, derived_ok: bool = False
    ) -> Prediction:
        """Predict ``config`` on ``gpu`` (``derived_ok``: sizes from the batch model, not a new trace)."""
        t0 = time.perf_counter()
        rows: list[Row]
        derived = False
        key = config.trace_key()
        bm = self._model(config) if derived_ok and key not in self._traces else None
        if bm is not None and not bm.broken:
            ft = bm.template
            rows = bm.rows_at(config.batch)
            derived = True
        else:
            ft = self.trace(config)
            rows = ft.rows
        t1 = time.perf_counter()
        rep = replay_rows(ft, rows, gpu, record=True, history=history, batch=config.batch)
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
            rep = replay_rows(bm.template, bm.rows_at(config.batch), gpu, record=False, batch=config.batch)
            return rep.oom is None and bm.template.status == "ok"
        ft = self.trace(config)
        if ft.status != "ok":
            return False
        return replay_rows(ft, ft.rows, gpu, record=False).oom is None

    def max_batch(self, config: Any, gpu: GpuProfile, *, limit: int = MAX_BATCH) -> int:
        """Largest batch that fits on ``gpu`` (0 if batch 1 does not).

        Candidates are replays of the batch model, searched down from a bound no batch can reach (the live
        tensors alone exceed the allocator's capacity): one by one for the first ``_SCAN`` batches below it
        (exact: the first that fits is the largest), then galloping down; the bracket the gallop leaves is
        bisected while it is wider than ``2 × _SCAN`` (bisection assumes the verdict is monotonic in the
        batch; fragmentation can make it not quite so) and then tried from its top down. Without a batch
        model: exponentially up from 1, then the same. The answer is confirmed with a real trace at
        ``best + 1`` (at ``best`` when that is the limit): a third batch, beyond the two the model was fitted
        from, where the model must give exactly the traced rows and the same verdict; if it does not, the
        search is redone with real traces. A batch where a trace already gave exactly the model's rows needs
        no new trace: its replay is the same.
        """
        bm = self._batch_model(config)
        use_model = bm is not None
        for _attempt in range(2):
            best = self._search(config, gpu, limit, derived_ok=use_model)
            if not use_model:
                return best
            ok = True
            b = best + 1 if best < limit else best
            model = self._models.get(model_key(config))
            if 1 <= b <= limit and not (model is not None and not model.broken and b in model.confirmed):
                ft = self.trace(replace(config, batch=b))
                real = ft.status == "ok" and replay_rows(ft, ft.rows, gpu, record=False, batch=b).oom is None
                ok = real == (b == best)
            model = self._models.get(model_key(config))
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
            # first that fits is then the largest there is. Past _SCAN of them: gallop down (see below).
            lo, hi = 1, tensor_bound(bm, gpu.allocator_capacity_bytes, limit)
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


def _prediction(
    config: Any, ft: FakeTrace, rows: list[Row], gpu: GpuProfile, rep: Replay, derived: bool
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
