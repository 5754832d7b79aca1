"""Shared analysis of a RunResult, Qt-free and torch-free: what the plots, comparisons, run files and the
run's attribution all read off the timelines.

- Step functions: a memory level holds from one event to the next. ``step_index`` finds the event in force
  at given times; ``step_at`` (arrays) and ``level_at`` (one time, for a read-out) are the one lookup built
  on it; ``step_envelope`` thins a huge step function to what a pixel column can show.
- Categories: ``category_series`` (bytes per category on the run's own event times) and
  ``category_levels_at`` (at chosen times) share one derivation; ``categories_at_peak`` and
  ``category_samples`` (the times a stacked plot is drawn at) build on it.
- Phases and layers: ``phase_intervals`` (the shaded phases), ``phase_spans``, ``layer_boundaries``.
- Lining runs up: ``first_forward_time``, ``run_offsets``, ``aligned_times``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from vggexplorer.core.results.result import CATEGORIES, PHASES, ROW_CATEGORIES, RunResult, Timeline

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: The phases drawn as shaded bands (and the ones runs are aligned by when their phase lists differ).
SHADED_PHASES: tuple[str, ...] = ("forward", "backward", "optimizer")


# --------------------------------------------------------------------------------------------------------
# Step functions


def step_index(t_events: npt.ArrayLike, t: npt.ArrayLike) -> I64:
    """Index of the event in force at each of ``t`` (the last event at or before it); -1 before the first.

    ``t_events`` must be sorted. This is the one lookup of a step function (``values[i]`` holds from
    ``t_events[i]`` until the next event) that ``step_at`` and ``level_at`` use.
    """
    return np.asarray(np.searchsorted(np.asarray(t_events), t, side="right"), dtype=np.int64) - 1


def step_at(t_events: npt.ArrayLike, values: npt.ArrayLike, t: npt.ArrayLike, before: int = 0) -> I64:
    """Value of a step series (``values[i]`` from ``t_events[i]`` on) at times ``t``, as int64; ``before``
    before the first event (and everywhere when there are no events)."""
    times = np.asarray(t)
    if len(np.asarray(t_events)) == 0:
        return np.full(len(times), before, dtype=np.int64)
    k = step_index(t_events, times)
    out = np.asarray(values, dtype=np.int64)[np.clip(k, 0, None)]
    out[k < 0] = before
    return out


def level_at(t: F64, y: npt.NDArray[Any], x: float) -> float | None:
    """The step function's value at time ``x`` (None before the first event)."""
    if len(t) == 0:
        return None
    i = int(step_index(t, [x])[0])
    return None if i < 0 else float(y[i])


def step_envelope(t: F64, y: npt.NDArray[Any], x0: float, x1: float, npix: int) -> tuple[F64, F64]:
    """Points that draw the step function ``y[i]`` (holding from ``t[i]`` to ``t[i+1]``) over ``[x0, x1]``.

    With at most ``2 * npix`` events in view the exact steps come back (two points per event). Otherwise
    each pixel column that holds events gives four points at the time of its first event: the level
    entering it, the column's max and min, and the level leaving it — so peaks survive and the line is
    horizontal between columns. ``t`` must be sorted. The event before ``x0`` and the one after ``x1`` are
    kept so the line reaches the edges.
    """
    n = len(t)
    if n == 0 or npix < 1:
        return np.zeros(0), np.zeros(0)
    if not x1 > x0:
        x0, x1 = float(t[0]), float(t[-1]) if t[-1] > t[0] else float(t[0]) + 1.0
    i0 = max(int(np.searchsorted(t, x0, side="right")) - 1, 0)
    i1 = min(int(np.searchsorted(t, x1, side="right")) + 1, n)
    ts, ys = t[i0:i1], y[i0:i1]
    m = len(ts)
    if m <= 2 * npix:
        xs = np.repeat(ts, 2)[1:]
        yv = np.repeat(ys, 2)[:-1].astype(np.float64)
        return xs.astype(np.float64, copy=False), yv
    edges = np.linspace(x0, x1, npix + 1)
    starts = np.searchsorted(ts, edges[:-1], side="left")
    starts[0] = 0
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:]
    ends[-1] = m
    keep = ends > starts
    s, e = starts[keep], ends[keep]
    mx = np.maximum.reduceat(ys, s)
    mn = np.minimum.reduceat(ys, s)
    last = ys[e - 1]
    prev = np.empty_like(last)
    prev[0] = ys[0]
    prev[1:] = last[:-1]
    xs = np.repeat(ts[s], 4).astype(np.float64, copy=False)
    yv = np.column_stack((prev, mx, mn, last)).astype(np.float64).ravel()
    return xs, yv


# --------------------------------------------------------------------------------------------------------
# Categories


def _category_levels(r: RunResult, ts: F64) -> dict[str, I64]:
    """Bytes per category at ``ts``: every row category; the derived ones only where the run has them."""
    ten, al = r.tensor, r.allocator
    out: dict[str, I64] = {}
    for c in ROW_CATEGORIES:
        ci = CATEGORIES.index(c)
        out[c] = step_at(ten.t, np.cumsum(np.where(ten.category == ci, ten.delta, 0)), ts)
    tensor_level = step_at(ten.t, ten.total, ts)
    if len(al):
        alloc_level = step_at(al.t, al.total, ts)
        out["untracked_workspace"] = np.clip(alloc_level - tensor_level, 0, None)
        if al.reserved is not None:
            reserved = step_at(al.t, al.reserved, ts)
            out["allocator_overhead"] = np.clip(reserved - alloc_level, 0, None)
            if len(r.device) and r.device.process is not None:
                proc = step_at(r.device.t, r.device.process, ts, before=-1)
                out["non_pytorch"] = np.where(proc >= 0, np.clip(proc - reserved, 0, None), 0)
    return out


def category_series(r: RunResult) -> tuple[F64, dict[str, I64]]:
    """Bytes per category on the merged event times of the tensor and allocator timelines.

    Row categories come from the tensor timeline; ``untracked_workspace`` = allocator − tensors (clipped at
    0), ``allocator_overhead`` = reserved − allocated and ``non_pytorch`` = device process − reserved (CUDA
    only; absent elsewhere).
    """
    ten, al = r.tensor, r.allocator
    t = np.union1d(ten.t, al.t) if len(al) else np.asarray(ten.t, dtype=np.float64)
    return t, _category_levels(r, t)


def category_peaks(r: RunResult) -> dict[str, dict[str, int]]:
    """What a run file records of the categories: each one's own peak (``peak``) and every category at the
    instant the stacked categories reach their highest (``at_peak``)."""
    t, series = category_series(r)
    peak = {c: int(s.max()) if len(s) else 0 for c, s in series.items()}
    at_peak: dict[str, int] = {}
    if len(t):
        level = sum((s for c, s in series.items() if c in CATEGORIES[:9]), np.zeros(len(t), np.int64))
        i = int(np.argmax(level))
        at_peak = {c: int(s[i]) for c, s in series.items()}
    return {"peak": peak, "at_peak": at_peak}


def category_levels_at(r: RunResult, times: Sequence[float] | F64) -> dict[str, I64]:
    """Bytes per category at each of ``times`` (seconds on the run clock), every category present.

    The same derivation as ``category_series`` (clipped at 0): ``untracked_workspace`` = allocator level −
    tensor level; ``allocator_overhead`` = reserved − allocated (CUDA only, else 0); ``non_pytorch`` = NVML
    process memory − reserved at the last sample at or before the time (CUDA only, else 0). It evaluates
    only at the given times, so it stays cheap on a million-event run.
    """
    ts = np.asarray(times, dtype=np.float64)
    levels = _category_levels(r, ts)
    return {c: levels[c] if c in levels else np.zeros(len(ts), np.int64) for c in CATEGORIES}


def peak_time(r: RunResult) -> float:
    """The time of the allocator-level peak (tensor-level if the run has no allocator timeline)."""
    tl: Timeline = r.allocator if len(r.allocator) else r.tensor
    return float(tl.t[tl.peak_index]) if len(tl) else 0.0


def categories_at_peak(r: RunResult) -> dict[str, int]:
    """Bytes per category at the run's allocator-level peak (``peak_time``)."""
    t = peak_time(r)
    return {c: int(v[0]) for c, v in category_levels_at(r, [t]).items()}


def category_samples(r: RunResult, nbins: int = 1500) -> tuple[F64, dict[str, I64]]:
    """Times to draw the category stack at, and the bytes per category there.

    One time per bin of the run: the instant of the bin's highest allocator (else tensor) level, so the
    stack's top follows the envelope and the exact peak is among the times.
    """
    tl = r.allocator if len(r.allocator) else r.tensor
    if not len(tl):
        return np.zeros(0), {c: np.zeros(0, np.int64) for c in CATEGORIES}
    t, y = tl.t, tl.total
    if len(t) <= nbins:
        times = np.asarray(t, dtype=np.float64)
    else:
        edges = np.linspace(float(t[0]), float(t[-1]), nbins + 1)
        starts = np.searchsorted(t, edges[:-1], side="left")
        starts[0] = 0
        starts = np.unique(starts[starts < len(t)])
        mx = np.maximum.reduceat(y, starts)
        bin_of = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(t))))
        hit = np.flatnonzero(y == mx[bin_of])
        _, first = np.unique(bin_of[hit], return_index=True)
        times = np.asarray(t[hit[first]], dtype=np.float64)
    pk = peak_time(r)
    times = np.unique(np.append(times, pk))
    return times, category_levels_at(r, times)


# --------------------------------------------------------------------------------------------------------
# Phases and layers


def phase_intervals(r: RunResult) -> list[tuple[str, float, float]]:
    """(phase, t0, t1) of each whole-phase span (``module == ""``), else from the timeline's phase column."""
    out = [(s.phase, s.t0, s.t1) for s in r.spans if s.module == "" and s.phase in SHADED_PHASES]
    if out:
        return out
    tl = r.tensor if len(r.tensor) else r.allocator
    if not len(tl):
        return []
    change = np.flatnonzero(np.diff(tl.phase)) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [len(tl) - 1]))
    res = []
    for s, e in zip(starts, ends, strict=True):
        p = int(tl.phase[s])
        name = PHASES[p] if 0 <= p < len(PHASES) else ""
        if name in SHADED_PHASES:
            res.append((name, float(tl.t[s]), float(tl.t[e])))
    return res


def layer_boundaries(r: RunResult) -> F64:
    """Start times of the innermost module spans (a module whose path prefixes another's is skipped)."""
    mods = {s.module for s in r.spans if s.module}
    leaves = {m for m in mods if not any(o.startswith(m + ".") for o in mods)}
    return np.array(sorted(s.t0 for s in r.spans if s.module in leaves), dtype=np.float64)


def phase_spans(r: RunResult) -> list[tuple[str, float, float]]:
    """The run's whole-run phase spans (setup, forward, …) in order."""
    return [(s.phase, s.t0, s.t1) for s in r.spans if s.module == ""]


def first_forward_time(r: RunResult) -> float | None:
    """Run-clock time at which the first forward began (None when the run never got there)."""
    starts = [s.t0 for s in r.spans if s.phase == "forward"]
    if starts:
        return min(starts)
    fwd = PHASES.index("forward")
    tl = r.tensor if len(r.tensor) else r.allocator
    idx = np.flatnonzero(tl.phase == fwd) if len(tl) else np.zeros(0, np.int64)
    return float(tl.t[idx[0]]) if len(idx) else None


def run_offsets(results: Sequence[RunResult]) -> list[float]:
    """Shifts that line several runs up at the start of their first forward (set-up takes different times:
    building and initialising a model is not what a comparison is about); the last run keeps its clock, so
    its phases (the ones shaded) stay where they are. One run: no shift."""
    if len(results) < 2:
        return [0.0] * len(results)
    ref = first_forward_time(results[-1])
    if ref is None:
        return [0.0] * len(results)
    out = []
    for r in results:
        t = first_forward_time(r)
        out.append(0.0 if t is None else t - ref)
    return out


def aligned_times(t: F64, src: RunResult, ref: RunResult | None) -> tuple[F64, bool]:
    """``t`` (on ``src``'s clock) mapped piecewise-linearly onto ``ref``'s clock, phase boundary by phase
    boundary, when both runs went through the same sequence of phases (a prediction's clock is the fake
    trace's: its order of events is predicted, its durations are not). Otherwise ``t`` unchanged."""
    if ref is None or not len(t):
        return t, False
    a, b = phase_spans(src), phase_spans(ref)
    if [p for p, _, _ in a] != [p for p, _, _ in b]:  # e.g. one recorded set-up spans: the shaded phases
        a = [x for x in a if x[0] in SHADED_PHASES]
        b = [x for x in b if x[0] in SHADED_PHASES]
    if not a or [p for p, _, _ in a] != [p for p, _, _ in b]:
        return t, False
    xs = np.array([x for _, t0, t1 in a for x in (t0, t1)], dtype=np.float64)
    ys = np.array([x for _, t0, t1 in b for x in (t0, t1)], dtype=np.float64)
    xs, first = np.unique(xs, return_index=True)
    ys = np.maximum.accumulate(ys[first])
    if len(xs) < 2:
        return t, False
    return np.interp(t, xs, ys), True
