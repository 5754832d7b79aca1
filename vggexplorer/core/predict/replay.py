"""Replay a mapped fake trace through the caching-allocator model, with what a tensor trace cannot see.

The cuBLAS, cuBLASLt and cuDNN workspaces of the GPU profile are inserted where PyTorch makes them (the
rules and their sources are in :mod:`.predictor`'s docstring); the replay gives the allocated, reserved and
process series, the per-event categories and, when the model runs out of capacity, where (:class:`OomAt`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vggexplorer.core.allocator.caching import AllocatorOOM, Block, CachingAllocatorModel
from vggexplorer.core.predict.faketrace import FakeTrace, Row
from vggexplorer.core.predict.gpus import GpuProfile
from vggexplorer.core.results.result import (
    CATEGORIES,
    PHASES,
)

_CAT = {c: i for i, c in enumerate(CATEGORIES)}
_PHASE = {p: i for i, p in enumerate(PHASES)}
_MATMUL_OPS = frozenset({"addmm", "mm", "bmm", "addmv", "mv", "baddbmm", "addbmm", "matmul", "addr", "dot"})
_WS = _CAT["untracked_workspace"]


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
class Replay:
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


def replay_rows(
    ft: FakeTrace,
    rows: list[Row],
    gpu: GpuProfile,
    *,
    record: bool,
    history: bool = False,
    batch: int | None = None,
) -> Replay:
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
    out = Replay([], [], [], [], [], [], [], [], [], [], None, ws0, model, 0)
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
