"""Shape inference and validation for a head, without computing anything.

Shapes are derived by torch's own formulas for each layer and then confirmed by running the head on
``meta`` tensors (no memory, no arithmetic). The first layer that cannot run gets a message in the
user's terms and a concrete fix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from vggexplorer.core.base.errors import HeadError, VGGExplorerError
from vggexplorer.core.model.backbone import BACKBONES, head_module_names
from vggexplorer.core.model.head import HeadSpec, LayerSpec
from vggexplorer.core.model.layers import buffer_count, pair

Shape = tuple[int, ...]
POOL_TYPES = ("AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "AvgPool2d", "MaxPool2d")


class ShapeError(VGGExplorerError):
    """A layer cannot run on what it receives. ``fix`` says what to change."""

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message + (f" — {fix}" if fix else ""))
        self.message = message
        self.fix = fix


@dataclass(frozen=True)
class LayerShape:
    index: int  # head index; -1 for the backbone row
    name: str  # module path in the built model (features, avgpool, classifier.3 ...)
    type: str
    description: str
    input_shape: Shape
    output_shape: Shape
    params: int
    buffers: int
    output_bytes: int


@dataclass(frozen=True)
class ShapeIssue:
    index: int  # head index of the first layer that cannot run; -1 for the input/backbone
    message: str
    fix: str

    def __str__(self) -> str:
        where = "input" if self.index < 0 else f"layer {self.index}"
        return f"{where}: {self.message}" + (f" — {self.fix}" if self.fix else "")


@dataclass(frozen=True)
class ShapeReport:
    spec: HeadSpec
    input_shape: Shape
    itemsize: int
    backbone: LayerShape | None
    layers: tuple[LayerShape, ...]
    issue: ShapeIssue | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.issue is None

    @property
    def output_shape(self) -> Shape | None:
        if not self.ok:
            return None
        if self.layers:
            return self.layers[-1].output_shape
        return self.backbone.output_shape if self.backbone else None

    @property
    def head_params(self) -> int:
        return self.spec.param_count

    @property
    def total_params(self) -> int:
        return BACKBONES[self.spec.backbone].param_count + self.spec.param_count

    def to_dict(self) -> dict[str, object]:
        rows = ([self.backbone] if self.backbone else []) + list(self.layers)
        return {
            "backbone": self.spec.backbone,
            "input_shape": list(self.input_shape),
            "ok": self.ok,
            "error": None
            if self.issue is None
            else {"layer": self.issue.index, "message": self.issue.message, "fix": self.issue.fix},
            "warnings": list(self.warnings),
            "output_shape": list(self.output_shape) if self.output_shape else None,
            "total_params": self.total_params,
            "layers": [
                {
                    "index": r.index,
                    "name": r.name,
                    "type": r.type,
                    "description": r.description,
                    "input_shape": list(r.input_shape),
                    "output_shape": list(r.output_shape),
                    "params": r.params,
                    "output_bytes": r.output_bytes,
                }
                for r in rows
            ],
        }


def fmt_shape(shape: Shape, batch_symbol: bool = False) -> str:
    parts = [str(d) for d in shape]
    if batch_symbol and parts:
        parts[0] = "N"
    return "×".join(parts)


def backbone_output_shape(backbone: str, batch: int, hw: tuple[int, int]) -> Shape | None:
    """N×C×H×W after ``features``; None when the input is too small for the five max-pools."""
    bb = BACKBONES[backbone]
    h, w = hw
    for c in bb.layers:
        if c == "M":
            h, w = h // 2, w // 2
    if h < 1 or w < 1:
        return None
    return (batch, bb.out_channels, h, w)


def min_backbone_input(backbone: str) -> int:
    return 2 ** BACKBONES[backbone].n_pools


def layer_output_shape(lay: LayerSpec, shape: Shape, *, prev: tuple[LayerSpec, ...] = ()) -> Shape:
    """What ``lay`` outputs for an input of ``shape`` (torch's rules). Raises ShapeError if it cannot run."""
    t, p = lay.type, lay.kwargs
    nd = len(shape)
    flatten_above = any(x.type == "Flatten" for x in prev)
    remove_flatten = "remove the Flatten above it" if flatten_above else "feed it an N×C×H×W map"

    def need_map() -> None:
        if nd != 4:
            raise ShapeError(
                f"{t} needs an N×C×H×W map but receives {fmt_shape(shape, True)}", remove_flatten
            )

    if t in ("ReLU", "LeakyReLU", "GELU", "Dropout", "Identity"):
        return shape
    if t == "Dropout2d":
        if nd != 4:
            raise ShapeError(
                f"Dropout2d zeroes whole channels of an N×C×H×W map but receives {fmt_shape(shape, True)}",
                "use Dropout for flattened features",
            )
        return shape
    if t == "Flatten":
        s, e = (
            p["start_dim"] % nd if -nd <= p["start_dim"] < nd else None,
            (p["end_dim"] % nd if -nd <= p["end_dim"] < nd else None),
        )
        if s is None or e is None or s > e:
            raise ShapeError(
                f"Flatten(start_dim={p['start_dim']}, end_dim={p['end_dim']}) does not fit a "
                f"{nd}-D input {fmt_shape(shape, True)}",
                "use start_dim=1, end_dim=-1",
            )
        return (*shape[:s], math.prod(shape[s : e + 1]), *shape[e + 1 :])
    if t == "Linear":
        if nd < 2:
            raise ShapeError(f"Linear needs at least 2-D input, receives {fmt_shape(shape)}")
        got = shape[-1]
        if got != p["in_features"]:
            origin = ""
            src = next((x for x in reversed(prev) if x.type != "Flatten"), None)
            if nd == 2 and flatten_above and src is not None:
                origin = " (the flattened map)"
                if src.type in POOL_TYPES:
                    origin = " (the flattened pooled map)"
            if nd == 4:
                raise ShapeError(
                    f"Linear acts on the last dimension, but receives the {fmt_shape(shape, True)} map "
                    f"(last dimension {got}); it has in_features={p['in_features']}",
                    f"insert Flatten before it (then in_features={math.prod(shape[1:])})",
                )
            raise ShapeError(
                f"Linear expects in_features={p['in_features']} but receives {got}{origin}",
                f"set in_features={got}",
            )
        return (*shape[:-1], p["out_features"])
    if t in ("BatchNorm1d", "BatchNorm2d"):
        ok_nd = (2, 3) if t == "BatchNorm1d" else (4,)
        if nd not in ok_nd:
            other = "BatchNorm2d" if t == "BatchNorm1d" else "BatchNorm1d"
            raise ShapeError(f"{t} cannot take {fmt_shape(shape, True)} ({nd}-D)", f"use {other} here")
        if shape[1] != p["num_features"]:
            raise ShapeError(
                f"{t} has num_features={p['num_features']} but receives {shape[1]} channels",
                f"set num_features={shape[1]}",
            )
        return shape
    need_map()
    n, c, h, w = shape
    if t in ("AdaptiveAvgPool2d", "AdaptiveMaxPool2d"):
        oh, ow = pair(p["output_size"])
        return (n, c, oh, ow)
    if t == "Conv2d":
        if c != p["in_channels"]:
            raise ShapeError(
                f"Conv2d has in_channels={p['in_channels']} but receives {c} channels", f"set in_channels={c}"
            )
        if p["padding"] == "same":
            oh, ow = h, w
        else:
            pad = 0 if p["padding"] == "valid" else p["padding"]
            oh, ow = conv_output_hw((h, w), p["kernel_size"], p["stride"], pad, p["dilation"])
            _check_fits(lay, (h, w), (oh, ow), pad)
        return (n, p["out_channels"], oh, ow)
    # MaxPool2d / AvgPool2d
    stride = p["stride"] if p["stride"] is not None else p["kernel_size"]
    dil = p.get("dilation", 1)
    oh, ow = conv_output_hw((h, w), p["kernel_size"], stride, p["padding"], dil, p["ceil_mode"])
    _check_fits(lay, (h, w), (oh, ow), p["padding"])
    return (n, c, oh, ow)


def _check_fits(lay: LayerSpec, hw: tuple[int, int], out: tuple[int, int], padding: object) -> None:
    if out[0] >= 1 and out[1] >= 1:
        return
    k = pair(lay.kwargs["kernel_size"])
    raise ShapeError(
        f"kernel {k[0]}×{k[1]} is larger than the {hw[0]}×{hw[1]} map",
        "",
    )


def infer_shapes(
    spec: HeadSpec,
    batch: int = 1,
    input_hw: tuple[int, int] = (224, 224),
    *,
    itemsize: int = 4,
    check_meta: bool = True,
) -> ShapeReport:
    """Per-layer input/output shapes, parameter counts and output bytes; or the first problem and its fix."""
    if batch < 1 or input_hw[0] < 1 or input_hw[1] < 1:
        raise VGGExplorerError(f"batch and input size must be positive, got batch {batch}, input {input_hw}")
    input_shape = (batch, 3, *input_hw)
    bb = BACKBONES[spec.backbone]
    names = head_module_names(spec)
    out = backbone_output_shape(spec.backbone, batch, input_hw)
    if out is None:
        m = min_backbone_input(spec.backbone)
        issue = ShapeIssue(
            -1,
            f"input {input_hw[0]}×{input_hw[1]} is too small for {bb.label()}'s {bb.n_pools} max-pools",
            f"use input ≥ {m}×{m}",
        )
        return ShapeReport(spec, input_shape, itemsize, None, (), issue)
    bb_row = LayerShape(
        -1,
        "features",
        bb.label(),
        f"{bb.label()} features",
        input_shape,
        out,
        bb.param_count,
        0,
        math.prod(out) * itemsize,
    )
    rows: list[LayerShape] = []
    warnings: list[str] = []
    shape: Shape = out
    for i, lay in enumerate(spec.layers):
        try:
            new = layer_output_shape(lay, shape, prev=spec.layers[:i])
        except ShapeError as e:
            fix = e.fix or _fit_fix(spec, i, batch, input_hw)
            msg = e.message
            if not e.fix and len(shape) == 4:
                msg += f" at input {_fmt_hw(input_hw)}"
            return ShapeReport(
                spec, input_shape, itemsize, bb_row, tuple(rows), ShapeIssue(i, msg, fix), tuple(warnings)
            )
        if lay.type in ("BatchNorm1d", "BatchNorm2d") and math.prod(new) // max(new[1], 1) == 1:
            warnings.append(
                f"layer {i} {lay.type}: one value per channel at batch {batch} — training raises "
                "'Expected more than 1 value per channel'; use batch ≥ 2 or eval mode"
            )
        rows.append(
            LayerShape(
                i,
                names[i],
                lay.type,
                lay.describe(),
                shape,
                new,
                lay.param_count,
                buffer_count(lay.type, lay.kwargs),
                math.prod(new) * itemsize,
            )
        )
        shape = new
    report = ShapeReport(spec, input_shape, itemsize, bb_row, tuple(rows), None, tuple(warnings))
    if check_meta:
        _confirm_on_meta(report)
    return report


def _fmt_hw(hw: tuple[int, int]) -> str:
    return str(hw[0]) if hw[0] == hw[1] else f"{hw[0]}×{hw[1]}"


def _fit_fix(spec: HeadSpec, index: int, batch: int, input_hw: tuple[int, int]) -> str:
    """For a kernel that does not fit: the smallest input at which it does, and a pooling alternative."""
    lay = spec.layers[index]
    has_adaptive = any(x.type.startswith("Adaptive") for x in spec.layers[:index])
    options: list[str] = []
    if lay.type == "Conv2d" and not has_adaptive:
        k = pair(lay.kwargs["kernel_size"])
        kk = max(k)
        options.append(
            f"keep AdaptiveAvgPool2d({kk}) before it" if kk > 1 else "add AdaptiveAvgPool2d before it"
        )
    elif has_adaptive:
        options.append("raise the adaptive pool's output_size")
    lo = max(input_hw)
    need = _min_input(spec, index, batch, input_hw)
    if need is not None:
        options.append(f"use input ≥ {need}" if input_hw[0] == input_hw[1] else f"use input ≥ {need}×{need}")
    return " or ".join(options) if options else f"use a smaller kernel than the map at input {lo}"


def _min_input(spec: HeadSpec, index: int, batch: int, input_hw: tuple[int, int]) -> int | None:
    """Smallest square input (multiple of 32 first, then exact) at which layers 0..index all run."""

    def runs(n: int) -> bool:
        shape = backbone_output_shape(spec.backbone, batch, (n, n))
        if shape is None:
            return False
        try:
            for i in range(index + 1):
                shape = layer_output_shape(spec.layers[i], shape, prev=spec.layers[:i])
        except ShapeError:
            return False
        return True

    hi = max(input_hw)
    limit = 16384
    while not runs(hi):
        hi *= 2
        if hi > limit:
            return None
    lo = 1
    while lo < hi:
        mid = (lo + hi) // 2
        if runs(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _confirm_on_meta(report: ShapeReport) -> None:
    """Run the head on meta tensors and check torch agrees with every inferred shape."""
    import warnings

    import torch

    from vggexplorer.core.model.backbone import build_layer

    if report.backbone is None:
        return
    x = torch.empty(report.backbone.output_shape, device="meta")
    meta = torch.device("meta")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for row, lay in zip(report.layers, report.spec.layers, strict=True):
            mod = build_layer(lay, meta).eval()
            x = mod(x)
            if tuple(x.shape) != row.output_shape:
                raise AssertionError(
                    f"shape inference disagrees with torch at layer {row.index} {lay.type}: "
                    f"{row.output_shape} vs {tuple(x.shape)}"
                )


def conv_output_hw(
    hw: tuple[int, int], kernel: Any, stride: Any = 1, padding: Any = 0, dilation: Any = 1, ceil: bool = False
) -> tuple[int, int]:
    """Output H×W of a conv/pool (torch's formula); values ≤ 0 mean the kernel does not fit."""
    out = []
    for i, n in enumerate(hw):
        k, s, p, d = pair(kernel)[i], pair(stride)[i], pair(padding)[i], pair(dilation)[i]
        eff = d * (k - 1) + 1
        num = n + 2 * p - eff
        if num < 0:
            out.append(0)
            continue
        o = (-(-num // s) if ceil else num // s) + 1
        if ceil and (o - 1) * s >= n + p:
            o -= 1
        out.append(o)
    return out[0], out[1]


def fix_chain(spec: HeadSpec, input_hw: tuple[int, int] = (224, 224)) -> tuple[HeadSpec, list[str]]:
    """Make in_features / in_channels / num_features follow what actually arrives at each layer.

    Returns the fixed spec and a list of human descriptions of what changed (empty when nothing did).
    Layers after the first one that cannot run for another reason (a kernel larger than the map) are left.
    """
    changes: list[str] = []
    shape: tuple[int, ...] | None = backbone_output_shape(spec.backbone, 1, input_hw)
    layers = list(spec.layers)
    for i, lay in enumerate(layers):
        if shape is None:
            break
        kw = lay.kwargs
        fix: dict[str, int] = {}
        if lay.type == "Linear" and len(shape) >= 2 and kw["in_features"] != shape[-1]:
            fix["in_features"] = shape[-1]
        elif lay.type == "Conv2d" and len(shape) == 4 and kw["in_channels"] != shape[1]:
            if shape[1] % kw["groups"] == 0:
                fix["in_channels"] = shape[1]
        elif (
            lay.type in ("BatchNorm1d", "BatchNorm2d") and len(shape) >= 2 and kw["num_features"] != shape[1]
        ):
            fix["num_features"] = shape[1]
        if fix:
            try:
                layers[i] = lay.with_params(i, **fix)
            except HeadError:
                break
            changes.append(
                f"layer {i} {lay.type}: " + ", ".join(f"{k} {kw[k]} → {v}" for k, v in fix.items())
            )
        try:
            shape = layer_output_shape(layers[i], shape, prev=tuple(layers[:i]))
        except ShapeError:
            shape = None
    return HeadSpec(tuple(layers), spec.backbone, spec.name), changes
