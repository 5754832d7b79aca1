"""Run A vs run B: difference tables (by layer, by category at each run's peak, summary) and a plain-language
explanation of *why* B uses more (or less) memory than A, ranked by size.

Only what the numbers show is stated: every sentence is built from a measured (or, for predicted runs,
modelled and labelled so) difference. Category bytes at the peak come from the tensor timeline's rows
(row categories) and from the derived differences fixed in ``core/result.py`` (untracked workspace,
allocator overhead, non-PyTorch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from vggexplorer.core.base.units import MiB, fmt_bytes, fmt_signed_bytes
from vggexplorer.core.results.meta import RunEnvironment, RunMeta
from vggexplorer.core.results.result import CATEGORIES, ROW_CATEGORIES, RunResult, Timeline

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: Differences smaller than this (and than ``REL_THRESHOLD`` of the larger peak) are "no difference".
ABS_THRESHOLD = 1 * MiB
REL_THRESHOLD = 0.001

LAYER_METRICS: tuple[str, ...] = (
    "output_bytes",
    "saved_bytes",
    "param_bytes",
    "grad_bytes",
    "peak_forward_bytes",
    "peak_backward_bytes",
)
SUMMARY_METRICS: tuple[str, ...] = (
    "peak_allocated_bytes",
    "peak_tensor_bytes",
    "peak_reserved_bytes",
    "peak_device_bytes",
    "param_bytes",
)


# --------------------------------------------------------------------------------------------------------
# What a run is, in a few words


def is_cuda(r: RunResult) -> bool:
    """A CUDA run (measured or predicted): the allocator timeline has reserved bytes, or the config says."""
    dev = r.environment.device or r.config.ran_on
    return r.allocator.reserved is not None or dev.startswith("cuda")


def _input_hw(r: RunResult) -> tuple[int, int]:
    return r.config.run.input_hw


def _head_name(r: RunResult) -> str:
    return r.config.label


def _setup(r: RunResult) -> dict[str, Any]:
    """The config as compared: the device the run ran on (a prediction's ``predicted:<GPU>``) and the
    backbone by name."""
    d = r.config.to_dict()
    d.pop("resolved_device")
    d["device"] = r.config.ran_on
    d["backbone"] = r.config.backbone
    return d


def _fmt_hw(hw: tuple[int, int] | None) -> str:
    if hw is None:
        return "?"
    return str(hw[0]) if hw[0] == hw[1] else f"{hw[0]}×{hw[1]}"


def run_label(r: RunResult) -> str:
    """``fcn at 384`` (or the run's own name); predicted runs say so."""
    label = r.name or f"{_head_name(r)} at {_fmt_hw(_input_hw(r))}"
    if r.predicted and "predicted" not in label:
        label = f"{label} (predicted)"
    return label


# --------------------------------------------------------------------------------------------------------
# Category bytes at a time (Qt-free helper shared with the plots)


def _level_at(t: F64, level: I64, times: F64) -> I64:
    """A step function (``level[i]`` holds from ``t[i]`` on) at ``times``; 0 before the first row."""
    if len(t) == 0:
        return np.zeros(len(times), np.int64)
    idx = np.searchsorted(t, times, side="right") - 1
    out = level[np.clip(idx, 0, None)].astype(np.int64)
    out[idx < 0] = 0
    return out


def tensor_baseline(r: RunResult) -> int:
    """Tensor bytes live before the first row (``total[0] - delta[0]``); 0 if every tensor has a row."""
    tl = r.tensor
    return int(tl.total[0] - tl.delta[0]) if len(tl) else 0


def category_levels_at(r: RunResult, times: Sequence[float] | F64) -> dict[str, I64]:
    """Bytes per category at each of ``times`` (seconds on the run clock).

    Row categories come from the tensor timeline (each row's ``delta`` summed per category, held between
    rows). Derived ones, as ``core.attribution.category_series`` defines them (clipped at 0):
    ``untracked_workspace`` = allocator level − tensor level; ``allocator_overhead`` = reserved − allocated
    (CUDA only, else 0); ``non_pytorch`` = NVML process memory − reserved at the last sample at or before
    the time (CUDA only, else 0). Unlike ``category_series`` this evaluates only at the given times, so it
    stays cheap on a million-event run.
    """
    ts = np.asarray(times, dtype=np.float64)
    tl = r.tensor
    out: dict[str, I64] = {}
    for ci, cat in enumerate(ROW_CATEGORIES):
        if len(tl):
            cum = np.cumsum(np.where(tl.category == ci, tl.delta, 0))
            out[cat] = _level_at(tl.t, cum, ts)
        else:
            out[cat] = np.zeros(len(ts), np.int64)
    tensor_level = _level_at(tl.t, tl.total, ts)
    al = r.allocator
    zero = np.zeros(len(ts), np.int64)
    out["untracked_workspace"] = zero.copy()
    out["allocator_overhead"] = zero.copy()
    out["non_pytorch"] = zero.copy()
    if len(al):
        alloc_level = _level_at(al.t, al.total, ts)
        out["untracked_workspace"] = np.clip(alloc_level - tensor_level, 0, None)
        if al.reserved is not None:
            reserved = _level_at(al.t, al.reserved, ts)
            out["allocator_overhead"] = np.clip(reserved - alloc_level, 0, None)
            dv = r.device
            if len(dv):
                idx = np.searchsorted(dv.t, ts, side="right") - 1
                proc = dv.process[np.clip(idx, 0, None)]
                out["non_pytorch"] = np.where(idx >= 0, np.clip(proc - reserved, 0, None), 0)
    return {c: out[c] for c in CATEGORIES}


def peak_time(r: RunResult) -> float:
    """The time of the allocator-level peak (tensor-level if the run has no allocator timeline)."""
    tl: Timeline = r.allocator if len(r.allocator) else r.tensor
    return float(tl.t[tl.peak_index]) if len(tl) else 0.0


def categories_at_peak(r: RunResult) -> dict[str, int]:
    t = peak_time(r)
    return {c: int(v[0]) for c, v in category_levels_at(r, [t]).items()}


# --------------------------------------------------------------------------------------------------------
# The comparison


@dataclass(frozen=True)
class Diff:
    """One compared number: ``a`` and ``b`` in bytes (None where a run lacks it, e.g. reserved on CPU)."""

    section: str  # "summary" | "category" | "layer"
    name: str  # metric, category, or layer path
    metric: str  # for layers: output_bytes, saved_bytes, ...; else the same as ``name``
    a: int | None
    b: int | None

    @property
    def delta(self) -> int | None:
        return None if self.a is None or self.b is None else self.b - self.a


@dataclass(frozen=True)
class Comparison:
    a: RunResult
    b: RunResult
    summary: list[Diff]
    categories: list[Diff]  # bytes at each run's own peak
    layers: list[Diff]
    config_changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    @property
    def label_a(self) -> str:
        la = run_label(self.a)
        return f"A ({la})" if la == run_label(self.b) else la

    @property
    def label_b(self) -> str:
        lb = run_label(self.b)
        return f"B ({lb})" if lb == run_label(self.a) else lb

    def summary_diff(self, metric: str) -> Diff:
        return next(d for d in self.summary if d.metric == metric)

    def category_diff(self, cat: str) -> Diff:
        return next(d for d in self.categories if d.name == cat)


def _opt(v: int | None) -> int | None:
    return None if v is None else int(v)


def compare(a: RunResult, b: RunResult) -> Comparison:
    """Differences of B relative to A (B − A)."""
    sa, sb = a.summary, b.summary
    summary = [Diff("summary", m, m, _opt(getattr(sa, m)), _opt(getattr(sb, m))) for m in SUMMARY_METRICS]
    ca, cb = categories_at_peak(a), categories_at_peak(b)
    cuda_a, cuda_b = is_cuda(a), is_cuda(b)
    cats: list[Diff] = []
    for c in CATEGORIES:
        va: int | None = ca[c]
        vb: int | None = cb[c]
        if c == "allocator_overhead":
            va, vb = (va if cuda_a else None), (vb if cuda_b else None)
        if c == "non_pytorch":
            va = va if cuda_a and len(a.device) else None
            vb = vb if cuda_b and len(b.device) else None
        cats.append(Diff("category", c, c, va, vb))
    la = {lay.name: lay for lay in a.layers}
    lb = {lay.name: lay for lay in b.layers}
    names = [lay.name for lay in a.layers] + [lay.name for lay in b.layers if lay.name not in la]
    layers: list[Diff] = []
    for n in names:
        for m in LAYER_METRICS:
            va = int(getattr(la[n], m)) if n in la else None
            vb = int(getattr(lb[n], m)) if n in lb else None
            layers.append(Diff("layer", n, m, va, vb))
    ca, cb = _setup(a), _setup(b)
    keys = [k for k in ca if k in cb] + [k for k in cb if k not in ca]
    changes = {k: (ca.get(k), cb.get(k)) for k in keys if ca.get(k) != cb.get(k)}
    return Comparison(a, b, summary, cats, layers, changes)


# --------------------------------------------------------------------------------------------------------
# Plain language


def _significant(delta: int | None, scale: int) -> bool:
    return delta is not None and abs(delta) >= max(ABS_THRESHOLD, REL_THRESHOLD * scale)


def _pct(delta: int, base: int | None) -> str:
    if not base:
        return ""
    return f" ({delta / base:+.0%})" if abs(delta / base) >= 0.005 else " (<0.5%)"


def _ratio(x: float) -> str:
    return f"{x:.1f}×" if x < 10 else f"{x:.0f}×"


def _pixels_sentence(c: Comparison) -> str | None:
    ha, hb = _input_hw(c.a), _input_hw(c.b)
    if ha is None or hb is None or ha == hb:
        return None
    pa, pb = ha[0] * ha[1], hb[0] * hb[1]
    sq = "²" if ha[0] == ha[1] and hb[0] == hb[1] else ""
    wa, wb = (str(ha[0]), str(hb[0])) if sq else (_fmt_hw(ha), _fmt_hw(hb))
    if pb >= pa:
        return f"the input has {_ratio(pb / pa)} the pixels ({wb}{sq} vs {wa}{sq})"
    return f"the input has {_ratio(pa / pb)} fewer pixels ({wb}{sq} vs {wa}{sq})"


def _batch(r: RunResult) -> int | None:
    return r.config.run.batch


def _layer_sum(r: RunResult, metric: str, head: bool) -> int:
    return sum(int(getattr(lay, metric)) for lay in r.layers if (lay.head_index >= 0) == head)


def _shape(s: tuple[int, ...] | None) -> str:
    return "×".join(str(x) for x in s) if s else "?"


def explain(c: Comparison) -> list[str]:
    """Sentences answering "why does B use more (or less) memory than A?", the largest contributors first.

    The first sentence is the headline (peak allocated, or "no difference"); then the context (input size,
    batch); then one sentence per category whose bytes at the peak differ, ranked by |difference|; then
    where each run peaks and the nvidia-smi/RSS level.
    """
    a, b = c.a, c.b
    la, lb = c.label_a, c.label_b
    pa = c.summary_diff("peak_allocated_bytes")
    scale = max(pa.a or 0, pa.b or 0)
    level = "allocated" if is_cuda(a) or is_cuda(b) else "allocated (CPU allocator)"
    sig_cats = [d for d in c.categories if _significant(d.delta, scale)]
    sig_summary = [d for d in c.summary if _significant(d.delta, scale)]
    if not sig_cats and not sig_summary:
        return [
            f"No difference: {lb} and {la} have the same peak {level} ({fmt_bytes(pa.b)}); every category "
            f"at the peak is within {fmt_bytes(max(ABS_THRESHOLD, REL_THRESHOLD * scale))}."
        ]
    out: list[str] = []
    d = pa.delta or 0
    head = f"{lb} vs {la}: peak {level} {fmt_signed_bytes(d)}{_pct(d, pa.a)}"
    head += f" ({fmt_bytes(pa.a)} → {fmt_bytes(pa.b)})."
    if a.predicted or b.predicted:
        head += " Predicted runs come from the allocator model, not a measurement."
    out.append(head)

    context: list[str] = []
    pix = _pixels_sentence(c)
    if pix:
        context.append(pix)
    ba, bb = _batch(a), _batch(b)
    if ba and bb and ba != bb:
        context.append(
            f"the batch is {_ratio(bb / ba) if bb >= ba else _ratio(ba / bb)} "
            f"{'larger' if bb >= ba else 'smaller'} ({bb} vs {ba})"
        )
    for k, (va, vb) in c.config_changes.items():
        if k in ("input_hw", "batch", "head", "head_label", "preset"):
            continue
        if isinstance(va, str | int | float | bool | None) and isinstance(
            vb, str | int | float | bool | None
        ):
            context.append(f"{k} {vb} vs {va}")
    if context:
        out.append("Differences in the set-up: " + "; ".join(context) + ".")

    ranked: list[tuple[int, str]] = []
    for dc in sig_cats:
        delta = dc.delta or 0
        ranked.append((abs(delta), _category_sentence(c, dc.name, delta, pix)))
    pd = c.category_diff("parameters")
    if not _significant(pd.delta, scale) and pd.a:
        ranked.append((0, f"Parameters equal ({fmt_bytes(pd.a)})."))
    ranked.sort(key=lambda x: -x[0])
    out.extend(s for _, s in ranked)

    if a.summary.peak_phase or b.summary.peak_phase:
        where_a = " at ".join(x for x in (a.summary.peak_phase, a.summary.peak_module) if x) or "?"
        where_b = " at ".join(x for x in (b.summary.peak_phase, b.summary.peak_module) if x) or "?"
        if where_a != where_b:
            out.append(f"The peak moved: {la} peaks in {where_a}, {lb} in {where_b}.")
        else:
            out.append(f"Both peak in {where_a}.")
    for metric, what in (
        ("peak_tensor_bytes", "live tensors (tensor level)"),
        ("peak_reserved_bytes", "reserved by the caching allocator"),
        ("peak_device_bytes", "process memory (NVML)" if is_cuda(b) else "process RSS"),
    ):
        sd = c.summary_diff(metric)
        if sd.delta is not None and _significant(sd.delta, scale):
            out.append(
                f"Peak {what}: {fmt_signed_bytes(sd.delta)}{_pct(sd.delta, sd.a)} "
                f"({fmt_bytes(sd.a)} → {fmt_bytes(sd.b)})."
            )
    return out


def _category_sentence(c: Comparison, cat: str, delta: int, pix: str | None) -> str:
    a, b = c.a, c.b
    s = fmt_signed_bytes(delta)
    if cat == "activations":
        text = f"Activations saved for backward {s} at the peak"
        parts = []
        if a.layers and b.layers:
            fa, fb = _layer_sum(a, "saved_bytes", False), _layer_sum(b, "saved_bytes", False)
            ha, hb = _layer_sum(a, "saved_bytes", True), _layer_sum(b, "saved_bytes", True)
            if fb != fa:
                parts.append(f"the features {fmt_signed_bytes(fb - fa)}" + (f" ({pix})" if pix else ""))
            if hb != ha:
                oa, ob = a.summary.output_shape, b.summary.output_shape
                part = f"the head {fmt_signed_bytes(hb - ha)}"
                if oa != ob and oa and ob:
                    part += f" (its output is {_shape(ob)} vs {_shape(oa)})"
                parts.append(part)
            if parts:
                return f"{text}. Saved over the whole forward: " + "; ".join(parts) + "."
        elif pix:
            return f"{text} ({pix})."
        return text + "."
    if cat == "parameters":
        return f"Parameters {s} ({fmt_bytes(_cat_a(c, cat))} → {fmt_bytes(_cat_b(c, cat))})."
    if cat == "gradients":
        return f"Parameter gradients {s} at the peak."
    if cat == "optimizer_state":
        return f"Optimizer state {s} at the peak."
    if cat == "untracked_workspace":
        text = (
            f"Untracked workspace {s} at the peak (allocator memory that no live tensor holds: buffers "
            f"kernels allocate for themselves)"
        )
        match = _matching_weight(b if delta > 0 else a, abs(delta))
        if match:
            text += f"; that is within 2% of the parameter bytes of {match}"
        return text + "."
    if cat == "allocator_overhead":
        return (
            f"Allocator overhead {s} at the peak (reserved but not allocated: blocks the caching allocator "
            f"keeps cached)."
        )
    if cat == "non_pytorch":
        return (
            f"Memory outside PyTorch's allocator {s} at the peak (NVML process − reserved: CUDA context, "
            f"kernels, libraries)."
        )
    names = {
        "temporaries": "Temporaries (freed within their layer)",
        "inputs": "Inputs",
        "outputs": "Outputs kept by the caller (model output, loss)",
        "buffers": "Module buffers",
    }
    return f"{names.get(cat, cat)} {s} at the peak."


def _cat_a(c: Comparison, cat: str) -> int | None:
    return c.category_diff(cat).a


def _cat_b(c: Comparison, cat: str) -> int | None:
    return c.category_diff(cat).b


def _matching_weight(r: RunResult, nbytes: int) -> str | None:
    """A layer whose parameter bytes are within 2% of ``nbytes`` (a kernel's copy of its weight), or None."""
    best: tuple[float, str] | None = None
    for lay in r.layers:
        if lay.param_bytes > 0:
            rel = abs(lay.param_bytes - nbytes) / lay.param_bytes
            if rel <= 0.02 and (best is None or rel < best[0]):
                best = (rel, f"{lay.name} ({lay.type}, {fmt_bytes(lay.param_bytes)})")
    return best[1] if best else None


# --------------------------------------------------------------------------------------------------------
# Tables

ROW_FIELDS: tuple[str, ...] = (
    "section",
    "name",
    "metric",
    "a_bytes",
    "b_bytes",
    "delta_bytes",
    "a",
    "b",
    "delta",
)


def comparison_to_rows(c: Comparison, *, include_equal_layers: bool = True) -> list[dict[str, Any]]:
    """Flat rows (summary, category, layer) for CSV or markdown: raw bytes plus human strings."""
    rows: list[dict[str, Any]] = []
    for d in [*c.summary, *c.categories, *c.layers]:
        if d.section == "layer" and not include_equal_layers and d.delta == 0:
            continue
        rows.append(
            {
                "section": d.section,
                "name": d.name,
                "metric": d.metric,
                "a_bytes": "" if d.a is None else d.a,
                "b_bytes": "" if d.b is None else d.b,
                "delta_bytes": "" if d.delta is None else d.delta,
                "a": fmt_bytes(d.a),
                "b": fmt_bytes(d.b),
                "delta": "N/A" if d.delta is None else fmt_signed_bytes(d.delta),
            }
        )
    return rows


def comparison_to_markdown(c: Comparison) -> str:
    """A markdown report: explanation, summary, categories at the peak, and per-layer differences."""
    la, lb = c.label_a, c.label_b
    lines = [f"# {lb} vs {la}", ""]
    lines += [f"- {s}" for s in explain(c)]

    def table(title: str, diffs: list[Diff], first: str, name_of: Any) -> None:
        lines.extend(
            ["", f"## {title}", "", f"| {first} | A: {la} | B: {lb} | B − A |", "|---|---:|---:|---:|"]
        )
        for d in diffs:
            delta = "N/A" if d.delta is None else fmt_signed_bytes(d.delta)
            lines.append(f"| {name_of(d)} | {fmt_bytes(d.a)} | {fmt_bytes(d.b)} | {delta} |")

    table("Summary", c.summary, "metric", lambda d: d.metric)
    table("Categories at each run's peak", c.categories, "category", lambda d: d.name)
    changed = [d for d in c.layers if d.delta != 0]
    table("Layers (metrics that differ)", changed, "layer · metric", lambda d: f"{d.name} · {d.metric}")
    if not changed:
        lines.append("| (no layer differs) | | | |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------
# Synthetic runs: plain RunResults with known numbers, for tests, benchmarks and demos (no torch)


def synthetic_run(
    *,
    name: str = "",
    head: str = "fc",
    input_hw: int = 224,
    batch: int = 2,
    cuda: bool = False,
    predicted: bool = False,
    extra_events: int = 0,
    workspace_bytes: int = 0,
    head_param_bytes: int = 411_041_792,
    optimizer: bool = True,
    seed: int = 0,
) -> RunResult:
    """A one-iteration training step of a VGG-like net, built from arithmetic, not measured.

    Activations scale with ``batch × input_hw²``; the head's conv (``classifier.0``) holds
    ``head_param_bytes`` of parameters; ``workspace_bytes`` of kernel buffer (allocator level only, no
    tensor) is live during the head's forward. ``extra_events`` adds that many small temporary
    allocations/frees spread over the layers (for big-timeline tests and benchmarks).
    """
    from vggexplorer.core.results.result import PHASES, DeviceSamples, LayerStats, Span, Summary

    rng = np.random.default_rng(seed)
    cat = {c: i for i, c in enumerate(CATEGORIES)}
    ph = {p: i for i, p in enumerate(PHASES)}
    pix = batch * input_hw * input_hw
    feats = [
        ("features.0", "Conv2d", 64 * pix * 4, 7_168),
        ("features.2", "MaxPool2d", 16 * pix * 4, 0),
        ("features.3", "Conv2d", 32 * pix * 4, 295_424),
        ("features.5", "MaxPool2d", 8 * pix * 4, 0),
        ("features.6", "Conv2d", 16 * pix * 4, 4_719_616),
    ]
    score = max(input_hw // 32 - 6, 1)
    heads = [
        (
            "classifier.0",
            "Conv2d" if head != "fc" else "Linear",
            batch * 4096 * score * score * 4,
            head_param_bytes,
        ),
        ("classifier.1", "ReLU", 0, 0),
        (
            "classifier.2",
            "Conv2d" if head != "fc" else "Linear",
            batch * 1000 * score * score * 4,
            16_388_000,
        ),
    ]
    layers_def = [(n, ty, o, p, -1) for n, ty, o, p in feats] + [
        (n, ty, o, p, i) for i, (n, ty, o, p) in enumerate(heads)
    ]
    strings: list[str] = [n for n, *_ in layers_def]
    mod_idx = {n: i for i, n in enumerate(strings)}
    rows: list[tuple[float, int, int, int, int]] = []  # t, delta, phase, category, module
    ws_rows: list[tuple[float, int, int, int]] = []  # allocator-only: t, delta, phase, module
    spans: list[Span] = []
    t = 0.0
    for n, _ty, _o, p, _h in layers_def:
        if p:
            rows.append((t, p, ph["setup"], cat["parameters"], mod_idx[n]))
            t += 0.001
    inp = batch * 3 * input_hw * input_hw * 4
    rows.append((t, inp, ph["setup"], cat["inputs"], -1))
    t += 0.002
    layer_t: dict[str, tuple[float, float, float, float]] = {}
    f0 = t
    for n, _ty, o, _p, _h in layers_def:
        a = t
        if o:
            rows.append((t + 0.001, o, ph["forward"], cat["activations"], mod_idx[n]))
            rows.append((t + 0.002, o // 4, ph["forward"], cat["temporaries"], mod_idx[n]))
            rows.append((t + 0.004, -(o // 4), ph["forward"], cat["temporaries"], mod_idx[n]))
        if n == "classifier.0" and workspace_bytes:
            ws_rows.append((t + 0.0015, workspace_bytes, ph["forward"], mod_idx[n]))
            ws_rows.append((t + 0.0045, -workspace_bytes, ph["forward"], mod_idx[n]))
        t += 0.005
        spans.append(Span(n, "forward", a, t, 0))
        layer_t[n] = (a, t, 0.0, 0.0)
    spans.append(Span("", "forward", f0, t, 0))
    rows.append((t, 4 * batch, ph["loss"], cat["outputs"], -1))
    t += 0.002
    b0 = t
    for n, _ty, o, p, _h in reversed(layers_def):
        a = t
        if p:
            rows.append((t + 0.001, p, ph["backward"], cat["gradients"], mod_idx[n]))
        if o:
            rows.append((t + 0.002, o // 2, ph["backward"], cat["temporaries"], mod_idx[n]))
            rows.append((t + 0.003, -(o // 2), ph["backward"], cat["temporaries"], mod_idx[n]))
            rows.append((t + 0.004, -o, ph["backward"], cat["activations"], mod_idx[n]))
        t += 0.005
        spans.append(Span(n, "backward", a, t, 0))
        fa, fb, _, _ = layer_t[n]
        layer_t[n] = (fa, fb, a, t)
    spans.append(Span("", "backward", b0, t, 0))
    o0 = t
    for n, _ty, _o, p, _h in layers_def if optimizer else ():
        if p:
            rows.append((t, 2 * p, ph["optimizer"], cat["optimizer_state"], mod_idx[n]))
            t += 0.001
    if optimizer:
        spans.append(Span("", "optimizer", o0, t, 0))
    t_end = t
    arr = np.array(rows, dtype=np.float64)
    tt, dd = arr[:, 0], arr[:, 1].astype(np.int64)
    pp, cc, mm = arr[:, 2].astype(np.int8), arr[:, 3].astype(np.int8), arr[:, 4].astype(np.int32)
    if extra_events > 0:
        k = extra_events // 2
        # temporaries inside the layers' forward/backward spans, freed 0.1 ms later
        lay_spans = [s for s in spans if s.module]
        which = rng.integers(0, len(lay_spans), k)
        s0 = np.array([lay_spans[i].t0 for i in which])
        s1 = np.array([lay_spans[i].t1 for i in which])
        ta = s0 + rng.random(k) * (s1 - s0) * 0.9
        size = rng.integers(1, 64, k).astype(np.int64) * 4096
        phase = np.array([ph[lay_spans[i].phase] for i in which], dtype=np.int8)
        mods = np.array([mod_idx[lay_spans[i].module] for i in which], dtype=np.int32)
        tt = np.concatenate([tt, ta, ta + 1e-4])
        dd = np.concatenate([dd, size, -size])
        pp = np.concatenate([pp, phase, phase])
        cc = np.concatenate([cc, np.full(2 * k, cat["temporaries"], np.int8)])
        mm = np.concatenate([mm, mods, mods])
    order = np.argsort(tt, kind="stable")
    tensor = Timeline(
        t=tt[order],
        delta=dd[order],
        total=np.cumsum(dd[order]),
        phase=pp[order],
        category=cc[order],
        op=np.full(len(order), -1, np.int32),
        module=mm[order],
        iteration=np.zeros(len(order), np.int32),
    )
    # allocator timeline: every tensor row (rounded to 512 B on CUDA) plus the workspace rows
    at = np.concatenate([tensor.t, np.array([r[0] for r in ws_rows])])
    ad = tensor.delta
    if cuda:
        ad = np.sign(ad) * ((np.abs(ad) + 511) // 512 * 512)
    ad = np.concatenate([ad, np.array([r[1] for r in ws_rows], dtype=np.int64)])
    ap = np.concatenate([tensor.phase, np.array([r[2] for r in ws_rows], dtype=np.int8)])
    am = np.concatenate([tensor.module, np.array([r[3] for r in ws_rows], dtype=np.int32)])
    ac = np.concatenate([tensor.category, np.full(len(ws_rows), cat["untracked_workspace"], np.int8)])
    order = np.argsort(at, kind="stable")
    atotal = np.cumsum(ad[order])
    reserved = active = None
    if cuda:
        seg = 2 * MiB
        reserved = (np.maximum.accumulate(atotal) + seg - 1) // seg * seg
        active = atotal.copy()
    allocator = Timeline(
        t=at[order],
        delta=ad[order],
        total=atotal,
        phase=ap[order],
        category=ac[order],
        op=np.full(len(order), -1, np.int32),
        module=am[order],
        iteration=np.zeros(len(order), np.int32),
        reserved=reserved,
        active=active,
    )
    st = np.arange(0.0, t_end + 0.001, 0.001)
    base_level = _level_at(allocator.t, reserved if reserved is not None else atotal, st)
    if cuda:
        process = base_level + 500 * MiB
        device = DeviceSamples(
            t=st,
            process=process,
            device_used=process + 700 * MiB,
            source="NVML process used memory, GPU-synthetic",
            achieved_hz=1000.0,
        )
    else:
        device = DeviceSamples(
            t=st, process=base_level + 350 * MiB, source="RSS (/proc/self/statm)", achieved_hz=1000.0
        )
    layers = []
    for n, ty, o, p, h in layers_def:
        fa, fb, ba, bb = layer_t[n]
        fi = (tensor.t >= fa) & (tensor.t < fb)
        bi = (tensor.t >= ba) & (tensor.t < bb)
        afi = (allocator.t >= fa) & (allocator.t < fb)
        abi = (allocator.t >= ba) & (allocator.t < bb)
        shape = (batch, 4096, score, score) if n == "classifier.0" else (batch,)
        layers.append(
            LayerStats(
                name=n,
                type=ty,
                head_index=h,
                output_shape=shape,
                output_bytes=o,
                saved_bytes=o,
                param_bytes=p,
                grad_bytes=p,
                peak_forward_bytes=int(tensor.total[fi].max()) if fi.any() else 0,
                peak_backward_bytes=int(tensor.total[bi].max()) if bi.any() else 0,
                peak_forward_allocator_bytes=int(allocator.total[afi].max()) if afi.any() else 0,
                peak_backward_allocator_bytes=int(allocator.total[abi].max()) if abi.any() else 0,
                forward_s=fb - fa,
                backward_s=bb - ba,
            )
        )
    pi = allocator.peak_index
    mod = int(allocator.module[pi])
    summary = Summary(
        peak_allocated_bytes=allocator.peak,
        peak_tensor_bytes=tensor.peak,
        peak_reserved_bytes=int(reserved.max()) if reserved is not None else None,
        peak_device_bytes=int(device.process.max()),
        param_bytes=sum(p for *_, p, _h in layers_def),
        output_shape=(batch, 1000, score, score) if head != "fc" else (batch, 1000),
        peak_time_s=float(allocator.t[pi]),
        peak_phase=PHASES[int(allocator.phase[pi])],
        peak_module=strings[mod] if mod >= 0 else "",
    )
    from vggexplorer.core.model.config import RunConfig
    from vggexplorer.core.model.head import preset

    dev = "cuda:0" if cuda else "cpu"
    run_config = RunConfig(preset(head), device=dev, batch=batch, input_hw=(input_hw, input_hw))
    config = RunMeta(run_config, head_label=head, preset=head)
    env = RunEnvironment(
        device=dev, device_name="Synthetic GPU 80GB" if cuda else "synthetic CPU", synthetic=True
    )
    return RunResult(
        config=config,
        environment=env,
        summary=summary,
        strings=strings,
        tensor=tensor,
        allocator=allocator,
        device=device,
        spans=spans,
        layers=layers,
        predicted=predicted,
        name=name,
        notes=["synthetic: built from arithmetic, not measured"],
    )
