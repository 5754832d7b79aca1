"""The layer types a head may contain, their constructor parameters, and how to check them.

A layer is plain data: ``{"type": <torch.nn class name>, **constructor kwargs}``. This module knows, for each
supported type, which kwargs exist, their kinds and limits, and how many parameters the layer will own —
so absurd layers are refused before anything is allocated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from vggexplorer.core.base.errors import HeadError

ParamKind = Literal["int", "float", "bool", "size", "padding", "choice"]

#: A layer whose float32 weights alone exceed this is refused before anything is built.
MAX_LAYER_WEIGHT_BYTES = 64 * 1024**3
#: No single size parameter may exceed this (a sanity bound far above any real VGG head).
MAX_INT = 1 << 24
#: Bytes per parameter used for the weight-size bound (float32 master weights).
WEIGHT_ITEMSIZE = 4


@dataclass(frozen=True)
class ParamSpec:
    """One constructor parameter of a layer type."""

    name: str
    kind: ParamKind
    default: Any = None
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    help: str = ""


@dataclass(frozen=True)
class LayerType:
    """A supported ``torch.nn`` layer type."""

    name: str
    params: tuple[ParamSpec, ...]
    category: str
    help: str = ""
    param_names: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "param_names", frozenset(p.name for p in self.params))

    def spec(self, name: str) -> ParamSpec:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params if not p.required}


def _p(name: str, kind: ParamKind, default: Any = None, **kw: Any) -> ParamSpec:
    return ParamSpec(name=name, kind=kind, default=default, **kw)


def _req(name: str, kind: ParamKind, **kw: Any) -> ParamSpec:
    return ParamSpec(name=name, kind=kind, required=True, **kw)


_BN = (
    _req("num_features", "int", minimum=1, help="channels (2-D/4-D input dim 1)"),
    _p("eps", "float", 1e-5, minimum=0.0, maximum=1.0),
    _p("momentum", "float", 0.1, minimum=0.0, maximum=1.0),
    _p("affine", "bool", True),
    _p("track_running_stats", "bool", True),
)

LAYER_TYPES: dict[str, LayerType] = {
    t.name: t
    for t in (
        LayerType(
            "AdaptiveAvgPool2d",
            (_req("output_size", "size", minimum=1, help="output H×W"),),
            "Pooling",
            "Averages the map to a fixed size (torchvision keeps 7×7).",
        ),
        LayerType(
            "AdaptiveMaxPool2d",
            (_req("output_size", "size", minimum=1, help="output H×W"),),
            "Pooling",
        ),
        LayerType(
            "AvgPool2d",
            (
                _req("kernel_size", "size", minimum=1),
                _p("stride", "size", None, minimum=1, help="defaults to kernel_size"),
                _p("padding", "size", 0, minimum=0),
                _p("ceil_mode", "bool", False),
                _p("count_include_pad", "bool", True),
            ),
            "Pooling",
        ),
        LayerType(
            "MaxPool2d",
            (
                _req("kernel_size", "size", minimum=1),
                _p("stride", "size", None, minimum=1, help="defaults to kernel_size"),
                _p("padding", "size", 0, minimum=0),
                _p("dilation", "size", 1, minimum=1),
                _p("ceil_mode", "bool", False),
            ),
            "Pooling",
        ),
        LayerType(
            "Flatten",
            (
                _p("start_dim", "int", 1, minimum=-8, maximum=8),
                _p("end_dim", "int", -1, minimum=-8, maximum=8),
            ),
            "Shape",
            "Turns N×C×H×W into N×(C·H·W) for Linear layers.",
        ),
        LayerType(
            "Linear",
            (
                _req("in_features", "int", minimum=1),
                _req("out_features", "int", minimum=1),
                _p("bias", "bool", True),
            ),
            "Linear / Conv",
        ),
        LayerType(
            "Conv2d",
            (
                _req("in_channels", "int", minimum=1),
                _req("out_channels", "int", minimum=1),
                _req("kernel_size", "size", minimum=1),
                _p("stride", "size", 1, minimum=1),
                _p("padding", "padding", 0, minimum=0),
                _p("dilation", "size", 1, minimum=1),
                _p("groups", "int", 1, minimum=1),
                _p("bias", "bool", True),
            ),
            "Linear / Conv",
        ),
        LayerType("ReLU", (_p("inplace", "bool", False),), "Activation"),
        LayerType(
            "LeakyReLU",
            (_p("negative_slope", "float", 0.01, minimum=-1e6, maximum=1e6), _p("inplace", "bool", False)),
            "Activation",
        ),
        LayerType("GELU", (_p("approximate", "choice", "none", choices=("none", "tanh")),), "Activation"),
        LayerType(
            "Dropout",
            (_p("p", "float", 0.5, minimum=0.0, maximum=1.0), _p("inplace", "bool", False)),
            "Regularisation",
        ),
        LayerType(
            "Dropout2d",
            (_p("p", "float", 0.5, minimum=0.0, maximum=1.0), _p("inplace", "bool", False)),
            "Regularisation",
        ),
        LayerType("BatchNorm1d", _BN, "Normalisation"),
        LayerType("BatchNorm2d", _BN, "Normalisation"),
        LayerType("Identity", (), "Shape"),
    )
}


def layer_type(name: object, index: int | None = None) -> LayerType:
    if not isinstance(name, str):
        raise HeadError(f"'type' must be a layer class name, got {name!r}", layer=index, field="type")
    try:
        return LAYER_TYPES[name]
    except KeyError:
        known = ", ".join(sorted(LAYER_TYPES))
        raise HeadError(
            f"unknown layer type {name!r}; supported: {known}", layer=index, field="type"
        ) from None


def _short(v: object, limit: int = 40) -> str:
    """A value for an error message, cut so that a 4,000-digit number does not become the message."""
    text = repr(v)
    return text if len(text) <= limit else text[:limit] + "…"


def _check_int(v: object, spec: ParamSpec, index: int | None, *, what: str = "an integer") -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise HeadError(f"must be {what}, got {_short(v)}", layer=index, field=spec.name)
    if spec.minimum is not None and v < spec.minimum:
        raise HeadError(f"must be ≥ {spec.minimum:g}, got {_short(v)}", layer=index, field=spec.name)
    upper = spec.maximum if spec.maximum is not None else MAX_INT
    if v > upper:
        raise HeadError(f"must be ≤ {upper:g}, got {_short(v)}", layer=index, field=spec.name)
    return v


def normalize_value(spec: ParamSpec, v: object, index: int | None = None) -> Any:
    """Check one parameter value and return it in canonical form (pairs as tuples)."""
    if spec.kind == "bool":
        if not isinstance(v, bool):
            raise HeadError(f"must be true or false, got {v!r}", layer=index, field=spec.name)
        return v
    if spec.kind == "int":
        return _check_int(v, spec, index)
    if spec.kind == "float":
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise HeadError(f"must be a number, got {v!r}", layer=index, field=spec.name)
        f = float(v)
        if not math.isfinite(f):
            raise HeadError(f"must be a finite number, got {v!r}", layer=index, field=spec.name)
        if spec.minimum is not None and f < spec.minimum:
            raise HeadError(f"must be ≥ {spec.minimum:g}, got {f:g}", layer=index, field=spec.name)
        if spec.maximum is not None and f > spec.maximum:
            raise HeadError(f"must be ≤ {spec.maximum:g}, got {f:g}", layer=index, field=spec.name)
        return f
    if spec.kind == "choice":
        if v not in spec.choices:
            raise HeadError(
                f"must be one of {', '.join(spec.choices)}, got {v!r}", layer=index, field=spec.name
            )
        return v
    if spec.kind == "padding" and isinstance(v, str):
        if v not in ("same", "valid"):
            raise HeadError(f"must be a size, 'same' or 'valid', got {v!r}", layer=index, field=spec.name)
        return v
    # size / padding: int or [int, int]; None allowed only where the default is None (stride).
    if v is None and not spec.required and spec.default is None:
        return None
    if isinstance(v, list | tuple):
        if len(v) != 2:
            raise HeadError(f"must be one integer or a pair [h, w], got {v!r}", layer=index, field=spec.name)
        a = _check_int(v[0], spec, index, what="one integer or a pair [h, w]")
        b = _check_int(v[1], spec, index, what="one integer or a pair [h, w]")
        return a if a == b else (a, b)
    return _check_int(v, spec, index, what="one integer or a pair [h, w]")


def pair(v: Any) -> tuple[int, int]:
    if isinstance(v, tuple | list):
        return int(v[0]), int(v[1])
    return int(v), int(v)


def normalize_params(
    type_name: str, params: Mapping[str, object], index: int | None = None
) -> dict[str, Any]:
    """Validate kwargs for ``type_name``: unknown names, missing required, kinds and ranges, absurd sizes."""
    lt = layer_type(type_name, index)
    out: dict[str, Any] = {}
    for key in params:
        if not isinstance(key, str) or key not in lt.param_names:
            known = ", ".join(p.name for p in lt.params) or "none"
            raise HeadError(
                f"{lt.name} has no parameter {key!r} (its parameters: {known})", layer=index, field=str(key)
            )
    for spec in lt.params:
        if spec.name in params:
            out[spec.name] = normalize_value(spec, params[spec.name], index)
        elif spec.required:
            raise HeadError(f"{lt.name} needs '{spec.name}'", layer=index, field=spec.name)
        else:
            out[spec.name] = spec.default
    _check_consistency(lt.name, out, index)
    n = param_count(lt.name, out)
    if n * WEIGHT_ITEMSIZE > MAX_LAYER_WEIGHT_BYTES:
        raise HeadError(
            f"{lt.name} would hold {n:,} parameters ({n * WEIGHT_ITEMSIZE / 1024**3:,.0f} GiB in float32), "
            f"over the {MAX_LAYER_WEIGHT_BYTES // 1024**3} GiB limit per layer — use smaller sizes",
            layer=index,
        )
    return out


def _check_consistency(name: str, p: dict[str, Any], index: int | None) -> None:
    if name == "Conv2d":
        g = p["groups"]
        for f in ("in_channels", "out_channels"):
            if p[f] % g:
                raise HeadError(f"{f}={p[f]} is not divisible by groups={g}", layer=index, field=f)
        if p["padding"] == "same" and pair(p["stride"]) != (1, 1):
            raise HeadError("padding='same' needs stride 1", layer=index, field="padding")
    if name in ("MaxPool2d", "AvgPool2d"):
        kh, kw = pair(p["kernel_size"])
        ph, pw = pair(p["padding"])
        dh, dw = pair(p.get("dilation", 1))
        if ph > ((kh - 1) * dh + 1) // 2 or pw > ((kw - 1) * dw + 1) // 2:
            raise HeadError(
                f"padding {p['padding']} must be at most half the kernel {p['kernel_size']}",
                layer=index,
                field="padding",
            )


def param_count(type_name: str, p: Mapping[str, Any]) -> int:
    """Trainable parameter count of a layer built with kwargs ``p`` (no tensors involved)."""
    if type_name == "Linear":
        return int(p["in_features"]) * int(p["out_features"]) + (int(p["out_features"]) if p["bias"] else 0)
    if type_name == "Conv2d":
        kh, kw = pair(p["kernel_size"])
        w = int(p["out_channels"]) * (int(p["in_channels"]) // int(p["groups"])) * kh * kw
        return w + (int(p["out_channels"]) if p["bias"] else 0)
    if type_name in ("BatchNorm1d", "BatchNorm2d"):
        return 2 * int(p["num_features"]) if p["affine"] else 0
    return 0


def buffer_count(type_name: str, p: Mapping[str, Any]) -> int:
    """Elements in non-trainable float buffers (BatchNorm running stats; num_batches_tracked is int64)."""
    if type_name in ("BatchNorm1d", "BatchNorm2d") and p["track_running_stats"]:
        return 2 * int(p["num_features"])
    return 0


def describe(type_name: str, p: Mapping[str, Any]) -> str:
    """Short human text for a layer: ``Conv2d(512→4096, 7×7)``."""

    def sz(v: Any) -> str:
        a, b = pair(v)
        return f"{a}×{b}"

    if type_name == "Linear":
        return f"Linear({p['in_features']}→{p['out_features']})"
    if type_name == "Conv2d":
        extra = ""
        if pair(p["stride"]) != (1, 1):
            extra += f", stride {sz(p['stride'])}"
        if p["padding"] not in (0, (0, 0)):
            extra += f", pad {p['padding'] if isinstance(p['padding'], str) else sz(p['padding'])}"
        return f"Conv2d({p['in_channels']}→{p['out_channels']}, {sz(p['kernel_size'])}{extra})"
    if type_name in ("AdaptiveAvgPool2d", "AdaptiveMaxPool2d"):
        return f"{type_name}({sz(p['output_size'])})"
    if type_name in ("MaxPool2d", "AvgPool2d"):
        return f"{type_name}({sz(p['kernel_size'])})"
    if type_name in ("Dropout", "Dropout2d"):
        return f"{type_name}(p={p['p']:g})"
    if type_name in ("BatchNorm1d", "BatchNorm2d"):
        return f"{type_name}({p['num_features']})"
    return type_name
