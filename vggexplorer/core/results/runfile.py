"""Run files: ``run.json`` (versioned, compact, validated on load) and ``memory.csv`` (pandas-readable).

``run.json`` layout (``"format": "vggexplorer.run/2"``)::

    {"format", "name", "status", "predicted", "notes",
     "config": {...RunMeta.to_dict(): RunConfig.to_dict() + resolved_device, fake, head_label, preset},
     "environment": {...RunEnvironment.to_dict()},
     "summary": {peak_allocated_bytes, peak_tensor_bytes, peak_reserved_bytes, peak_device_bytes,
                 param_bytes, output_shape, peak_time_s, peak_phase, peak_module},
     "fault": null | {kind, message, layer, phase, iteration},
     "strings": [...],                      # ops and module paths; timelines index it (-1 = none)
     "layers": [{LayerStats fields}],
     "spans": {module: [str], phase: [str], t0: [...], t1: [...], iteration: [...]},
     "categories": {"peak": {category: bytes}, "at_peak": {category: bytes at the allocator-level peak}},
     "timelines": {"tensor": COLUMNS, "allocator": COLUMNS, "device": {t, process, device_used,
                   driver_reserved, source, achieved_hz, process_hz}},
     "allocator_trace": null | {action: [str], addr, size, stream, time_s}}

A column is a JSON list of numbers, or, when it has more than ``B64_MIN`` values, ``{"dtype": "<i8",
"b64": "..."}`` (base64 of the little-endian array). Timeline ``phase``/``category`` index ``PHASES`` and
``CATEGORIES`` of ``vggexplorer.core.results.result``.

``load_run`` refuses, with a :class:`RunFileError` saying what is wrong: files over 512 MiB, invalid JSON,
NaN/Infinity, nesting deeper than 64, another format or version, missing keys, wrong types, out-of-range
indices and columns of different lengths.

``vggexplorer.run/1`` files (same layout; ``config`` a free dict) still open: their legacy config and
environment keys are mapped onto the typed fields (``RunMeta.from_dict``/``RunEnvironment.from_dict`` with
``legacy=True``); saving such a run writes ``/2``.
"""

from __future__ import annotations

import base64
import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from vggexplorer.core.base.errors import VGGExplorerError
from vggexplorer.core.base.fileio import atomic_open, atomic_write_bytes
from vggexplorer.core.results.analysis import category_peaks
from vggexplorer.core.results.meta import RunEnvironment, RunMeta
from vggexplorer.core.results.result import (
    CATEGORIES,
    PHASES,
    RUN_FORMAT,
    RUN_FORMAT_V1,
    DeviceSamples,
    Fault,
    LayerStats,
    RunResult,
    Span,
    Summary,
    Timeline,
)

__all__ = ["MAX_RUN_FILE_BYTES", "RunFileError", "load_run", "result_to_dict", "save_run", "write_csv"]

MAX_RUN_FILE_BYTES = 512 * 1024 * 1024
MAX_DEPTH = 64
B64_MIN = 4096
_DTYPES = {"<f8": np.float64, "<i8": np.int64, "<i4": np.int32, "<i1": np.int8}
_TL_COLS: dict[str, str] = {
    "t": "<f8",
    "delta": "<i8",
    "total": "<i8",
    "phase": "<i1",
    "category": "<i1",
    "op": "<i4",
    "module": "<i4",
    "iteration": "<i4",
}
_TL_OPTIONAL = {"reserved": "<i8", "active": "<i8", "storage": "<i4"}


class RunFileError(VGGExplorerError):
    """A run file was refused: what is wrong and where."""


# ---------------------------------------------------------------------------------------------- write


def _col(a: np.ndarray, dtype: str) -> Any:
    arr = np.ascontiguousarray(np.asarray(a).astype(np.dtype(dtype), copy=False))
    if len(arr) > B64_MIN:
        return {"dtype": dtype, "b64": base64.b64encode(arr.tobytes()).decode("ascii")}
    if dtype == "<f8":
        return [float(v) for v in arr]
    return [int(v) for v in arr]


def _timeline_dict(tl: Timeline) -> dict[str, Any]:
    d = {name: _col(getattr(tl, name), dt) for name, dt in _TL_COLS.items()}
    for name, dt in _TL_OPTIONAL.items():
        v = getattr(tl, name)
        if v is not None:
            d[name] = _col(v, dt)
    return d


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return _jsonable(float(v))
    if v is None or isinstance(v, str | int | float | bool):
        return v
    return str(v)


def result_to_dict(r: RunResult) -> dict[str, Any]:
    s = r.summary
    dev = r.device
    d: dict[str, Any] = {
        "format": RUN_FORMAT,
        "name": r.name,
        "status": r.status,
        "predicted": r.predicted,
        "notes": list(r.notes),
        "config": _jsonable(r.config.to_dict()),
        "environment": _jsonable(r.environment.to_dict()),
        "summary": {
            "peak_allocated_bytes": s.peak_allocated_bytes,
            "peak_tensor_bytes": s.peak_tensor_bytes,
            "peak_reserved_bytes": s.peak_reserved_bytes,
            "peak_device_bytes": s.peak_device_bytes,
            "param_bytes": s.param_bytes,
            "output_shape": list(s.output_shape) if s.output_shape is not None else None,
            "peak_time_s": s.peak_time_s,
            "peak_phase": s.peak_phase,
            "peak_module": s.peak_module,
        },
        "fault": None
        if r.fault is None
        else {
            "kind": r.fault.kind,
            "message": r.fault.message,
            "layer": r.fault.layer,
            "phase": r.fault.phase,
            "iteration": r.fault.iteration,
        },
        "strings": list(r.strings),
        "layers": [
            {
                "name": x.name,
                "type": x.type,
                "head_index": x.head_index,
                "output_shape": list(x.output_shape),
                "output_bytes": x.output_bytes,
                "saved_bytes": x.saved_bytes,
                "param_bytes": x.param_bytes,
                "grad_bytes": x.grad_bytes,
                "peak_forward_bytes": x.peak_forward_bytes,
                "peak_backward_bytes": x.peak_backward_bytes,
                "peak_forward_allocator_bytes": x.peak_forward_allocator_bytes,
                "peak_backward_allocator_bytes": x.peak_backward_allocator_bytes,
                "forward_s": x.forward_s,
                "backward_s": x.backward_s,
            }
            for x in r.layers
        ],
        "spans": {
            "module": [sp.module for sp in r.spans],
            "phase": [sp.phase for sp in r.spans],
            "t0": [sp.t0 for sp in r.spans],
            "t1": [sp.t1 for sp in r.spans],
            "iteration": [sp.iteration for sp in r.spans],
        },
        "categories": category_peaks(r),
        "timelines": {
            "tensor": _timeline_dict(r.tensor),
            "allocator": _timeline_dict(r.allocator),
            "device": {
                "t": _col(dev.t, "<f8"),
                "process": _col(dev.process, "<i8"),
                "device_used": None if dev.device_used is None else _col(dev.device_used, "<i8"),
                "driver_reserved": None if dev.driver_reserved is None else _col(dev.driver_reserved, "<i8"),
                "source": dev.source,
                "achieved_hz": float(dev.achieved_hz) if math.isfinite(dev.achieved_hz) else 0.0,
                "process_hz": float(dev.process_hz) if math.isfinite(dev.process_hz) else 0.0,
            },
        },
        "allocator_trace": None,
    }
    if r.allocator_trace is not None:
        tr = r.allocator_trace
        d["allocator_trace"] = {
            "action": [str(e.get("action", "")) for e in tr],
            "addr": _col(np.asarray([int(e.get("addr", 0)) for e in tr], np.int64), "<i8"),
            "size": _col(np.asarray([int(e.get("size", 0)) for e in tr], np.int64), "<i8"),
            "stream": _col(np.asarray([int(e.get("stream", 0)) for e in tr], np.int64), "<i8"),
            "time_s": _col(np.asarray([float(e.get("time_s", 0.0)) for e in tr], np.float64), "<f8"),
        }
    return d


def save_run(r: RunResult, path: str | Path) -> None:
    """Write ``r`` as run.json, atomically (a failed write leaves any old file as it was)."""
    text = json.dumps(result_to_dict(r), separators=(",", ":"), allow_nan=False)
    atomic_write_bytes(Path(path), text.encode("utf-8"))


# ---------------------------------------------------------------------------------------------- read


def _finite_float(text: str) -> float:
    """JSON numbers like 1e400 parse as inf: refuse them like the NaN/Infinity literals."""
    v = float(text)
    if not math.isfinite(v):
        raise RunFileError(f"number {text[:40]} is out of range")
    return v


def _int64(text: str) -> int:
    if len(text) > 20:
        raise RunFileError(f"integer {text[:40]}… is out of range")
    v = int(text)
    if not -(2**63) <= v < 2**63:
        raise RunFileError(f"integer {text[:40]} is out of range")
    return v


def _reject_constant(name: str) -> Any:
    raise RunFileError(f"{name} is not allowed in a run file (numbers must be finite)")


def _depth_ok(v: Any, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise RunFileError(f"run file is nested more than {MAX_DEPTH} levels deep")
    if isinstance(v, dict):
        for x in v.values():
            if isinstance(x, dict | list):
                _depth_ok(x, depth + 1)
    elif isinstance(v, list):
        for x in v:
            if isinstance(x, dict | list):
                _depth_ok(x, depth + 1)


def _get(d: Any, key: str, typ: type | tuple[type, ...], where: str, *, optional: bool = False) -> Any:
    if not isinstance(d, dict):
        raise RunFileError(f"{where} must be an object")
    if key not in d:
        if optional:
            return None
        raise RunFileError(f"{where}: missing key '{key}'")
    v = d[key]
    if v is None and optional:
        return None
    if isinstance(v, bool) and bool not in (typ if isinstance(typ, tuple) else (typ,)):
        raise RunFileError(f"{where}.{key} has the wrong type (bool)")
    if not isinstance(v, typ):
        name = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
        raise RunFileError(f"{where}.{key} must be {name}, got {type(v).__name__}")
    return v


def _fits(v: list[int], dtype: str) -> bool:
    info = np.iinfo(np.dtype(dtype))
    return bool(min(v) >= info.min and max(v) <= info.max)


def _read_col(v: Any, dtype: str, where: str) -> np.ndarray:
    np_dt = _DTYPES[dtype]
    if isinstance(v, dict):
        if v.get("dtype") != dtype or not isinstance(v.get("b64"), str):
            raise RunFileError(f"{where}: a packed column needs dtype {dtype!r} and a base64 'b64' string")
        try:
            raw = base64.b64decode(v["b64"], validate=True)
        except ValueError:
            raise RunFileError(f"{where}: invalid base64") from None
        if len(raw) % np.dtype(np_dt).itemsize:
            raise RunFileError(f"{where}: packed data length is not a multiple of the item size")
        arr = np.frombuffer(raw, dtype=np.dtype(dtype)).astype(np_dt)
    elif isinstance(v, list):
        if dtype == "<f8":
            if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in v):
                raise RunFileError(f"{where}: must be a list of numbers")
        elif not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            raise RunFileError(f"{where}: must be a list of whole numbers")
        try:
            arr = np.asarray(v, dtype=np_dt)
        except OverflowError:
            raise RunFileError(f"{where}: a number is out of range") from None
        if dtype != "<f8" and len(v) and not _fits(v, dtype):
            raise RunFileError(f"{where}: a number is out of range")
    else:
        raise RunFileError(f"{where}: must be a list of numbers")
    if dtype == "<f8" and not np.all(np.isfinite(arr)):
        raise RunFileError(f"{where}: numbers must be finite")
    return arr


def _read_timeline(d: Any, where: str, n_strings: int) -> Timeline:
    if not isinstance(d, dict):
        raise RunFileError(f"{where} must be an object")
    cols: dict[str, Any] = {}
    for name, dt in _TL_COLS.items():
        if name not in d:
            raise RunFileError(f"{where}: missing column '{name}'")
        cols[name] = _read_col(d[name], dt, f"{where}.{name}")
    for name, dt in _TL_OPTIONAL.items():
        if d.get(name) is not None:
            cols[name] = _read_col(d[name], dt, f"{where}.{name}")
    n = len(cols["t"])
    for name, a in cols.items():
        if len(a) != n:
            raise RunFileError(f"{where}: column '{name}' has {len(a)} values, 't' has {n}")
    if n:
        if cols["phase"].min() < 0 or cols["phase"].max() >= len(PHASES):
            raise RunFileError(f"{where}.phase: index out of range")
        if cols["category"].min() < 0 or cols["category"].max() >= len(CATEGORIES):
            raise RunFileError(f"{where}.category: index out of range")
        for name in ("op", "module"):
            if cols[name].min() < -1 or cols[name].max() >= n_strings:
                raise RunFileError(f"{where}.{name}: string index out of range")
    return Timeline(**cols)


def _int_or_none(d: Any, key: str, where: str) -> int | None:
    v = _get(d, key, int, where, optional=True)
    return None if v is None else int(v)


def _shape(v: Any, where: str) -> tuple[int, ...]:
    if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        raise RunFileError(f"{where} must be a list of whole numbers")
    return tuple(v)


def result_from_dict(d: Any) -> RunResult:
    if not isinstance(d, dict):
        raise RunFileError("a run file must hold a JSON object")
    fmt = d.get("format")
    if not isinstance(fmt, str) or not fmt.startswith("vggexplorer.run/"):
        raise RunFileError(f"not a vggexplorer run file (format {fmt!r:.60}; expected {RUN_FORMAT!r})")
    if fmt not in (RUN_FORMAT, RUN_FORMAT_V1):
        raise RunFileError(
            f"unsupported run file version {fmt!r}; this version reads {RUN_FORMAT!r} and {RUN_FORMAT_V1!r}"
        )
    legacy = fmt == RUN_FORMAT_V1
    status = _get(d, "status", str, "run")
    if status not in ("ok", "oom", "cancelled", "error"):
        raise RunFileError(f"run.status must be ok, oom, cancelled or error, got {status!r:.40}")
    config_d = _get(d, "config", dict, "run")
    env_d = _get(d, "environment", dict, "run")
    try:
        config = RunMeta.from_dict(config_d, legacy=legacy)
    except VGGExplorerError as e:
        raise RunFileError(f"run.config: {e}") from None
    try:
        env = RunEnvironment.from_dict(env_d, legacy=legacy)
    except VGGExplorerError as e:
        raise RunFileError(f"run.environment: {e}") from None
    strings = _get(d, "strings", list, "run")
    if not all(isinstance(s, str) for s in strings):
        raise RunFileError("run.strings must be a list of strings")
    notes = _get(d, "notes", list, "run", optional=True) or []
    if not all(isinstance(s, str) for s in notes):
        raise RunFileError("run.notes must be a list of strings")
    sd = _get(d, "summary", dict, "run")
    out_shape = sd.get("output_shape")
    summary = Summary(
        peak_allocated_bytes=_get(sd, "peak_allocated_bytes", int, "summary"),
        peak_tensor_bytes=_get(sd, "peak_tensor_bytes", int, "summary"),
        peak_reserved_bytes=_int_or_none(sd, "peak_reserved_bytes", "summary"),
        peak_device_bytes=_int_or_none(sd, "peak_device_bytes", "summary"),
        param_bytes=_get(sd, "param_bytes", int, "summary"),
        output_shape=None if out_shape is None else _shape(out_shape, "summary.output_shape"),
        peak_time_s=float(_get(sd, "peak_time_s", (int, float), "summary", optional=True) or 0.0),
        peak_phase=_get(sd, "peak_phase", str, "summary", optional=True) or "",
        peak_module=_get(sd, "peak_module", str, "summary", optional=True) or "",
    )
    fd = d.get("fault")
    fault = None
    if fd is not None:
        kind = _get(fd, "kind", str, "fault")
        if kind not in ("oom", "cancelled", "error"):
            raise RunFileError(f"fault.kind must be oom, cancelled or error, got {kind!r:.40}")
        fault = Fault(
            kind,
            _get(fd, "message", str, "fault"),
            _get(fd, "layer", str, "fault"),
            _get(fd, "phase", str, "fault"),
            _get(fd, "iteration", int, "fault"),
        )
    layers = []
    for i, ld in enumerate(_get(d, "layers", list, "run")):
        w = f"layers[{i}]"
        layers.append(
            LayerStats(
                name=_get(ld, "name", str, w),
                type=_get(ld, "type", str, w),
                head_index=_get(ld, "head_index", int, w),
                output_shape=_shape(_get(ld, "output_shape", list, w), f"{w}.output_shape"),
                **{
                    k: _get(ld, k, int, w)
                    for k in (
                        "output_bytes",
                        "saved_bytes",
                        "param_bytes",
                        "grad_bytes",
                        "peak_forward_bytes",
                        "peak_backward_bytes",
                        "peak_forward_allocator_bytes",
                        "peak_backward_allocator_bytes",
                    )
                },
                forward_s=float(_get(ld, "forward_s", (int, float), w)),
                backward_s=float(_get(ld, "backward_s", (int, float), w)),
            )
        )
    sp = _get(d, "spans", dict, "run")
    mods = _get(sp, "module", list, "spans")
    phases = _get(sp, "phase", list, "spans")
    t0 = _read_col(_get(sp, "t0", (list, dict), "spans"), "<f8", "spans.t0")
    t1 = _read_col(_get(sp, "t1", (list, dict), "spans"), "<f8", "spans.t1")
    its = _read_col(_get(sp, "iteration", (list, dict), "spans"), "<i8", "spans.iteration")
    if not (len(mods) == len(phases) == len(t0) == len(t1) == len(its)):
        raise RunFileError("spans: columns have different lengths")
    if not all(isinstance(m, str) for m in mods) or not all(
        isinstance(p, str) and p in PHASES for p in phases
    ):
        raise RunFileError("spans: module must be strings and phase one of " + ", ".join(PHASES))
    spans = [
        Span(m, p, float(a), float(b), int(k))
        for m, p, a, b, k in zip(mods, phases, t0, t1, its, strict=True)
    ]
    tls = _get(d, "timelines", dict, "run")
    tensor = _read_timeline(tls.get("tensor"), "timelines.tensor", len(strings))
    allocator = _read_timeline(tls.get("allocator"), "timelines.allocator", len(strings))
    dd = _get(tls, "device", dict, "timelines")
    dt = _read_col(_get(dd, "t", (list, dict), "device"), "<f8", "device.t")
    proc = _read_col(_get(dd, "process", (list, dict), "device"), "<i8", "device.process")
    used = (
        None if dd.get("device_used") is None else _read_col(dd["device_used"], "<i8", "device.device_used")
    )
    drv = (
        None
        if dd.get("driver_reserved") is None
        else _read_col(dd["driver_reserved"], "<i8", "device.driver_reserved")
    )
    for name, a in (("process", proc), ("device_used", used), ("driver_reserved", drv)):
        if a is not None and len(a) != len(dt):
            raise RunFileError(f"device.{name} has {len(a)} values, device.t has {len(dt)}")
    hz = _get(dd, "achieved_hz", (int, float), "device", optional=True) or 0.0
    phz = _get(dd, "process_hz", (int, float), "device", optional=True) or 0.0  # absent in older files
    device = DeviceSamples(
        dt, proc, used, drv, _get(dd, "source", str, "device", optional=True) or "", float(hz), float(phz)
    )
    trace = None
    td = d.get("allocator_trace")
    if td is not None:
        acts = _get(td, "action", list, "allocator_trace")
        cols = {
            k: _read_col(_get(td, k, (list, dict), "allocator_trace"), dtp, f"allocator_trace.{k}")
            for k, dtp in (("addr", "<i8"), ("size", "<i8"), ("stream", "<i8"), ("time_s", "<f8"))
        }
        if not all(isinstance(a, str) for a in acts) or any(len(c) != len(acts) for c in cols.values()):
            raise RunFileError("allocator_trace: columns must be of equal length; action strings")
        trace = [
            {"action": a, "addr": int(x), "size": int(s), "stream": int(st), "time_s": float(t)}
            for a, x, s, st, t in zip(
                acts, cols["addr"], cols["size"], cols["stream"], cols["time_s"], strict=True
            )
        ]
    return RunResult(
        config=config,
        environment=env,
        summary=summary,
        strings=list(strings),
        tensor=tensor,
        allocator=allocator,
        device=device,
        spans=spans,
        layers=layers,
        status=status,
        fault=fault,
        predicted=bool(_get(d, "predicted", bool, "run", optional=True) or False),
        name=_get(d, "name", str, "run", optional=True) or "",
        notes=list(notes),
        allocator_trace=trace,
    )


def load_run(path: str | Path) -> RunResult:
    """Read a run.json; a bad file raises RunFileError naming the file and the problem."""
    from vggexplorer.core.base.fileio import read_bounded

    p = Path(path)
    raw = read_bounded(p, MAX_RUN_FILE_BYTES, "run file", RunFileError)
    try:
        return loads_run(raw)
    except RunFileError as e:
        raise RunFileError(f"{p.name}: {e}") from None


def loads_run(raw: str | bytes) -> RunResult:
    if len(raw) > MAX_RUN_FILE_BYTES:
        raise RunFileError(f"run file is {len(raw):,} bytes; the limit is {MAX_RUN_FILE_BYTES:,} (512 MiB)")
    try:
        data = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_int64)
    except RecursionError:
        raise RunFileError("run file is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        if isinstance(e, RunFileError):
            raise
        raise RunFileError(f"not valid JSON: {e}") from None
    _depth_ok(data)
    try:
        return result_from_dict(data)
    except RecursionError:
        raise RunFileError("run file is nested too deeply") from None


# ---------------------------------------------------------------------------------------------- CSV

CSV_COLUMNS = (
    "time_s",
    "level",
    "delta_bytes",
    "total_bytes",
    "reserved_bytes",
    "phase",
    "module",
    "op",
    "category",
    "iteration",
)


def write_csv(r: RunResult, path: str | Path) -> None:
    """One row per event, in time order: tensor and allocator timelines, then device samples merged in
    (level ``process``: NVML process used memory or RSS; level ``device``: NVML device used)."""
    parts: list[tuple[str, np.ndarray]] = [("tensor", r.tensor.t), ("allocator", r.allocator.t)]
    dev = r.device
    parts.append(("process", dev.t))
    if dev.device_used is not None:
        parts.append(("device", dev.t))
    level_of = np.concatenate([np.full(len(t), k, np.int8) for k, (_, t) in enumerate(parts)])
    index_of = np.concatenate([np.arange(len(t)) for _, t in parts]) if parts else np.zeros(0, np.int64)
    times = np.concatenate([np.asarray(t, np.float64) for _, t in parts])
    order = np.argsort(times, kind="stable")
    names = [n for n, _ in parts]

    def s(i: int) -> str:
        return r.string(int(i))

    with atomic_open(Path(path), "wb") as fb:
        import io

        f = io.TextIOWrapper(fb, encoding="utf-8", newline="")
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for k in order:
            lv, i = names[level_of[k]], int(index_of[k])
            if lv in ("tensor", "allocator"):
                tl = r.tensor if lv == "tensor" else r.allocator
                res = "" if tl.reserved is None else int(tl.reserved[i])
                ph, cat = int(tl.phase[i]), int(tl.category[i])
                w.writerow(
                    (
                        f"{tl.t[i]:.9f}",
                        lv,
                        int(tl.delta[i]),
                        int(tl.total[i]),
                        res,
                        PHASES[ph] if 0 <= ph < len(PHASES) else "",
                        s(tl.module[i]),
                        s(tl.op[i]),
                        CATEGORIES[cat] if 0 <= cat < len(CATEGORIES) else "",
                        int(tl.iteration[i]),
                    )
                )
            else:
                arr = dev.process if lv == "process" else dev.device_used
                assert arr is not None
                v = int(arr[i])
                w.writerow((f"{dev.t[i]:.9f}", lv, "", v if v >= 0 else "", "", "", "", "", "", ""))
        f.flush()
        f.detach()
