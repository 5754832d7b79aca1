"""Attribution: from a traced execution to a RunResult — layer table, categories over time, summary.

- ``build_result(execution, allocator, device_samples, environment)`` assembles the RunResult.
- ``layer_stats`` gives one :class:`LayerStats` per leaf module: output shape and bytes, bytes its forward
  left alive for backward (``saved_bytes``), parameter and gradient bytes, tensor-level and allocator-level
  peaks during its forward and backward spans, and its mean forward/backward time per measured iteration.
- Categories over time (``category_series``) and the step-function lookup live in
  ``core.results.analysis``.
- ``summarize(result)`` recomputes the Summary from the timelines.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from vggexplorer.core.results.meta import RunEnvironment, RunMeta
from vggexplorer.core.results.result import (
    CATEGORIES,
    PHASES,
    DeviceSamples,
    LayerStats,
    RunResult,
    Span,
    Summary,
    Timeline,
)

if TYPE_CHECKING:
    from vggexplorer.core.run.execution import Execution

__all__ = ["build_result", "layer_stats", "peak_in", "summarize"]

_PHASE = {p: i for i, p in enumerate(PHASES)}


def build_result(
    ex: Execution,
    *,
    allocator: Timeline | None = None,
    device_samples: DeviceSamples | None = None,
    environment: RunEnvironment | Mapping[str, Any] | None = None,
    name: str = "",
) -> RunResult:
    """The RunResult of an execution; with only ``ex``, the tensor level alone (a fake run's result)."""
    device_samples = device_samples if device_samples is not None else DeviceSamples()
    environment = environment if environment is not None else RunEnvironment()
    tr = ex.tracer
    tensor = tr.tensor_timeline()
    alloc = allocator if allocator is not None else Timeline()
    if not isinstance(environment, RunEnvironment):
        environment = RunEnvironment.from_dict(environment)
    result = RunResult(
        config=RunMeta(ex.config, device=str(ex.device), fake=ex.fake),
        environment=environment,
        summary=Summary(0, 0, None, None, ex.param_bytes, ex.output_shape),
        strings=tr.strings,
        tensor=tensor,
        allocator=alloc,
        device=device_samples,
        spans=list(tr.spans),
        layers=[],
        status=ex.status,
        fault=ex.fault,
        predicted=ex.fake,
        name=name or ex.config.label(),
    )
    if allocator is None and not ex.fake:
        result.notes.append("allocator level not recorded")
    result.layers = layer_stats(ex, result)
    result.summary = summarize(result)
    return result


def peak_in(tl: Timeline, t0: float, t1: float) -> int:
    """Highest level of ``tl`` during [t0, t1] (including the level carried in at t0)."""
    if len(tl) == 0:
        return 0
    i0 = int(np.searchsorted(tl.t, t0, side="left"))
    i1 = int(np.searchsorted(tl.t, t1, side="right"))
    carried = int(tl.total[i0 - 1]) if i0 > 0 else 0
    inside = int(tl.total[i0:i1].max()) if i1 > i0 else carried
    return max(carried, inside)


def layer_stats(ex: Execution, result: RunResult) -> list[LayerStats]:
    tr = ex.tracer
    cfg = ex.config
    first_measured = cfg.warmup
    measured_iters = max(1, cfg.iterations)
    fwd_spans: dict[str, list[Span]] = {}
    bwd_spans: dict[str, list[Span]] = {}
    phase_end: dict[tuple[str, int], float] = {}
    for s in result.spans:
        if s.module == "":
            phase_end[(s.phase, s.iteration)] = s.t1
        elif s.iteration >= first_measured:
            (fwd_spans if s.phase == "forward" else bwd_spans).setdefault(s.module, []).append(s)
    # saved for backward: storages a layer's forward allocated that outlive the end of that forward phase
    saved: dict[str, int] = {}
    it = tr.iteration if result.status != "ok" else cfg.warmup + cfg.iterations - 1
    fwd = _PHASE["forward"]
    end_fwd = phase_end.get(("forward", it))
    outputs_cat = CATEGORIES.index("outputs")
    if end_fwd is not None:
        cats = tr.resolved_categories()
        for sid, nb in enumerate(tr.sid_nbytes):
            if tr.sid_phase[sid] != fwd or tr.sid_iter[sid] != it or cats[sid] == outputs_cat:
                continue
            fr = tr.sid_free_row[sid]
            if fr < 0 or tr.t[fr] > end_fwd:
                m = tr.strings[tr.sid_module[sid]] if tr.sid_module[sid] >= 0 else ""
                saved[m] = saved.get(m, 0) + nb
    rows: list[LayerStats] = []
    for info in ex.layers:
        shape, obytes = tr.outputs.get(info.name, ((), 0))
        fs, bs = fwd_spans.get(info.name, []), bwd_spans.get(info.name, [])
        rows.append(
            LayerStats(
                name=info.name,
                type=info.type,
                head_index=info.head_index,
                output_shape=tuple(shape),
                output_bytes=int(obytes),
                saved_bytes=saved.get(info.name, 0),
                param_bytes=info.param_bytes,
                grad_bytes=info.grad_bytes,
                peak_forward_bytes=max((peak_in(result.tensor, s.t0, s.t1) for s in fs), default=0),
                peak_backward_bytes=max((peak_in(result.tensor, s.t0, s.t1) for s in bs), default=0),
                peak_forward_allocator_bytes=max(
                    (peak_in(result.allocator, s.t0, s.t1) for s in fs), default=0
                ),
                peak_backward_allocator_bytes=max(
                    (peak_in(result.allocator, s.t0, s.t1) for s in bs), default=0
                ),
                forward_s=sum(s.t1 - s.t0 for s in fs) / measured_iters,
                backward_s=sum(s.t1 - s.t0 for s in bs) / measured_iters,
            )
        )
    return rows


def _valid_max(a: np.ndarray | None) -> int | None:
    if a is None or len(a) == 0:
        return None
    v = a[a >= 0]
    return int(v.max()) if len(v) else None


def summarize(r: RunResult) -> Summary:
    primary = r.allocator if len(r.allocator) else r.tensor
    i = primary.peak_index
    peak_t, peak_phase, peak_module = 0.0, "", ""
    if i >= 0:
        peak_t = float(primary.t[i])
        peak_phase = PHASES[int(primary.phase[i])] if 0 <= int(primary.phase[i]) < len(PHASES) else ""
        peak_module = r.string(int(primary.module[i]))
    return Summary(
        peak_allocated_bytes=primary.peak,
        peak_tensor_bytes=r.tensor.peak,
        peak_reserved_bytes=_valid_max(r.allocator.reserved),
        peak_device_bytes=_valid_max(r.device.process) if len(r.device) else None,
        param_bytes=r.summary.param_bytes,
        output_shape=r.summary.output_shape,
        peak_time_s=peak_t,
        peak_phase=peak_phase,
        peak_module=peak_module,
    )
