"""The batch model: every event of a trace as ``a + b × batch``, fitted from two traces, and its cache codec.

A trace's event sequence does not depend on the batch size (same ops, same storages) and each storage's size
is affine in the batch, so two traces at batches N and N+1 with identical structure give every event's size
at any batch exactly. :func:`tensor_bound` is the smallest batch whose live tensors alone exceed a capacity.
``to_cached``/``from_cached`` turn a model into the disk cache's plain arrays and back.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from vggexplorer.core.predict import cache as predict_cache
from vggexplorer.core.predict.faketrace import FakeTrace, ModuleGeometry, Row


@dataclass
class BatchModel:
    """Every event's size as ``a + b × batch`` (exact when the structure does not depend on the batch).

    ``confirmed``: batches where a real trace gave exactly these rows (the two it was fitted from, then
    every trace that matched); ``verified`` once a third one did.
    """

    template: FakeTrace
    a: np.ndarray
    b: np.ndarray
    verified: bool = False
    broken: bool = False
    confirmed: set[int] = field(default_factory=set)

    def rows_at(self, batch: int) -> list[Row]:
        d = self.a + self.b * batch
        return [
            Row(r.t, int(x), r.sid, r.phase, r.op, r.module, r.iteration, r.category)
            for r, x in zip(self.template.rows, d.tolist(), strict=True)
        ]

    def matches(self, ft: FakeTrace) -> bool:
        rows = self.rows_at(ft.config.batch)
        return len(rows) == len(ft.rows) and all(
            _same(x, y) and x.delta == y.delta for x, y in zip(rows, ft.rows, strict=True)
        )


def _same(x: Row, y: Row) -> bool:
    return (x.sid, x.phase, x.op, x.module, x.iteration, x.category) == (
        y.sid,
        y.phase,
        y.op,
        y.module,
        y.iteration,
        y.category,
    )


def fit_batch_model(t1: FakeTrace, t2: FakeTrace) -> BatchModel | None:
    n1, n2 = t1.config.batch, t2.config.batch
    if (
        n1 == n2
        or len(t1.rows) != len(t2.rows)
        or t1.strings[: len(t2.strings)] != t2.strings[: len(t1.strings)]
    ):
        return None
    if not all(_same(x, y) for x, y in zip(t1.rows, t2.rows, strict=True)):
        return None
    d1 = np.fromiter((r.delta for r in t1.rows), np.int64, len(t1.rows))
    d2 = np.fromiter((r.delta for r in t2.rows), np.int64, len(t2.rows))
    diff = d2 - d1
    if np.any(diff % (n2 - n1)):
        return None
    b = diff // (n2 - n1)
    a = d1 - b * n1
    return BatchModel(t1, a, b, confirmed={n1, n2})


def model_key(config: Any) -> Any:
    return replace(config.trace_key(), batch=1)


def to_cached(bm: BatchModel) -> predict_cache.CachedModel:
    ft = bm.template
    rows = ft.rows
    cols: dict[str, Any] = {
        "a": bm.a,
        "b": bm.b,
        "delta": [r.delta for r in rows],
        "sid": [r.sid for r in rows],
        "phase": [r.phase for r in rows],
        "op": [r.op for r in rows],
        "module": [r.module for r in rows],
        "iteration": [r.iteration for r in rows],
        "category": [r.category for r in rows],
    }
    meta = {
        "strings": list(ft.strings),
        "spans": predict_cache.spans_to_json(ft.spans),
        "geometry": [
            [
                g.name,
                g.type,
                list(g.input_shape),
                list(g.output_shape),
                list(g.kernel),
                [list(p) for p in g.params],
            ]
            for g in ft.geometry.values()
        ],
        "layer_types": dict(ft.layer_types),
        "output_shape": None if ft.output_shape is None else list(ft.output_shape),
        "param_bytes": ft.param_bytes,
        "rules": dict(ft.rules),
        "trace_s": ft.trace_s,
        "confirmed": sorted(bm.confirmed),
    }
    return predict_cache.CachedModel(
        ft.config.batch,
        np.fromiter((r.t for r in rows), np.float64, len(rows)),
        {k: np.asarray(v, np.int64) for k, v in cols.items()},
        meta,
    )


def _value(v: Any) -> Any:
    return tuple(_value(x) for x in v) if isinstance(v, list) else v


def from_cached(config: Any, cm: predict_cache.CachedModel) -> BatchModel | None:
    m = cm.meta
    try:
        c = {k: v.tolist() for k, v in cm.columns.items()}
        rows = [
            Row(t, d, sid, ph, op, mod, it, cat)
            for t, d, sid, ph, op, mod, it, cat in zip(
                cm.t.tolist(),
                c["delta"],
                c["sid"],
                c["phase"],
                c["op"],
                c["module"],
                c["iteration"],
                c["category"],
                strict=True,
            )
        ]
        geometry = {
            str(g[0]): ModuleGeometry(
                str(g[0]),
                str(g[1]),
                tuple(int(x) for x in g[2]),
                tuple(int(x) for x in g[3]),
                (int(g[4][0]), int(g[4][1])),
                tuple((str(k), _value(v)) for k, v in g[5]),
            )
            for g in m["geometry"]
        }
        out = m["output_shape"]
        ft = FakeTrace(
            config=replace(config, batch=cm.template_batch),
            flavour="cuda",
            rows=rows,
            strings=[str(x) for x in m["strings"]],
            spans=predict_cache.spans_from_json(m["spans"]),
            geometry=geometry,
            layer_types={str(k): str(v) for k, v in m["layer_types"].items()},
            output_shape=None if out is None else tuple(int(x) for x in out),
            param_bytes=int(m["param_bytes"]),
            trace_s=float(m["trace_s"]),
            rules={str(k): int(v) for k, v in m["rules"].items()},
        )
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    return BatchModel(ft, cm.columns["a"], cm.columns["b"], verified=True, confirmed=cm.confirmed)


def tensor_bound(bm: BatchModel, capacity: int, limit: int) -> int:
    """The smallest batch whose live tensors alone exceed ``capacity`` at some event (``limit + 1`` if none).

    The allocator model holds at least the live tensors' bytes at every event and at most ``capacity``, so
    no batch from there on fits. Each event's live total is affine in the batch with a slope ≥ 0, so the
    peak is nondecreasing in the batch: bisection.
    """

    def peak(batch: int) -> int:
        return int(np.cumsum(bm.a + bm.b * batch).max(initial=0))

    if peak(limit) <= capacity:
        return limit + 1
    lo, hi = 0, limit  # peak(lo) <= capacity (or lo = 0), peak(hi) > capacity
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if peak(mid) > capacity:
            hi = mid
        else:
            lo = mid
    return hi
