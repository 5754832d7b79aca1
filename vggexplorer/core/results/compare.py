"""Run A vs run B: difference tables (by layer, by category at each run's peak, summary) and a plain-language
explanation of *why* B uses more (or less) memory than A, ranked by size.

Only what the numbers show is stated: every sentence is built from a measured (or, for predicted runs,
modelled and labelled so) difference. Category bytes at the peak come from the tensor timeline's rows
(row categories) and from the derived differences fixed in ``core/results/result.py`` (untracked workspace,
allocator overhead, non-PyTorch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vggexplorer.core.base.units import MiB, fmt_bytes, fmt_signed_bytes
from vggexplorer.core.results.analysis import categories_at_peak
from vggexplorer.core.results.result import CATEGORIES, RunResult
from vggexplorer.core.results.wording import fmt_hw, input_hw, is_cuda, run_label

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
# What is compared


def _setup(r: RunResult) -> dict[str, Any]:
    """The config as compared: the device the run ran on (a prediction's ``predicted:<GPU>``) and the
    backbone by name."""
    d = r.config.to_dict()
    d.pop("resolved_device")
    d["device"] = r.config.ran_on
    d["backbone"] = r.config.backbone
    return d


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
    ha, hb = input_hw(c.a), input_hw(c.b)
    if ha is None or hb is None or ha == hb:
        return None
    pa, pb = ha[0] * ha[1], hb[0] * hb[1]
    sq = "²" if ha[0] == ha[1] and hb[0] == hb[1] else ""
    wa, wb = (str(ha[0]), str(hb[0])) if sq else (fmt_hw(ha), fmt_hw(hb))
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
