"""Trace without computing: the configured run on meta (or CPU fake) tensors, then mapped to what CUDA does.

Step 1 — the CPU trace. :func:`trace` calls the engine's own step program (``execution.execute(config,
fake=True)``: setup, forward, loss, backward, optimizer, zero_grad, under the engine's ``Tracer``) on meta
tensors, or for autocast and channels_last runs inside a ``FakeTensorMode`` on CPU fake tensors
(``execution.fake_device``). Nothing is computed and no memory is taken, yet every tensor storage
the run would allocate or free is recorded with op, module, phase and category. Because it *is* the
engine's code and tracer, the CPU-flavoured trace equals the engine's measured CPU tensor timeline event for
event, byte for byte (``tests/test_faketrace.py`` checks every preset in eval, train and train-step).

Why not fake CUDA tensors: on the CPU wheel a fake ``cuda:0`` parameter that requires grad aborts the
process (C++ terminate), and on a CUDA wheel without a GPU the backward fails ("hasPrimaryContext expects a
valid device index"); see ../shared/FACTS.md. So the trace runs on CPU and the differences are mapped.

Step 2 — the CUDA mapping (``flavour="cuda"``). Where CUDA kernels allocate differently from CPU ones, the
CUDA behaviour wins. Each rule, what it changes and its source:

Rules (what the CPU trace records → what the mapped trace holds; source):

- **optimizer-foreach** — Adam/AdamW/SGD use the per-parameter for-loop on CPU; on CUDA ``foreach=None``
  picks the multi-tensor path, whose ``_foreach_sqrt`` makes one temporary per parameter, all at once. The
  CUDA trace re-runs the step program with ``foreach=True`` (a re-trace, not a row rewrite).
  Source: torch/optim/optimizer.py ``_default_to_fused_or_foreach``; torch/optim/adam.py
  ``_multi_tensor_adam``.
- **optimizer-host-scalars** — tensors the optimizer makes with ``torch.tensor(...)`` and no device (op
  ``lift_fresh``): Adam/AdamW ``state["step"]`` and the foreach path's ``torch.tensor(1.0)`` increment stay on
  the host on CUDA; their rows are removed. Source: torch/optim/adam.py ``_init_group`` (``torch.tensor(0.0)``
  unless capturable or fused) and ``_multi_tensor_adam`` (CPU step increment).
- **dropout-bool-mask** — ``nn.Dropout`` (0 < p < 1, not inplace, training): CPU makes a float mask
  (``empty_like``, ``bernoulli_``, ``div_``) then the output (``mul``); CUDA calls ``native_dropout``: a
  **bool** mask (1 byte per element) and the output, mask saved for backward (``native_dropout_backward``).
  The mask rows shrink to numel bytes. Source: aten/src/ATen/native/Dropout.cpp
  ``is_fused_kernel_acceptable``;
  aten/src/ATen/native/cuda/Dropout.cu (mask allocated first, then the output).
- **maxpool-indices** — ``max_pool2d`` without indices (CPU's inference fast path) becomes CUDA's
  ``max_pool2d_with_indices``: an int64 indices tensor (8 bytes per output element) allocated and dropped at
  once. With grad, or under a dispatch mode, the CPU already takes the indices path (then nothing changes:
  int64 indices saved for backward on both). Source: aten/src/ATen/native/MaxPooling.cpp; FACTS.md.
- **bn-stats-fp32** — BatchNorm under autocast: CPU saves mean/invstd in the input dtype, CUDA (native or
  cuDNN) in float32: those two C-element rows double. Source: aten/src/ATen/native/cuda/Normalization.cu
  (opmath type), aten/src/ATen/native/cudnn/BatchNorm.cpp.

Unchanged on purpose (same on both devices at the dispatch level): conv and its backward
(``convolution``/``convolution_backward`` outputs), ReLU in place (saves its result), max pooling with grad
(int64 indices on both), adaptive average pooling (``mean`` for 1×1 on both), addmm/mm/sum for Linear,
autocast casts and the weight-cast cache (same lower-precision op lists for conv/addmm on CPU and CUDA),
the loss (the engine casts logits to float32 explicitly), ``zero_grad(set_to_none)``.

Not in a tensor trace at all (added by ``predict`` from the GPU profile, labelled as estimates there):
cuBLAS/cuBLASLt workspaces, cuDNN convolution workspaces, the CUDA context and lazily loaded kernels.

Cost: VGG11 at any batch, one iteration, on meta tensors: eval ~7-13 ms, train ~30 ms, train-step ~35-60 ms
on the 2-core machine (FakeTensorMode: about twice that); the optimizer's per-parameter ops dominate
train-step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from vggexplorer.core.model.backbone import BACKBONES, head_module_names
from vggexplorer.core.results.result import CATEGORIES, PHASES, Fault, Span, Timeline

__all__ = [
    "CUDA_RULES",
    "FakeTrace",
    "ModuleGeometry",
    "Row",
    "map_to_cuda",
    "module_geometry",
    "trace",
]

Flavour = Literal["cpu", "cuda"]
_CAT = {c: i for i, c in enumerate(CATEGORIES)}
_PHASE = {p: i for i, p in enumerate(PHASES)}

#: (rule name, one-line description) — the table in the module docstring, for reports and docs.
CUDA_RULES: tuple[tuple[str, str], ...] = (
    ("optimizer-foreach", "optimizer re-traced with foreach=True (PyTorch's default for CUDA parameters)"),
    (
        "optimizer-host-scalars",
        "optimizer scalars made by torch.tensor() (Adam steps) stay on the host on CUDA",
    ),
    ("dropout-bool-mask", "nn.Dropout saves a bool mask (native_dropout) instead of a float one"),
    ("maxpool-indices", "max_pool2d always allocates int64 indices on CUDA (dropped at once without grad)"),
    ("bn-stats-fp32", "BatchNorm saved mean/invstd are float32 on CUDA under autocast"),
)


@dataclass(frozen=True)
class ModuleGeometry:
    """Static facts about one leaf module for a config: type, shapes (with the batch), kernel."""

    name: str
    type: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    kernel: tuple[int, int] = (0, 0)
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def output_numel(self) -> int:
        return math.prod(self.output_shape)

    @property
    def input_numel(self) -> int:
        return math.prod(self.input_shape)

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self.params).get(key, default)


def module_geometry(config: Any) -> dict[str, ModuleGeometry]:
    """Leaf-module geometry for ``config`` (an engine ``RunConfig``): backbone walked from its cfg, head from
    ``infer_shapes``. Shapes only (no torch)."""
    from vggexplorer.core.model.layers import pair
    from vggexplorer.core.model.shapes import infer_shapes

    n, (h, w) = config.batch, config.input_hw
    bb = BACKBONES[config.head.backbone]
    out: dict[str, ModuleGeometry] = {}
    c, i = 3, 0
    for item in bb.layers:
        if item == "M":
            shp_in = (n, c, h, w)
            h, w = h // 2, w // 2
            out[f"features.{i}"] = ModuleGeometry(f"features.{i}", "MaxPool2d", shp_in, (n, c, h, w), (2, 2))
            i += 1
            continue
        assert isinstance(item, int)
        shp_in = (n, c, h, w)
        c = item
        out[f"features.{i}"] = ModuleGeometry(f"features.{i}", "Conv2d", shp_in, (n, c, h, w), (3, 3))
        i += 1
        if bb.batch_norm:
            out[f"features.{i}"] = ModuleGeometry(f"features.{i}", "BatchNorm2d", (n, c, h, w), (n, c, h, w))
            i += 1
        out[f"features.{i}"] = ModuleGeometry(f"features.{i}", "ReLU", (n, c, h, w), (n, c, h, w))
        i += 1
    report = infer_shapes(config.head, n, config.input_hw, check_meta=False)
    names = head_module_names(config.head)
    for lay, shp, name in zip(config.head.layers, report.layers, names, strict=False):
        kernel = (0, 0)
        if "kernel_size" in lay.kwargs:
            k = pair(lay.kwargs["kernel_size"])
            kernel = (int(k[0]), int(k[1]))
        out[name] = ModuleGeometry(
            name, lay.type, tuple(shp.input_shape), tuple(shp.output_shape), kernel, lay.params
        )
    return out


@dataclass(frozen=True)
class Row:
    """One tensor-level event: ``delta`` > 0 allocates storage ``sid``, < 0 frees it."""

    t: float
    delta: int
    sid: int
    phase: int
    op: int
    module: int
    iteration: int
    category: int


@dataclass
class FakeTrace:
    """A traced run (no computation): rows in order, with the string table they index."""

    config: Any
    flavour: Flavour
    rows: list[Row]
    strings: list[str]
    spans: list[Span]
    geometry: dict[str, ModuleGeometry]
    layer_types: dict[str, str]
    status: str = "ok"
    fault: Fault | None = None
    output_shape: tuple[int, ...] | None = None
    param_bytes: int = 0
    trace_s: float = 0.0
    rules: dict[str, int] = field(default_factory=dict)  # rule name -> rows changed/added/removed
    execution: Any = None  # the engine's Execution (its layer facts feed the predicted layer table)

    def string(self, i: int) -> str:
        return self.strings[i] if 0 <= i < len(self.strings) else ""

    def intern(self, s: str) -> int:
        try:
            return self.strings.index(s)
        except ValueError:
            self.strings.append(s)
            return len(self.strings) - 1

    def timeline(self) -> Timeline:
        """The tensor-level timeline (``storage`` set) in the RunResult contract."""
        rows = self.rows
        delta = np.fromiter((r.delta for r in rows), np.int64, len(rows))
        tl = Timeline(
            t=np.fromiter((r.t for r in rows), np.float64, len(rows)),
            delta=delta,
            total=np.cumsum(delta),
            phase=np.fromiter((r.phase for r in rows), np.int8, len(rows)),
            category=np.fromiter((r.category for r in rows), np.int8, len(rows)),
            op=np.fromiter((r.op for r in rows), np.int32, len(rows)),
            module=np.fromiter((r.module for r in rows), np.int32, len(rows)),
            iteration=np.fromiter((r.iteration for r in rows), np.int32, len(rows)),
        )
        tl.storage = np.fromiter((r.sid for r in rows), np.int32, len(rows))
        return tl

    @property
    def peak_bytes(self) -> int:
        total = peak = 0
        for r in self.rows:
            total += r.delta
            peak = max(peak, total)
        return peak


# ---------------------------------------------------------------------------------------------- tracing


def trace(config: Any, flavour: Flavour = "cuda") -> FakeTrace:
    """Trace ``config`` (an engine ``RunConfig``) on CPU fake tensors; ``flavour="cuda"`` maps it to CUDA.

    The device in ``config`` is ignored (the trace runs on fake CPU tensors). float16 autocast, which the
    engine refuses on a real CPU, is traced with CPU autocast (same lower-precision op list for conv/addmm).
    """
    from vggexplorer.core.run.execution import execute

    cfg = config.trace_key()
    t0 = time.perf_counter()
    # CUDA parameters make the optimizers default to their multi-tensor (foreach) path
    foreach = {"foreach": True} if flavour == "cuda" and cfg.mode == "train-step" else None
    ex = execute(cfg, fake=True, optimizer_options=foreach)
    tr = ex.tracer
    n = len(tr.t)
    cats = tr.resolved_categories()
    sids = tr.sid
    rows = [
        Row(
            tr.t[k],
            tr.delta[k],
            sids[k],
            tr.phase_col[k],
            tr.op_col[k],
            tr.module_col[k],
            tr.iter_col[k],
            int(cats[sids[k]]),
        )
        for k in range(n)
    ]
    ft = FakeTrace(
        config=config,
        flavour="cpu",
        rows=rows,
        strings=list(tr.strings),
        spans=list(tr.spans),
        geometry=module_geometry(cfg),
        layer_types={li.name: li.type for li in ex.layers},
        status=ex.status,
        fault=ex.fault,
        output_shape=ex.output_shape,
        param_bytes=ex.param_bytes,
        execution=ex,
    )
    if flavour == "cuda":
        ft.rules["optimizer-foreach"] = 1 if cfg.mode == "train-step" else 0
        ft = map_to_cuda(ft)
    ft.trace_s = time.perf_counter() - t0
    return ft


# ---------------------------------------------------------------------------------------------- CUDA map


def map_to_cuda(ft: FakeTrace) -> FakeTrace:
    """Apply the row rules of the module docstring's table to a CPU-flavoured trace (returns a new trace)."""
    rows = list(ft.rows)
    strings = list(ft.strings)
    rules = dict(ft.rules)
    cfg = ft.config

    def intern(s: str) -> int:
        try:
            return strings.index(s)
        except ValueError:
            strings.append(s)
            return len(strings) - 1

    op_of = {i: s.split(".")[0] for i, s in enumerate(strings)}  # "mul.Tensor" -> "mul"
    mod_name = {i: s for i, s in enumerate(strings)}
    fwd, bwd, opt = _PHASE["forward"], _PHASE["backward"], _PHASE["optimizer"]
    geom = ft.geometry
    types = dict(ft.layer_types)
    for name, g in geom.items():
        types.setdefault(name, g.type)
    itemsize = {"float32": 4, "float16": 2, "bfloat16": 2}[cfg.dtype]

    # optimizer-host-scalars: tensors the optimizer makes by torch.tensor(...) with no device (lift_fresh):
    # Adam/AdamW step counters and the foreach path's torch.tensor(1.0) increment live on the host on CUDA.
    if cfg.mode == "train-step":
        host = {r.sid for r in rows if r.delta > 0 and r.phase == opt and op_of.get(r.op) == "lift_fresh"}
        if host:
            rows = [r for r in rows if r.sid not in host]
            rules["optimizer-host-scalars"] = len(host)

    # dropout-bool-mask
    changed = 0
    if cfg.train:
        ne_op, mul_op = intern("native_dropout.default"), intern("native_dropout_backward.default")
        new_rows: list[Row] = []
        mask_sids: dict[int, int] = {}  # sid -> new size
        for r in rows:
            mname = mod_name.get(r.module, "")
            gd = geom.get(mname)
            is_drop = types.get(mname) == "Dropout" and gd is not None
            if is_drop and gd is not None and r.delta > 0 and r.phase == fwd:
                p = float(gd.get("p", 0.5))
                inplace = bool(gd.get("inplace", False))
                opname = op_of.get(r.op, "")
                if 0.0 < p < 1.0 and not inplace:
                    if opname == "empty_like" and r.sid not in mask_sids:
                        mask_sids[r.sid] = gd.output_numel
                        r = Row(
                            r.t, gd.output_numel, r.sid, r.phase, ne_op, r.module, r.iteration, r.category
                        )
                        changed += 1
                    elif opname == "mul":
                        r = Row(r.t, r.delta, r.sid, r.phase, ne_op, r.module, r.iteration, r.category)
            elif r.delta < 0 and r.sid in mask_sids:
                r = Row(r.t, -mask_sids[r.sid], r.sid, r.phase, r.op, r.module, r.iteration, r.category)
            elif is_drop and r.phase == bwd and r.delta > 0 and op_of.get(r.op, "") == "mul":
                r = Row(r.t, r.delta, r.sid, r.phase, mul_op, r.module, r.iteration, r.category)
            new_rows.append(r)
        rows = new_rows
    if changed:
        rules["dropout-bool-mask"] = changed

    # maxpool-indices: CPU inference fast path (op "max_pool2d") gets CUDA's transient int64 indices.
    if any(op_of.get(r.op) == "max_pool2d" for r in rows):
        with_idx = intern("max_pool2d_with_indices.default")
        next_sid = max((r.sid for r in rows), default=-1) + 1
        new_rows = []
        added = 0
        for r in rows:
            if r.delta > 0 and op_of.get(r.op) == "max_pool2d":
                numel = r.delta // itemsize if itemsize else 0
                gm = geom.get(mod_name.get(r.module, ""))
                if gm is not None:
                    numel = gm.output_numel
                r = Row(r.t, r.delta, r.sid, r.phase, with_idx, r.module, r.iteration, r.category)
                new_rows.append(r)
                tmp = _CAT["temporaries"]
                new_rows.append(Row(r.t, 8 * numel, next_sid, r.phase, with_idx, r.module, r.iteration, tmp))
                new_rows.append(Row(r.t, -8 * numel, next_sid, r.phase, with_idx, r.module, r.iteration, tmp))
                next_sid += 1
                added += 1
                continue
            new_rows.append(r)
        rows = new_rows
        if added:
            rules["maxpool-indices"] = added

    # bn-stats-fp32: under autocast, BatchNorm's saved mean/invstd (C elements) are float32 on CUDA.
    if cfg.dtype != "float32" and cfg.train:
        grow: dict[int, int] = {}
        for r in rows:
            mname = mod_name.get(r.module, "")
            gb = geom.get(mname)
            if (
                gb is not None
                and types.get(mname) == "BatchNorm2d"
                and r.phase == fwd
                and r.delta > 0
                and len(gb.output_shape) > 1
                and r.delta == gb.output_shape[1] * itemsize
                and op_of.get(r.op, "")
                in ("native_batch_norm", "_native_batch_norm_legit", "_batch_norm_with_update")
            ):
                grow[r.sid] = gb.output_shape[1] * 4
        if grow:
            rows = [
                Row(
                    r.t,
                    grow[r.sid] if r.delta > 0 else -grow[r.sid],
                    r.sid,
                    r.phase,
                    r.op,
                    r.module,
                    r.iteration,
                    r.category,
                )
                if r.sid in grow
                else r
                for r in rows
            ]
            rules["bn-stats-fp32"] = len(grow)

    return replace(ft, flavour="cuda", rows=rows, strings=strings, rules=rules)
